//! One publisher's peer connection: its remote tracks, their read loops, keyframe requests and
//! lifecycle events.
//!
//! Ownership: `PeerSession` handles share one `SessionShared`, which owns the peer connection.
//! webrtc-rs callbacks only hold a `Weak` to it — a strong reference there would form a cycle
//! (connection → callback → session → connection) and leak every session.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn, Instrument, Span};
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtcp::sender_report::SenderReport;
use webrtc::rtp_transceiver::rtp_codec::{RTCRtpCodecCapability, RTPCodecType};
use webrtc::rtp_transceiver::rtp_receiver::RTCRtpReceiver;
use webrtc::rtp_transceiver::RTCRtpTransceiver;
use webrtc::track::track_remote::TrackRemote;
use webrtc::util::Marshal;

use crate::codec::{CodecName, MediaKind};
use crate::forward::{ForwardSockets, ForwardTarget, SessionStats, TrackForwarder};
use crate::naming::choose_track_id;
use crate::sfu_track::SfuTrack;
use crate::subscription::Subscription;

/// The subscriptions' outgoing tracks of one media kind, read once per packet.
type SubscriberSinks = Arc<ArcSwap<Vec<Arc<SfuTrack>>>>;

/// Capacity of a session's event channel. A session produces a handful of events in its life
/// (connected, one start/end per track, closed), so this only fills if nobody reads.
const EVENT_CAPACITY: usize = 64;
/// Largest RTP packet we read; webrtc-rs' default receive MTU.
const RECEIVE_MTU: usize = 1460;
/// After this many consecutive read errors a track is considered gone.
const MAX_CONSECUTIVE_READ_ERRORS: u32 = 16;

/// What a session reports to its owner. Control events only; media never goes through here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A remote track delivered its first RTP packet.
    TrackStarted(TrackInfo),
    /// A remote track stopped (read loop ended).
    TrackEnded { track_id: String },
    /// ICE and DTLS are up.
    Connected,
    /// The peer connection failed or was closed; sent once. `TrackEnded` of its tracks may
    /// arrive just before or after it.
    Closed { reason: String },
}

/// A remote track, as negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    pub track_id: String,
    pub kind: MediaKind,
    pub codec: CodecName,
    pub payload_type: u8,
    pub clock_rate: u32,
    pub ssrc: u32,
}

/// Handle to one publisher's session. Cheap to clone; all clones control the same session.
#[derive(Clone)]
pub struct PeerSession {
    shared: Arc<SessionShared>,
}

impl std::fmt::Debug for PeerSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerSession")
            .field("id", &self.shared.id)
            .finish_non_exhaustive()
    }
}

pub(crate) struct SessionShared {
    /// Random, URL-safe.
    id: String,
    pc: Arc<RTCPeerConnection>,
    /// Forwarders by track id; created by the first track start or `set_forward_targets`.
    /// Control path only (never locked per packet).
    tracks: Mutex<HashMap<String, Arc<TrackForwarder>>>,
    sockets: Arc<ForwardSockets>,
    events: mpsc::Sender<SessionEvent>,
    /// Set when close begins; makes close idempotent and quiets the state callback.
    closing: AtomicBool,
    /// Guards the single `Closed` event.
    closed_reported: AtomicBool,
    connected_reported: AtomicBool,
    /// Media kinds the publisher's offer sends (set once negotiation succeeded).
    published: OnceLock<Vec<MediaKind>>,
    /// Subscriptions by id (control path), and the per-kind sink lists built from them.
    subscriptions: Mutex<Vec<Subscription>>,
    audio_sinks: SubscriberSinks,
    video_sinks: SubscriberSinks,
    /// Its place in the server's peer connection budget, given back on close.
    slot: crate::budget::HeldSlot,
    span: Span,
}

