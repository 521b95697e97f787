//! Logging: `tracing` to stderr (stdout of `costream mixer` is its event channel), as text or
//! as JSON lines (`--log-format json`). `RUST_LOG` overrides the default filter.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Environment variable of `--log-format`. Serve and workers set it to `json` for the mixers
/// they start, read their lines back and write them into their own log, in their own format
/// (`pool::process::child_log`).
pub const LOG_FORMAT_ENV: &str = "COSTREAM_LOG_FORMAT";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields.message`, the event's fields,
    /// and `spans` (the enclosing spans' fields: `room`, `participant`, `request_id`, …).
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // webrtc-rs logs every ICE/DTLS step at info and warns about each candidate it closes
        // on a normal hang-up; our own session logs say when and why a peer went away.
        EnvFilter::new("info,webrtc=warn,webrtc_ice=error,webrtc_dtls=warn,webrtc_srtp=error,webrtc_mdns=warn,webrtc::peer_connection::peer_connection_internal=error")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
    };
}
