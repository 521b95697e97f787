//! The server side of one WHEP subscription: a sendonly peer connection carrying one
//! publisher's audio and video back out (the SFU return path).
//!
//! The subscription owns its outgoing [`SfuTrack`]s; the publisher's read loops write into
//! them once the owner calls [`PeerSession::add_subscription`]. Keyframe requests (PLI/FIR) from
//! the subscriber go straight to the publisher (throttled there), as does one request when the
//! subscriber connects, so a new viewer does not wait for the next periodic keyframe.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use tokio::sync::mpsc;
use tracing::{debug, info, warn, Instrument, Span};
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;

use crate::codec::MediaKind;
use crate::session::{PeerSession, SessionShared};
use crate::sfu_track::{SfuTrack, SfuTrackStats};

const EVENT_CAPACITY: usize = 16;

/// What a subscription reports to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionEvent {
    /// ICE and DTLS are up; media flows.
    Connected,
    /// The connection failed (subscriber vanished) or was closed; sent once.
    Closed { reason: String },
}

/// Handle to one subscription. Cheap to clone.
#[derive(Clone)]
pub struct Subscription {
    shared: Arc<SubscriptionShared>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.shared.id)
            .field("source", &self.shared.source_id)
            .finish_non_exhaustive()
    }
}

pub(crate) struct SubscriptionShared {
    id: String,
    source_id: String,
    pc: Arc<RTCPeerConnection>,
    pub(crate) tracks: Vec<Arc<SfuTrack>>,
    /// The publisher, for keyframe requests. Weak: a subscription must not keep it alive.
    source: Weak<SessionShared>,
    events: mpsc::Sender<SubscriptionEvent>,
    closing: AtomicBool,
    closed_reported: AtomicBool,
    connected_reported: AtomicBool,
    /// Its place in the server's peer connection budget, given back on close.
    slot: crate::budget::HeldSlot,
    span: Span,
}

/// Counters of one subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionStats {
    pub subscription_id: String,
    pub audio: Option<SfuTrackStats>,
    pub video: Option<SfuTrackStats>,
}

impl Subscription {
    pub(crate) fn new(
        id: String,
        source: &PeerSession,
        pc: Arc<RTCPeerConnection>,
        tracks: Vec<Arc<SfuTrack>>,
        span: Span,
    ) -> (Self, mpsc::Receiver<SubscriptionEvent>) {
        let (events, receiver) = mpsc::channel(EVENT_CAPACITY);
        let shared = Arc::new(SubscriptionShared {
            id,
            source_id: source.id().to_owned(),
            pc,
            tracks,
            source: source.downgrade(),
            events,
            closing: AtomicBool::new(false),
            closed_reported: AtomicBool::new(false),
            connected_reported: AtomicBool::new(false),
            slot: Default::default(),
            span,
        });
        let weak = Arc::downgrade(&shared);
        shared
            .pc
            .on_peer_connection_state_change(Box::new(move |state| {
                if let Some(shared) = weak.upgrade() {
                    shared.on_state(state);
                }
                Box::pin(async {})
            }));
        (Self { shared }, receiver)
    }

    /// Random, URL-safe; part of the WHEP resource URL.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The session id of the publisher this subscription carries.
    pub fn source_id(&self) -> &str {
        &self.shared.source_id
    }

    pub(crate) fn tracks(&self) -> &[Arc<SfuTrack>] {
        &self.shared.tracks
    }

    /// Reads RTCP of a sender: needed for the interceptors (NACK responder, reports) and the
    /// place where the subscriber's keyframe requests arrive.
    pub(crate) fn spawn_rtcp_reader(&self, sender: Arc<RTCRtpSender>, kind: MediaKind) {
        let weak = Arc::downgrade(&self.shared);
        tokio::spawn(
            async move {
                let mut buf = vec![0u8; 1500];
                while let Ok((packets, _)) = sender.read(&mut buf).await {
                    if kind != MediaKind::Video {
                        continue;
                    }
                    let wants_keyframe = packets.iter().any(|p| {
                        let any = p.as_any();
                        any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
                    });
                    if wants_keyframe {
                        let Some(shared) = weak.upgrade() else { break };
                        debug!("subscriber asked for a keyframe");
                        shared.request_source_keyframe().await;
                    }
                }
                debug!("subscriber RTCP reader ended");
            }
            .instrument(self.shared.span.clone()),
        );
    }

