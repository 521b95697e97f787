//! costream-ingest: everything webrtc-rs.
//!
//! - Server side (WHIP ingest, RFC 9725): [`IngestEngine::accept_offer`] turns a publisher's
//!   offer into a [`PeerSession`] plus a complete (non-trickle) answer. Each remote track's read
//!   loop forwards RTP straight to its [`ForwardTarget`]s; control events arrive on a bounded
//!   channel of [`SessionEvent`]s.
//! - Client side: [`WhipPublisher`], a real sendonly WHIP publisher.
//!
//! Only VP8, H.264 (packetization-mode=1) and Opus are negotiated.

mod answer;
mod client;
mod codec;
mod engine;
mod error;
mod forward;
mod gather;
mod keyframe;
mod naming;
mod redact;
mod session;
mod whip;

pub use client::{PublishMedia, WhipPublisher};
pub use codec::{CodecName, MediaKind};
pub use engine::{IngestConfig, IngestEngine};
pub use error::IngestError;
pub use forward::{ForwardTarget, SessionStats, TrackStats};
pub use session::{PeerSession, SessionEvent, TrackInfo};

#[cfg(test)]
mod tests {
    /// The server shares these across tasks and axum state.
    #[test]
    fn public_handles_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<crate::IngestEngine>();
        assert_send_sync::<crate::PeerSession>();
        assert_send_sync::<crate::WhipPublisher>();
        assert_send_sync::<crate::IngestError>();
    }
}
