//! How the API talks to a room: the handle that sends the room actor its commands and reads
//! its status, notices and guest list. A child module of `actor` (it builds the actor).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::*;

/// The room is gone (ended while the request was in flight).
#[derive(Debug, thiserror::Error)]
#[error("the room has ended")]
pub struct RoomGone;

/// How the API talks to a room. Cheap to share (`Arc<RoomHandle>`).
pub struct RoomHandle {
    /// Public room id.
    pub id: String,
    /// Host and guest bearer tokens.
    pub tokens: RoomTokens,
    /// Who the host removed, and whether the shared guest link still works.
    pub guests: Arc<std::sync::Mutex<GuestList>>,
    /// Viewers asking to join, and the host's settings for that (in memory: requests last
    /// two minutes).
    pub join_requests: std::sync::Mutex<crate::room::join_requests::JoinRequests>,
    /// Bounded: a flood of requests waits instead of growing memory.
    commands: mpsc::Sender<RoomCommand>,
    /// Ends the actor: stops the mixer and closes every session.
    cancel: CancellationToken,
    /// Set before `cancel` when the mixer is to outlive serve (see [`RoomHandle::detach`]).
    detach_on_end: Arc<std::sync::atomic::AtomicBool>,
    /// The latest status, republished by the actor on every change (closed when it ends).
    status: watch::Receiver<Arc<RoomStatus>>,
    /// Notices for event streams; bounded, a lagging receiver skips.
    notices: broadcast::Sender<RoomNotice>,
    /// Event streams open now (see [`RoomHandle::open_event_stream`]).
    event_streams: Arc<std::sync::atomic::AtomicUsize>,
}

/// One open event stream of a room; dropping it (the stream ended) frees its place.
pub struct EventStreamSlot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for EventStreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl RoomHandle {
    pub fn spawn(
        id: String,
        tokens: RoomTokens,
        settings: RoomSettings,
        runtime: RoomRuntime,
        durable: Durable,
    ) -> Self {
        let (commands, command_rx) = mpsc::channel(64);
        let guests = Arc::new(std::sync::Mutex::new(durable.guests));
        let cancel = CancellationToken::new();
        let detach_on_end = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (session_tx, session_rx) = mpsc::channel(256);
        let (mixer_tx, mixer_rx) = mpsc::channel(256);
        let state = RoomState::new(settings);
        let runtime_recordings = runtime.recordings.clone();
        let (status_tx, status) =
            watch::channel(Arc::new(RoomStatus::of(&id, &state, Instant::now())));
        let (notices, _) = broadcast::channel(NOTICE_BUFFER);
        let (subscription_tx, subscription_rx) = mpsc::channel(256);
        let actor = RoomActor {
            id: id.clone(),
            state,
            sessions: HashMap::new(),
            subscriptions: HashMap::new(),
            subscriber_identities: HashMap::new(),
            subscription_tx,
            mixer: None,
            outgoing: None,
            mixer_identity: None,
            refusal: None,
            runtime,
            session_tx,
            mixer_tx,
            meters: OutputMeters::default(),
            quality: QualityTracker::default(),
            status_tx,
            notices: notices.clone(),
            store: durable.store,
            guests: guests.clone(),
            wants_live: durable.live,
            created_at: durable.created_at,
            recorder: super::Recorder::new(&id, runtime_recordings),
            resume_recording: durable.recording,
            detach_on_end: detach_on_end.clone(),
        };
        let save_at_start = !durable.stored;
        // A root span: the actor outlives the HTTP request that created the room.
        let span = tracing::info_span!(parent: None, "room", room = %id);
        tokio::spawn(
            actor
                .run(
                    command_rx,
                    session_rx,
                    mixer_rx,
                    subscription_rx,
                    cancel.clone(),
                    save_at_start,
                )
                .instrument(span),
        );
        Self {
            id,
            tokens,
            guests,
            join_requests: std::sync::Mutex::default(),
            commands,
            cancel,
            detach_on_end,
            status,
            notices,
            event_streams: Arc::default(),
        }
    }