impl PeerSession {
    /// Wraps a fresh peer connection (before any SDP is applied) and installs its callbacks.
    /// `span` (carrying the session id) parents every log line of the session.
    pub(crate) fn attach(
        id: String,
        pc: Arc<RTCPeerConnection>,
        sockets: Arc<ForwardSockets>,
        span: Span,
    ) -> (Self, mpsc::Receiver<SessionEvent>) {
        let (events, receiver) = mpsc::channel(EVENT_CAPACITY);
        let shared = Arc::new(SessionShared {
            id,
            pc,
            tracks: Mutex::new(HashMap::new()),
            sockets,
            events,
            closing: AtomicBool::new(false),
            closed_reported: AtomicBool::new(false),
            connected_reported: AtomicBool::new(false),
            published: OnceLock::new(),
            subscriptions: Mutex::new(Vec::new()),
            audio_sinks: Arc::default(),
            video_sinks: Arc::default(),
            slot: Default::default(),
            span,
        });
        install_callbacks(&shared);
        (Self { shared }, receiver)
    }

    pub fn id(&self) -> &str {
        &self.shared.id
    }

    pub(crate) fn from_shared(shared: Arc<SessionShared>) -> Self {
        Self { shared }
    }

    pub(crate) fn downgrade(&self) -> Weak<SessionShared> {
        Arc::downgrade(&self.shared)
    }

    pub(crate) fn set_published_kinds(&self, kinds: Vec<MediaKind>) {
        let _ = self.shared.published.set(kinds);
    }

    /// Media kinds this publisher negotiated to send (audio, video or both).
    pub fn published_kinds(&self) -> Vec<MediaKind> {
        self.shared.published.get().cloned().unwrap_or_default()
    }

    /// Starts forwarding this publisher's media to `subscription` (created for this session
    /// with `IngestEngine::accept_subscription`). Independent of `set_forward_targets`: the
    /// mixer's targets and the subscriptions never replace each other.
    pub fn add_subscription(&self, subscription: &Subscription) {
        let mut list = self.shared.lock_subscriptions();
        if list.iter().any(|s| s.id() == subscription.id()) {
            return;
        }
        list.push(subscription.clone());
        self.shared.rebuild_sinks(&list);
        debug!(parent: &self.shared.span, subscription = %subscription.id(), "subscription added");
    }

    /// Stops forwarding to a subscription (it is not closed here). Unknown ids are ignored.
    pub fn remove_subscription(&self, subscription_id: &str) {
        let mut list = self.shared.lock_subscriptions();
        let before = list.len();
        list.retain(|s| s.id() != subscription_id);
        if list.len() != before {
            self.shared.rebuild_sinks(&list);
            debug!(parent: &self.shared.span, subscription = %subscription_id, "subscription removed");
        }
    }

    /// Number of subscriptions currently fed by this session.
    pub fn subscription_count(&self) -> usize {
        self.shared.lock_subscriptions().len()
    }

    /// Asks for a keyframe on every live video track (throttled per track).
    pub async fn request_video_keyframe(&self) {
        let video: Vec<String> = self
            .shared
            .lock_tracks()
            .values()
            .filter(|t| t.kind() == Some(MediaKind::Video) && t.is_live())
            .map(|t| t.track_id.clone())
            .collect();
        for track_id in video {
            self.request_keyframe(&track_id).await;
        }
    }

    /// Replaces where this track's RTP goes (UDP). Takes effect from the next packet.
    pub fn set_forward_targets(&self, track_id: &str, targets: Vec<SocketAddr>) {
        self.set_forward_sinks(
            track_id,
            targets.into_iter().map(ForwardTarget::Udp).collect(),
        );
    }

    /// Replaces where this track's RTP goes, any kind of target. Unknown track ids are kept
    /// and apply when a track with that id starts.
    pub fn set_forward_sinks(&self, track_id: &str, targets: Vec<ForwardTarget>) {
        let _span = self.shared.span.enter();
        debug!(track = %track_id, ?targets, "forward targets set");
        self.shared.forwarder(track_id).set_targets(targets);
    }

