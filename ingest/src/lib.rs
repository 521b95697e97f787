//! costream-ingest: everything webrtc-rs.
//!
//! - Server side (WHIP ingest, RFC 9725): [`IngestEngine::accept_offer`] turns a publisher's
//!   offer into a [`PeerSession`] plus a complete (non-trickle) answer. Each remote track's read
//!   loop forwards RTP straight to its [`ForwardTarget`]s; control events arrive on a bounded
//!   channel of [`SessionEvent`]s.
//! - SFU return path (WHEP): [`IngestEngine::accept_subscription`] answers a recvonly offer
//!   with one publisher's tracks; [`PeerSession::add_subscription`] makes that publisher's read
//!   loops feed it (next to the mixer's UDP targets, never replacing them).
//! - Client side: [`WhipPublisher`], a real sendonly WHIP publisher, and [`WhepSubscriber`], a
//!   recvonly WHEP client that counts what it receives and can ask for keyframes.
//!
//! Only VP8, H.264 (packetization-mode=1) and Opus are negotiated.

mod answer;
mod budget;
mod client;
mod codec;
mod engine;
mod error;
mod forward;
mod gather;
mod keyframe;
mod naming;
mod reception;
mod redact;
mod rtp_keyframe;
mod session;
mod sfu_track;
mod subscriber;
mod subscription;
mod whip;

pub use budget::PeerConnectionBudget;
pub use client::{PublishMedia, WhipPublisher};
pub use codec::{CodecName, MediaKind};
pub use engine::{IceTimeouts, IngestConfig, IngestEngine};
pub use error::IngestError;
pub use forward::{ForwardTarget, SessionStats, TrackStats};
pub use reception::ReceptionStats;
pub use rtp_keyframe::starts_keyframe;
pub use session::{PeerSession, SessionEvent, TrackInfo};
pub use sfu_track::SfuTrackStats;
pub use subscriber::{KindStats, ReceivedStats, WhepSubscriber};
pub use subscription::{Subscription, SubscriptionEvent, SubscriptionStats};

/// What [`IngestEngine::accept_offer`] (or, with `subscribe`, [`IngestEngine::accept_subscription`])
/// does with an offer before any WebRTC state exists: parse it, check its sections and codecs,
/// parse it again as webrtc-rs's offer, and redact it for the trace log. Pure; the fuzz
/// harnesses (`costream::fuzzing`) feed it untrusted bytes.
#[doc(hidden)]
pub fn precheck_offer(sdp: &str, subscribe: bool) -> Result<(), IngestError> {
    let parsed = codec::parse_sdp(sdp)?;
    if subscribe {
        codec::check_subscribe_offer(&parsed)?;
    } else {
        codec::check_offer(&parsed)?;
    }
    webrtc::peer_connection::sdp::session_description::RTCSessionDescription::offer(sdp.to_owned())
        .map_err(|e| IngestError::InvalidSdp(e.to_string()))?;
    let _ = redact::redact_sdp(sdp);
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The server shares these across tasks and axum state.
    #[test]
    fn public_handles_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<crate::IngestEngine>();
        assert_send_sync::<crate::PeerSession>();
        assert_send_sync::<crate::WhipPublisher>();
        assert_send_sync::<crate::WhepSubscriber>();
        assert_send_sync::<crate::Subscription>();
        assert_send_sync::<crate::IngestError>();
    }
}