    /// The room's latest status, without asking the actor (scrapes, webhooks).
    pub fn latest_status(&self) -> Arc<RoomStatus> {
        self.status.borrow().clone()
    }

    /// A place for one more event stream, unless `max` are open already.
    pub fn open_event_stream(&self, max: usize) -> Option<EventStreamSlot> {
        use std::sync::atomic::Ordering::SeqCst;
        self.event_streams
            .fetch_update(SeqCst, SeqCst, |open| (open < max).then_some(open + 1))
            .ok()
            .map(|_| EventStreamSlot(self.event_streams.clone()))
    }

    /// The room's live status (current value first, then every change) and its notices.
    /// The status channel closes when the room ends.
    pub fn watch(
        &self,
    ) -> (
        watch::Receiver<Arc<RoomStatus>>,
        broadcast::Receiver<RoomNotice>,
    ) {
        (self.status.clone(), self.notices.subscribe())
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> RoomCommand,
    ) -> Result<T, RoomGone> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| RoomGone)?;
        rx.await.map_err(|_| RoomGone)
    }

    pub async fn join(
        &self,
        session: PeerSession,
        events: mpsc::Receiver<SessionEvent>,
        role: Role,
        identity: String,
        display_name: String,
        requested_at: Instant,
    ) -> Result<Result<ParticipantId, RoomError>, RoomGone> {
        self.ask(|reply| RoomCommand::Join {
            session,
            events,
            role,
            identity,
            display_name,
            requested_at,
            reply,
        })
        .await
    }

    pub async fn leave(&self, participant_id: &str) -> Result<Result<(), RoomError>, RoomGone> {
        let participant_id = participant_id.to_string();
        self.ask(|reply| RoomCommand::Leave {
            participant_id,
            removed: false,
            reply,
        })
        .await
    }

    /// The host removes a participant: their session is closed and they are told why.
    pub async fn remove(&self, participant_id: &str) -> Result<Result<(), RoomError>, RoomGone> {
        let participant_id = participant_id.to_string();
        self.ask(|reply| RoomCommand::Leave {
            participant_id,
            removed: true,
            reply,
        })
        .await
    }

    pub async fn go_live(&self) -> Result<Result<RoomStatus, GoLiveError>, RoomGone> {
        self.ask(|reply| RoomCommand::GoLive { reply }).await
    }

    pub async fn stop_live(&self) -> Result<RoomStatus, RoomGone> {
        self.ask(|reply| RoomCommand::StopLive { reply }).await
    }

    pub async fn set_audio(
        &self,
        participant_id: &str,
        gain: Option<f64>,
        muted: Option<bool>,
    ) -> Result<Result<RoomStatus, RoomError>, RoomGone> {
        let participant_id = participant_id.to_string();
        self.ask(|reply| RoomCommand::SetAudio {
            participant_id,
            gain,
            muted,
            reply,
        })
        .await
    }

    pub async fn set_layout(
        &self,
        layout: LayoutSpec,
    ) -> Result<Result<RoomStatus, RoomError>, RoomGone> {
        self.ask(|reply| RoomCommand::SetLayout { layout, reply })
            .await
    }

    /// Adds an RTMP destination (URL already validated); answers the new output as the status
    /// shows it (stream key redacted).
    pub async fn add_output(
        &self,
        url: String,
    ) -> Result<Result<OutputStatusView, RoomError>, RoomGone> {
        self.ask(|reply| RoomCommand::AddOutput { url, reply })
            .await
    }

    pub async fn remove_output(&self, output_id: &str) -> Result<Result<(), RoomError>, RoomGone> {
        let output_id = output_id.to_string();
        self.ask(|reply| RoomCommand::RemoveOutput { output_id, reply })
            .await
    }

    pub async fn set_look(&self, look: Look) -> Result<Result<RoomStatus, RoomError>, RoomGone> {
        self.ask(|reply| RoomCommand::SetLook { look, reply }).await
    }

    /// Participants and whether it is live, from the latest published status (no round trip
    /// to the actor).
    pub fn occupancy(&self) -> crate::room::lifetime::Occupancy {
        let status = self.status.borrow();
        crate::room::lifetime::Occupancy {
            participants: status.participants.len(),
            live: status.broadcast == "live",
        }
    }

    /// Starts recording the program (live, or going live).
    pub async fn start_recording(&self) -> Result<Result<RecordingStatus, RoomError>, RoomGone> {
        self.ask(|reply| RoomCommand::StartRecording { reply })
            .await
    }

    /// Stops the recording in progress; the broadcast goes on.
    pub async fn stop_recording(&self) -> Result<Result<(), RoomError>, RoomGone> {
        self.ask(|reply| RoomCommand::StopRecording { reply }).await
    }

    /// Where the room's recordings are, and which parts are being written.
    pub async fn recordings(&self) -> Result<RecordingsAccess, RoomGone> {
        self.ask(|reply| RoomCommand::Recordings { reply }).await
    }

    pub async fn status(&self) -> Result<RoomStatus, RoomGone> {
        self.ask(|reply| RoomCommand::Status { reply }).await
    }

    /// The WebRTC session of a participant (None if unknown).
    pub async fn session(&self, participant_id: &str) -> Result<Option<PeerSession>, RoomGone> {
        let participant_id = participant_id.to_string();
        self.ask(|reply| RoomCommand::Session {
            participant_id,
            reply,
        })
        .await
    }

    /// Registers a negotiated subscription to `source`; the room starts feeding it. On error
    /// (e.g. the source left meanwhile) the subscription is closed.
    pub async fn subscribe(
        &self,
        subscription: Subscription,
        events: mpsc::Receiver<SubscriptionEvent>,
        source: &str,
        identity: String,
    ) -> Result<Result<(), RoomError>, RoomGone> {
        let source = source.to_string();
        let closer = subscription.clone();
        let result = self
            .ask(|reply| RoomCommand::Subscribe {
                subscription,
                events,
                source,
                identity,
                reply,
            })
            .await;
        if !matches!(result, Ok(Ok(()))) {
            closer.close().await;
        }
        result
    }

    pub async fn unsubscribe(
        &self,
        subscription_id: &str,
    ) -> Result<Result<(), RoomError>, RoomGone> {
        let subscription_id = subscription_id.to_string();
        self.ask(|reply| RoomCommand::Unsubscribe {
            subscription_id,
            reply,
        })
        .await
    }

    /// Closes the WHEP subscriptions `identity` opened; how many there were.
    pub async fn unsubscribe_identity(&self, identity: &str) -> Result<usize, RoomGone> {
        let identity = identity.to_string();
        self.ask(|reply| RoomCommand::UnsubscribeIdentity { identity, reply })
            .await
    }

    /// Tells every event stream of the room (those it concerns, see [`RoomNotice::host_only`]).
    pub fn notify(&self, notice: RoomNotice) {
        let _ = self.notices.send(notice);
    }

    /// Tells the room its guest list changed (a ban, an unban, the shared link revoked), so it
    /// saves its record.
    pub async fn guests_changed(&self) -> Result<(), RoomGone> {
        self.ask(|reply| RoomCommand::GuestsChanged { reply }).await
    }

    /// Ends the room: the mixer stops and every participant is disconnected.
    pub fn end(&self) {
        self.cancel.cancel();
    }

    /// Ends the room in this process only, as serve shuts down with the room stored: every
    /// participant is disconnected (they reconnect to the next serve), but a mixer on a fleet
    /// worker keeps pushing for the next serve to take over (see `MixerLink::detach`).
    pub fn detach(&self) {
        self.detach_on_end
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.cancel.cancel();
    }
}

impl Drop for RoomHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