    /// Closes the peer connection. Idempotent; the owner receives `Closed` once.
    pub async fn close(&self) {
        self.shared.close("closed by the server").await;
    }

    pub(crate) fn hold_slot(&self, slot: crate::budget::PcSlot) {
        self.shared.slot.hold(slot);
    }

    pub fn stats(&self) -> SubscriptionStats {
        let of = |kind| {
            self.shared
                .tracks
                .iter()
                .find(|t| t.kind() == kind)
                .map(|t| t.stats())
        };
        SubscriptionStats {
            subscription_id: self.shared.id.clone(),
            audio: of(MediaKind::Audio),
            video: of(MediaKind::Video),
        }
    }

    /// Closes the subscription unless it connects within `timeout`.
    pub(crate) fn spawn_connect_watchdog(&self, timeout: std::time::Duration) {
        let weak = Arc::downgrade(&self.shared);
        tokio::spawn(
            async move {
                tokio::time::sleep(timeout).await;
                let Some(shared) = weak.upgrade() else { return };
                if !shared.connected_reported.load(Ordering::SeqCst) {
                    let reason = format!(
                        "the subscriber did not connect (ICE/DTLS) within {}s",
                        timeout.as_secs()
                    );
                    warn!("{reason}");
                    shared.close(&reason).await;
                }
            }
            .instrument(self.shared.span.clone()),
        );
    }
}

impl SubscriptionShared {
    async fn request_source_keyframe(&self) {
        if let Some(source) = self.source.upgrade() {
            PeerSession::from_shared(source)
                .request_video_keyframe()
                .await;
        }
    }

    fn emit(&self, event: SubscriptionEvent) {
        if let Err(e) = self.events.try_send(event) {
            debug!(parent: &self.span, "subscription event dropped: {e}");
        }
    }

    fn report_closed(&self, reason: &str) {
        if !self.closed_reported.swap(true, Ordering::SeqCst) {
            info!(parent: &self.span, %reason, "subscription closed");
            self.emit(SubscriptionEvent::Closed {
                reason: reason.to_owned(),
            });
        }
    }

    async fn close(&self, reason: &str) {
        if self.closing.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.pc.close().await {
            debug!(parent: &self.span, "subscriber connection close: {e}");
        }
        self.slot.release();
        self.report_closed(reason);
    }

    fn on_state(self: &Arc<Self>, state: RTCPeerConnectionState) {
        debug!(parent: &self.span, %state, "subscriber connection state");
        match state {
            RTCPeerConnectionState::Connected
                if !self.connected_reported.swap(true, Ordering::SeqCst) =>
            {
                info!(parent: &self.span, "subscriber connected");
                self.emit(SubscriptionEvent::Connected);
                // Earlier keyframes went nowhere; the subscriber needs one to start.
                let shared = Arc::clone(self);
                tokio::spawn(async move { shared.request_source_keyframe().await });
            }
            RTCPeerConnectionState::Failed => {
                // Not from inside the callback: closing there deadlocks webrtc-rs.
                let shared = Arc::clone(self);
                tokio::spawn(async move {
                    shared
                        .close("the subscriber's connection failed (ICE/DTLS); it vanished or is unreachable")
                        .await;
                });
            }
            RTCPeerConnectionState::Closed if !self.closing.load(Ordering::SeqCst) => {
                self.closing.store(true, Ordering::SeqCst);
                self.report_closed("the subscriber's connection closed");
            }
            _ => {}
        }
    }
}

impl Drop for SubscriptionShared {
    fn drop(&mut self) {
        if !self.closing.swap(true, Ordering::SeqCst) {
            let pc = Arc::clone(&self.pc);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = pc.close().await;
                });
            }
        }
    }
}
