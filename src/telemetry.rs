//! Logging: `tracing` to stderr (stdout of `costream mixer` is its event channel).
//! `RUST_LOG` overrides the default filter.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // webrtc-rs logs every ICE/DTLS step at info and warns about each candidate it closes
        // on a normal hang-up; our own session logs say when and why a peer went away.
        EnvFilter::new("info,webrtc=warn,webrtc_ice=error,webrtc_dtls=warn,webrtc_srtp=error,webrtc_mdns=warn,webrtc::peer_connection::peer_connection_internal=error")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
