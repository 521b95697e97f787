//! The one error type of this crate. Callers turn it into HTTP responses at their edge; the
//! messages are written for the person who sent the offer or runs the server.

use std::time::Duration;

#[non_exhaustive]
#[derive(thiserror::Error, Debug)]
pub enum IngestError {
    /// The offer (or a server's answer) is not SDP we can read.
    #[error("invalid SDP: {0}")]
    InvalidSdp(String),
    /// The offer has no audio or video section at all.
    #[error("the offer has no audio or video to receive (it needs an m=audio or m=video section)")]
    NoMedia,
    /// The offer has media, but in none of the codecs we accept.
    #[error("unsupported codec: {0}; costream accepts VP8 or H.264 (packetization-mode=1) video and Opus audio")]
    UnsupportedCodec(String),
    /// The engine configuration cannot work (bad port range, unparsable IP).
    #[error("invalid ingest configuration: {0}")]
    InvalidConfig(String),
    /// webrtc-rs refused an operation.
    #[error("WebRTC error: {0}")]
    Webrtc(String),
    /// A step with a deadline did not finish in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What we were waiting for, e.g. "ICE gathering".
        what: &'static str,
        after: Duration,
    },
    /// WHIP client: the server answered with an unexpected HTTP status.
    #[error("WHIP server answered {status}: {body}")]
    Http {
        status: u16,
        /// The response body (truncated), usually the server's explanation.
        body: String,
    },
    /// WHIP client: the server could not be reached or broke the protocol (no Location, ...).
    #[error("WHIP request failed: {0}")]
    Whip(String),
    /// The session or publisher is already closed.
    #[error("the session is closed")]
    Closed,
    /// The server already holds its maximum of peer connections.
    #[error("this server already holds its maximum of {max} WebRTC connections; retry later or use another server")]
    AtCapacity { max: usize },
}

impl From<webrtc::Error> for IngestError {
    fn from(e: webrtc::Error) -> Self {
        IngestError::Webrtc(e.to_string())
    }
}
