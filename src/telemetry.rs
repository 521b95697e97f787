//! Logging: `tracing` to stderr (stdout of `costream mixer` is its event channel).
//! `RUST_LOG` overrides the default filter.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // webrtc-rs logs every ICE/DTLS step at info; keep our own logs readable.
        EnvFilter::new("info,webrtc=warn,webrtc_ice=warn,webrtc_dtls=warn,webrtc_srtp=warn,webrtc_mdns=warn,tower_http=info")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