    /// Asks the publisher for a keyframe (RTCP PLI) on this video track. Throttled per track;
    /// audio tracks and unknown ids are ignored.
    pub async fn request_keyframe(&self, track_id: &str) {
        let shared = &self.shared;
        let Some(forwarder) = shared.existing_forwarder(track_id) else {
            debug!(parent: &shared.span, track = %track_id, "keyframe request for an unknown track");
            return;
        };
        if forwarder.kind() != Some(MediaKind::Video) || !forwarder.is_live() {
            return;
        }
        if !forwarder.allow_keyframe_request(Instant::now()) {
            debug!(parent: &shared.span, track = %track_id, "keyframe request throttled");
            return;
        }
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: forwarder.ssrc(),
        };
        match shared.pc.write_rtcp(&[Box::new(pli)]).await {
            Ok(_) => {
                forwarder.count_keyframe_request();
                debug!(parent: &shared.span, track = %track_id, "PLI sent");
            }
            Err(e) => debug!(parent: &shared.span, track = %track_id, "PLI not sent: {e}"),
        }
    }

    /// Closes the peer connection. Idempotent; the owner receives `Closed` once.
    pub async fn close(&self) {
        self.shared.close("closed by the server").await;
    }

    pub(crate) fn hold_slot(&self, slot: crate::budget::PcSlot) {
        self.shared.slot.hold(slot);
    }

    /// Counters of every track of this session.
    pub fn stats(&self) -> SessionStats {
        let mut tracks: Vec<_> = self
            .shared
            .lock_tracks()
            .values()
            .map(|t| t.stats())
            .collect();
        tracks.sort_by(|a, b| a.track_id.cmp(&b.track_id));
        SessionStats {
            session_id: self.shared.id.clone(),
            tracks,
        }
    }

    /// Closes the session unless ICE+DTLS come up within `timeout`: a WHIP POST whose client
    /// never connects must not hold ports and tasks forever.
    pub(crate) fn spawn_connect_watchdog(&self, timeout: Duration) {
        let weak = Arc::downgrade(&self.shared);
        let span = self.shared.span.clone();
        tokio::spawn(
            async move {
                // Sleeping with only a Weak is cheap and keeps nothing alive.
                tokio::time::sleep(timeout).await;
                let Some(shared) = weak.upgrade() else { return };
                if !shared.connected_reported.load(Ordering::SeqCst) {
                    let reason = format!(
                        "the publisher did not connect (ICE/DTLS) within {}s",
                        timeout.as_secs()
                    );
                    warn!("{reason}");
                    shared.close(&reason).await;
                }
            }
            .instrument(span),
        );
    }
}

impl SessionShared {
    fn lock_subscriptions(&self) -> std::sync::MutexGuard<'_, Vec<Subscription>> {
        self.subscriptions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn rebuild_sinks(&self, subscriptions: &[Subscription]) {
        for (kind, sinks) in [
            (MediaKind::Audio, &self.audio_sinks),
            (MediaKind::Video, &self.video_sinks),
        ] {
            let tracks: Vec<Arc<SfuTrack>> = subscriptions
                .iter()
                .flat_map(|s| s.tracks().iter())
                .filter(|t| t.kind() == kind)
                .cloned()
                .collect();
            sinks.store(Arc::new(tracks));
        }
    }

    fn lock_tracks(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<TrackForwarder>>> {
        // A panic elsewhere while holding the lock leaves the map consistent (single inserts).
        self.tracks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn forwarder(&self, track_id: &str) -> Arc<TrackForwarder> {
        self.lock_tracks()
            .entry(track_id.to_owned())
            .or_insert_with(|| Arc::new(TrackForwarder::new(track_id.to_owned())))
            .clone()
    }

    fn existing_forwarder(&self, track_id: &str) -> Option<Arc<TrackForwarder>> {
        self.lock_tracks().get(track_id).cloned()
    }

    fn emit(&self, event: SessionEvent) {
        if let Err(e) = self.events.try_send(event) {
            // Full means the owner stopped reading; closed means it is gone. Either way the
            // event has no one to inform, and blocking a webrtc callback would be worse.
            debug!(parent: &self.span, "session event dropped: {e}");
        }
    }

    fn report_closed(&self, reason: &str) {
        if !self.closed_reported.swap(true, Ordering::SeqCst) {
            info!(parent: &self.span, %reason, "session closed");
            self.emit(SessionEvent::Closed {
                reason: reason.to_owned(),
            });
        }
    }

    async fn close(&self, reason: &str) {
        if self.closing.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.pc.close().await {
            debug!(parent: &self.span, "peer connection close: {e}");
        }
        self.slot.release();
        self.report_closed(reason);
    }

    fn report_connected(&self) {
        if !self.connected_reported.swap(true, Ordering::SeqCst) {
            info!(parent: &self.span, "connected");
            self.emit(SessionEvent::Connected);
        }
    }

    fn on_state(self: &Arc<Self>, state: RTCPeerConnectionState) {
        debug!(parent: &self.span, %state, "peer connection state");
        match state {
            RTCPeerConnectionState::Connected => self.report_connected(),
            RTCPeerConnectionState::Failed => {
                // Closing from inside the state callback would deadlock on webrtc-rs' handler
                // lock, so it happens on its own task.
                let shared = Arc::clone(self);
                tokio::spawn(async move {
                    shared
                        .close("the connection failed (ICE/DTLS); the publisher vanished or is unreachable")
                        .await;
                });
            }
            RTCPeerConnectionState::Closed if !self.closing.load(Ordering::SeqCst) => {
                self.closing.store(true, Ordering::SeqCst);
                self.report_closed("the peer connection closed");
            }
            RTCPeerConnectionState::Disconnected => {
                warn!(parent: &self.span, "disconnected; waiting for ICE to recover or fail");
            }
            _ => {}
        }
    }

    fn on_track(
        self: &Arc<Self>,
        track: Arc<TrackRemote>,
        receiver: Arc<RTCRtpReceiver>,
        transceiver: Arc<RTCRtpTransceiver>,
    ) {
        let kind = match track.kind() {
            RTPCodecType::Audio => MediaKind::Audio,
            RTPCodecType::Video => MediaKind::Video,
            RTPCodecType::Unspecified => return,
        };
        let params = track.codec();
        let Some(codec) = CodecName::from_mime(&params.capability.mime_type) else {
            // Cannot happen with our MediaEngine; reading is pointless without a codec.
            warn!(parent: &self.span, mime = %params.capability.mime_type, "track with an unexpected codec ignored");
            return;
        };
        let mid = transceiver.mid();
        let forwarder = {
            let mut tracks = self.lock_tracks();
            let track_id = choose_track_id(&track.id(), mid.as_deref(), track.rid(), kind, |c| {
                tracks.get(c).is_some_and(|t| t.kind().is_some())
            });
            tracks
                .entry(track_id.clone())
                .or_insert_with(|| Arc::new(TrackForwarder::new(track_id)))
                .clone()
        };
        forwarder.start(kind, codec, track.ssrc(), params.capability.clock_rate);
        spawn_sender_report_reader(receiver, Arc::clone(&forwarder), track.ssrc());
        let info = TrackInfo {
            track_id: forwarder.track_id.clone(),
            kind,
            codec,
            payload_type: track.payload_type(),
            clock_rate: params.capability.clock_rate,
            ssrc: track.ssrc(),
        };
        let span = info_span!(parent: &self.span, "track", track = %info.track_id, ?codec);
        span.in_scope(|| {
            info!(
                payload_type = info.payload_type,
                ssrc = info.ssrc,
                "track started"
            )
        });
        self.emit(SessionEvent::TrackStarted(info));
        let sinks = match kind {
            MediaKind::Audio => Arc::clone(&self.audio_sinks),
            MediaKind::Video => Arc::clone(&self.video_sinks),
        };
        tokio::spawn(
            read_loop(
                track,
                forwarder,
                sinks,
                params.capability,
                Arc::clone(&self.sockets),
                self.events.clone(),
                Arc::downgrade(self),
            )
            .instrument(span),
        );
    }
}

impl Drop for SessionShared {
    /// An owner that forgets to call `close` must not leak the connection's sockets and tasks.
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

fn install_callbacks(shared: &Arc<SessionShared>) {
    let weak: Weak<SessionShared> = Arc::downgrade(shared);
    shared
        .pc
        .on_peer_connection_state_change(Box::new(move |state| {
            if let Some(shared) = weak.upgrade() {
                shared.on_state(state);
            }
            Box::pin(async {})
        }));
    let weak: Weak<SessionShared> = Arc::downgrade(shared);
    shared
        .pc
        .on_track(Box::new(move |track, receiver, transceiver| {
            if let Some(shared) = weak.upgrade() {
                shared.on_track(track, receiver, transceiver);
            }
            Box::pin(async {})
        }));
}

/// Reads the receiver's RTCP for the publisher's sender reports, which map the track's RTP
/// clock onto the publisher's wall clock (for the A/V offset, see `reception`). Reading also
/// keeps the receiver's RTCP buffer drained. Ends with the receiver.
fn spawn_sender_report_reader(
    receiver: Arc<RTCRtpReceiver>,
    forwarder: Arc<TrackForwarder>,
    ssrc: u32,
) {
    tokio::spawn(
        async move {
            while let Ok((packets, _)) = receiver.read_rtcp().await {
                for packet in packets {
                    if let Some(report) = packet.as_any().downcast_ref::<SenderReport>() {
                        if report.ssrc == ssrc {
                            forwarder.on_sender_report(report.ntp_time, report.rtp_time);
                        }
                    }
                }
            }
            debug!("RTCP reader ended");
        }
        .in_current_span(),
    );
}

/// The media path: read, re-marshal into a reused buffer, fan out. Ends when the track or the
/// connection ends.
async fn read_loop(
    track: Arc<TrackRemote>,
    forwarder: Arc<TrackForwarder>,
    subscribers: SubscriberSinks,
    codec: RTCRtpCodecCapability,
    sockets: Arc<ForwardSockets>,
    events: mpsc::Sender<SessionEvent>,
    session: Weak<SessionShared>,
) {
    let mut read_buf = vec![0u8; RECEIVE_MTU];
    let mut raw = vec![0u8; RECEIVE_MTU + 64];
    let mut consecutive_errors = 0;
    loop {
        match track.read(&mut read_buf).await {
            Ok((packet, _attributes)) => {
                let arrived = Instant::now();
                consecutive_errors = 0;
                match packet.marshal_to(&mut raw) {
                    Ok(len) => {
                        let subscribers = subscribers.load();
                        forwarder
                            .forward(
                                &sockets,
                                &raw[..len],
                                &packet,
                                &subscribers,
                                &codec,
                                arrived,
                            )
                            .await
                    }
                    Err(_) => forwarder.count_dropped(),
                }
            }
            Err(e) => {
                let closing = session
                    .upgrade()
                    .is_none_or(|s| s.closing.load(Ordering::SeqCst));
                consecutive_errors += 1;
                if closing || consecutive_errors >= MAX_CONSECUTIVE_READ_ERRORS {
                    debug!("read loop ends: {e}");
                    break;
                }
                forwarder.count_dropped();
                debug!("read error (continuing): {e}");
            }
        }
    }
    forwarder.end();
    info!("track ended");
    let _ = events.try_send(SessionEvent::TrackEnded {
        track_id: forwarder.track_id.clone(),
    });
}
