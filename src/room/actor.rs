//! The room actor: owns a [`RoomState`], the participants' WebRTC sessions and the room's mixer
//! process, and turns effects into IO. Only control goes through here; RTP flows from each
//! track's read loop straight to its UDP targets (see `costream_ingest`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use costream_ingest::{PeerSession, SessionEvent, Subscription, SubscriptionEvent};
use costream_mixer::control::{Event, LayoutSpec, Look};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::durable::Durable;
use super::guest_list::GuestList;
use super::media::track_desc;
use super::meter::OutputMeters;
use super::quality::QualityTracker;
use super::recorder::{Recorder, RecordingStatus};
use super::state::{
    Broadcast, Effect, Input, ParticipantId, RoomError, RoomSettings, RoomState, SubscriptionId,
};
use super::status::{OutputStatusView, RoomStatus};
use super::tokens::{Role, RoomTokens};
use crate::pool::{MixerBackend, MixerLink, MixerReport, Refusal};

/// Commands from the API to one room.
enum RoomCommand {
    Join {
        session: PeerSession,
        events: mpsc::Receiver<SessionEvent>,
        role: Role,
        identity: String,
        display_name: String,
        /// When the WHIP request reached serve (join → visible starts there).
        requested_at: Instant,
        reply: oneshot::Sender<Result<ParticipantId, RoomError>>,
    },
    Leave {
        participant_id: ParticipantId,
        /// The host removed them (they are told so), rather than they left.
        removed: bool,
        reply: oneshot::Sender<Result<(), RoomError>>,
    },
    GoLive {
        reply: oneshot::Sender<Result<RoomStatus, GoLiveError>>,
    },
    StopLive {
        reply: oneshot::Sender<RoomStatus>,
    },
    SetLayout {
        layout: LayoutSpec,
        reply: oneshot::Sender<Result<RoomStatus, RoomError>>,
    },
    SetLook {
        look: Look,
        reply: oneshot::Sender<Result<RoomStatus, RoomError>>,
    },
    SetAudio {
        participant_id: ParticipantId,
        gain: Option<f64>,
        muted: Option<bool>,
        reply: oneshot::Sender<Result<RoomStatus, RoomError>>,
    },
    Status {
        reply: oneshot::Sender<RoomStatus>,
    },
    AddOutput {
        url: String,
        reply: oneshot::Sender<Result<OutputStatusView, RoomError>>,
    },
    RemoveOutput {
        output_id: String,
        reply: oneshot::Sender<Result<(), RoomError>>,
    },
    /// The session of a participant, to negotiate a subscription to it outside the actor.
    Session {
        participant_id: ParticipantId,
        reply: oneshot::Sender<Option<PeerSession>>,
    },
    Subscribe {
        subscription: Subscription,
        events: mpsc::Receiver<SubscriptionEvent>,
        source: ParticipantId,
        identity: String,
        reply: oneshot::Sender<Result<(), RoomError>>,
    },
    Unsubscribe {
        subscription_id: SubscriptionId,
        reply: oneshot::Sender<Result<(), RoomError>>,
    },
    /// Closes every WHEP subscription opened with a token of `identity` (the host removed them).
    UnsubscribeIdentity {
        identity: String,
        reply: oneshot::Sender<usize>,
    },
    /// The host banned, unbanned or revoked the shared link (the list is in the handle): the
    /// room saves its record.
    GuestsChanged {
        reply: oneshot::Sender<()>,
    },
    StartRecording {
        reply: oneshot::Sender<Result<RecordingStatus, RoomError>>,
    },
    StopRecording {
        reply: oneshot::Sender<Result<(), RoomError>>,
    },
    /// Where the room's recordings are and which parts are being written now.
    Recordings {
        reply: oneshot::Sender<RecordingsAccess>,
    },
}

/// What the API needs to list, serve or delete a room's recordings (the file IO is its own).
pub struct RecordingsAccess {
    pub catalog: Option<Arc<crate::recordings::Catalog>>,
    /// Parts a mixer writes now (not to be deleted, listed as recording).
    pub active: Vec<String>,
}

impl RoomCommand {
    /// Whether the command may change what the room store keeps (then the room saves itself).
    fn changes_record(&self) -> bool {
        matches!(
            self,
            RoomCommand::GoLive { .. }
                | RoomCommand::StopLive { .. }
                | RoomCommand::SetLayout { .. }
                | RoomCommand::SetLook { .. }
                | RoomCommand::AddOutput { .. }
                | RoomCommand::RemoveOutput { .. }
                | RoomCommand::GuestsChanged { .. }
                | RoomCommand::StartRecording { .. }
                | RoomCommand::StopRecording { .. }
        )
    }
}

/// Why a room did not go live.
#[derive(Debug, thiserror::Error)]
pub enum GoLiveError {
    #[error(transparent)]
    Room(#[from] RoomError),
    /// Admission said no (capacity or drain).
    #[error(transparent)]
    Refused(#[from] Refusal),
}

/// Happenings that are not part of the room's state, for the event streams.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RoomNotice {
    /// The host removed this participant.
    Removed { participant_id: ParticipantId },
    /// A viewer asks to join (for the host only).
    JoinRequest { request_id: String, name: String },
    /// A request left the waiting list: `accepted`, `declined`, `withdrawn` or `expired`
    /// (for the host only).
    JoinRequestClosed {
        request_id: String,
        outcome: &'static str,
    },
}

impl RoomNotice {
    /// Whether only the host's event stream carries it (viewers' names are the host's).
    pub fn host_only(&self) -> bool {
        !matches!(self, RoomNotice::Removed { .. })
    }
}

/// While live, the status is republished this often so bitrate and durations move.
const LIVE_STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// Notices a slow event stream may fall behind by before it skips some.
const NOTICE_BUFFER: usize = 16;

#[path = "handle.rs"]
mod handle;
pub use handle::{EventStreamSlot, RoomGone, RoomHandle};

/// What the actor needs from the server to run a room.
#[derive(Clone)]
pub struct RoomRuntime {
    /// Where mixers come from (this machine's pool, or the fleet), and who admits a room going
    /// live.
    pub pool: Arc<dyn MixerBackend>,
    /// How long a stopping mixer may flush before it is killed.
    pub stop_grace: Duration,
    /// Where recordings are kept (`None`: no data directory, recording is refused).
    pub recordings: Option<Arc<crate::recordings::Catalog>>,
}

struct RoomActor {
    id: String,
    state: RoomState,
    sessions: HashMap<ParticipantId, PeerSession>,
    /// Subscriptions (SFU return path) by id; the state knows whose media each carries.
    subscriptions: HashMap<SubscriptionId, Subscription>,
    /// Who opened each subscription (the token's identity), so a removal closes them too.
    subscriber_identities: HashMap<SubscriptionId, String>,
    subscription_tx: mpsc::Sender<(SubscriptionId, SubscriptionEvent)>,
    mixer: Option<Box<dyn MixerLink>>,
    /// The mixer a planned move is replacing: on air until the successor has its outputs.
    outgoing: Option<Box<dyn MixerLink>>,
    /// (epoch, version, binary) the current mixer reported in `Ready`.
    mixer_identity: Option<(u64, String, String)>,
    /// Why the last reservation was refused, for the go-live's answer.
    refusal: Option<Refusal>,
    runtime: RoomRuntime,
    session_tx: mpsc::Sender<(ParticipantId, SessionEvent)>,
    mixer_tx: mpsc::Sender<MixerReport>,
    /// Bitrate, time live and reconnects per output, for the status view.
    meters: OutputMeters,
    /// Latency, A/V offset, join → visible, frozen program (see `quality`).
    quality: QualityTracker,
    /// Publishes the status; `send` never waits, slow readers just see the latest value.
    status_tx: watch::Sender<Arc<RoomStatus>>,
    notices: broadcast::Sender<RoomNotice>,
    /// Where the room's record goes after each change of it (`None`: not durable).
    store: Option<Arc<crate::store::RoomStore>>,
    /// The handle's guest list (bans, shared link), for the record.
    guests: Arc<std::sync::Mutex<GuestList>>,
    /// What the host last asked for (go live / stop): a restart brings this back, not
    /// whether a mixer happened to be up.
    wants_live: bool,
    /// Unix seconds, for the record.
    created_at: u64,
    /// The recordings' files and records (see `recorder`).
    recorder: Recorder,
    /// The recording in progress when serve stopped: it goes on with the first go-live.
    resume_recording: Option<String>,
    /// The room ends in this process only: its mixer is detached, not stopped.
    pub(super) detach_on_end: Arc<std::sync::atomic::AtomicBool>,
}

impl RoomActor {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<RoomCommand>,
        mut session_events: mpsc::Receiver<(ParticipantId, SessionEvent)>,
        mut mixer_reports: mpsc::Receiver<MixerReport>,
        mut subscription_events: mpsc::Receiver<(SubscriptionId, SubscriptionEvent)>,
        cancel: CancellationToken,
        save_at_start: bool,
    ) {
        let mut live_status = tokio::time::interval(LIVE_STATUS_INTERVAL);
        live_status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if save_at_start {
            self.save();
        }
        loop {
            // The state machine's own deadlines: a pending mixer restart, a heartbeat.
            let timeout = self.state.poll_timeout();
            let live = matches!(self.state.broadcast(), Broadcast::Live { .. });
            // A status query changes nothing: no need to republish after it.
            let mut changed = true;
            let tick = async move {
                match timeout {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick => {
                    let _ = self.input(Input::Tick);
                }
                _ = live_status.tick(), if live => {}
                Some(command) = commands.recv() => {
                    changed = !matches!(
                        command,
                        RoomCommand::Status { .. } | RoomCommand::Session { .. }
                    );
                    let save = command.changes_record();
                    self.on_command(command);
                    if save {
                        self.save();
                    }
                }
                Some((participant_id, event)) = session_events.recv() => {
                    self.on_session_event(participant_id, event);
                }
                Some(report) = mixer_reports.recv() => self.on_mixer_report(report),
                Some((subscription_id, event)) = subscription_events.recv() => {
                    if let SubscriptionEvent::Closed { reason } = event {
                        info!(subscription = %subscription_id, %reason, "subscription ended");
                        let _ = self.input(Input::Unsubscribe { subscription_id });
                    }
                }
            }
            self.run_effects();
            if changed {
                self.publish_status();
            }
        }
        self.shut_down();
    }

    fn input(&mut self, input: Input) -> Result<(), RoomError> {
        self.state.handle(Instant::now(), input)
    }

    fn status(&self) -> RoomStatus {
        let now = Instant::now();
        let mut status = RoomStatus::of(&self.id, &self.state, now);
        status.recording = self
            .recorder
            .status(self.state.recording().map(|r| r.session_id.as_str()));
        if let Some(mixer) = &self.mixer {
            let info = mixer.info();
            status.mixer.pid = info.pid;
            status.mixer.binary = info.binary;
            status.mixer.warm = info.warm;
            status.mixer.worker = info.worker;
            if let Some((_, version, _)) = self
                .mixer_identity
                .as_ref()
                .filter(|(epoch, ..)| *epoch == mixer.epoch())
            {
                status.mixer.version = Some(version.clone());
            }
        }
        status.cost = self.runtime.pool.cost_of(&self.id);
        self.meters.apply(&mut status.outputs, now);
        for participant in &mut status.participants {
            let stats = self
                .sessions
                .get(&participant.participant_id)
                .map(PeerSession::stats);
            participant.quality = self
                .quality
                .participant_view(&participant.participant_id, stats.as_ref());
        }
        if status.broadcast == "live" {
            let people: Vec<_> = status.participants.iter().map(|p| p.quality).collect();
            status.quality = self.quality.program_view(now, &people);
        }
        status
    }

    fn publish_status(&mut self) {
        self.meters.observe(Instant::now(), self.state.outputs());
        self.status_tx.send_replace(Arc::new(self.status()));
    }

    /// Going live: the room reserves its capacity first (`Effect::Reserve`, run at once), so a
    /// refusal is the answer.
    fn go_live(&mut self) -> Result<RoomStatus, GoLiveError> {
        let live = matches!(self.state.broadcast(), super::state::Broadcast::Live { .. });
        if !live {
            self.refusal = None;
            self.input(Input::GoLive)?;
            self.run_effects();
            if let Some(refusal) = self.refusal.take() {
                return Err(refusal.into());
            }
            self.quality.went_live(Instant::now());
            // A recording in progress before a restart goes on; a room that records every
            // broadcast starts one.
            let resume = self.resume_recording.take();
            if resume.is_some() || self.state.settings().record {
                match self.start_recording(resume) {
                    Ok(status) => info!(recording = %status.session_id, "recording"),
                    Err(e) => warn!("this broadcast is not recorded: {e}"),
                }
            }
        }
        Ok(self.status())
    }

    fn on_command(&mut self, command: RoomCommand) {
        match command {
            RoomCommand::Join {
                session,
                events,
                role,
                identity,
                display_name,
                requested_at,
                reply,
            } => {
                let participant_id = session.id().to_string();
                let joined = self.input(Input::Join {
                    participant_id: participant_id.clone(),
                    role,
                    identity,
                    display_name,
                });
                match joined {
                    Ok(()) => {
                        info!(participant = %participant_id, ?role, "participant joined");
                        self.quality.joined(&participant_id, requested_at);
                        self.sessions.insert(participant_id.clone(), session);
                        self.relay_session_events(participant_id.clone(), events);
                        let _ = reply.send(Ok(participant_id));
                    }
                    Err(e) => {
                        tokio::spawn(async move { session.close().await });
                        let _ = reply.send(Err(e));
                    }
                }
            }
            RoomCommand::Leave {
                participant_id,
                removed,
                reply,
            } => {
                let result = self.input(Input::Leave {
                    participant_id: participant_id.clone(),
                });
                if removed && result.is_ok() {
                    info!(participant = %participant_id, "participant removed by the host");
                    // No receivers (no open event stream) is fine.
                    let _ = self.notices.send(RoomNotice::Removed { participant_id });
                }
                let _ = reply.send(result);
            }
            RoomCommand::GoLive { reply } => {
                let result = self.go_live();
                if result.is_ok() {
                    self.wants_live = true;
                }
                let _ = reply.send(result);
            }
            RoomCommand::StopLive { reply } => {
                self.wants_live = false;
                let _ = self.input(Input::StopLive);
                // Free the pool's share before answering, so the capacity is there at once.
                self.run_effects();
                let _ = reply.send(self.status());
            }
            RoomCommand::SetAudio {
                participant_id,
                gain,
                muted,
                reply,
            } => {
                let result = self
                    .input(Input::SetAudio {
                        participant_id,
                        gain,
                        muted,
                    })
                    .map(|()| self.status());
                let _ = reply.send(result);
            }
            RoomCommand::SetLayout { layout, reply } => {
                let result = self
                    .input(Input::SetLayout { layout })
                    .map(|()| self.status());
                let _ = reply.send(result);
            }
            RoomCommand::SetLook { look, reply } => {
                let result = self.input(Input::SetLook { look }).map(|()| self.status());
                let _ = reply.send(result);
            }
            RoomCommand::Status { reply } => {
                let _ = reply.send(self.status());
            }
            RoomCommand::AddOutput { url, reply } => {
                // One encode feeds every output, so an extra output does not change the room's
                // admission cost (a branch is a queue and a socket).
                let result = self.input(Input::AddOutput { url }).map(|()| {
                    let added = self.state.outputs().last().expect("just added");
                    OutputStatusView::of(added)
                });
                let _ = reply.send(result);
            }
            RoomCommand::RemoveOutput { output_id, reply } => {
                let _ = reply.send(self.input(Input::RemoveOutput { output_id }));
            }
            RoomCommand::Session {
                participant_id,
                reply,
            } => {
                let _ = reply.send(self.sessions.get(&participant_id).cloned());
            }
            RoomCommand::Subscribe {
                subscription,
                events,
                source,
                identity,
                reply,
            } => {
                let subscription_id = subscription.id().to_string();
                let result = self.input(Input::Subscribe {
                    subscription_id: subscription_id.clone(),
                    source,
                });
                if result.is_ok() {
                    self.subscriptions
                        .insert(subscription_id.clone(), subscription);
                    self.subscriber_identities
                        .insert(subscription_id.clone(), identity);
                    let room = self.subscription_tx.clone();
                    let mut events = events;
                    tokio::spawn(async move {
                        while let Some(event) = events.recv().await {
                            if room.send((subscription_id.clone(), event)).await.is_err() {
                                break;
                            }
                        }
                    });
                }
                let _ = reply.send(result);
            }
            RoomCommand::Unsubscribe {
                subscription_id,
                reply,
            } => {
                let _ = reply.send(self.input(Input::Unsubscribe { subscription_id }));
            }
            RoomCommand::UnsubscribeIdentity { identity, reply } => {
                let theirs: Vec<SubscriptionId> = self
                    .subscriber_identities
                    .iter()
                    .filter(|(_, who)| **who == identity)
                    .map(|(id, _)| id.clone())
                    .collect();
                for subscription_id in &theirs {
                    let _ = self.input(Input::Unsubscribe {
                        subscription_id: subscription_id.clone(),
                    });
                }
                let _ = reply.send(theirs.len());
            }
            RoomCommand::GuestsChanged { reply } => {
                let _ = reply.send(());
            }
            RoomCommand::StartRecording { reply } => {
                let _ = reply.send(self.start_recording(None));
            }
            RoomCommand::StopRecording { reply } => {
                let _ = reply.send(self.input(Input::StopRecording));
            }
            RoomCommand::Recordings { reply } => {
                let _ = reply.send(RecordingsAccess {
                    catalog: self.recorder.catalog().cloned(),
                    active: self.recorder.active_ids(),
                });
            }
        }
    }

    /// Starts a recording of the program, live or going live: a new one, or `resume` one that
    /// was in progress before a restart (its parts go on from those on disk).
    fn start_recording(&mut self, resume: Option<String>) -> Result<RecordingStatus, RoomError> {
        let Some(catalog) = self.recorder.catalog().cloned() else {
            let why = self
                .recorder
                .unavailable()
                .unwrap_or("recording is not available");
            return Err(RoomError::RecordingUnavailable(why));
        };
        let (session_id, first_part) = match resume {
            // A few directory entries, once per room at start-up.
            Some(session) => {
                let next = catalog.next_part(&self.id, &session);
                (session, next)
            }
            None => (Recorder::new_session_id(), 1),
        };
        self.input(Input::StartRecording {
            session_id: session_id.clone(),
            first_part,
        })?;
        self.recorder.session_started();
        self.run_effects();
        Ok(self
            .recorder
            .status(Some(&session_id))
            .expect("a recording just started"))
    }

    /// Hands the room's record to the store (which writes it off this task).
    fn save(&self) {
        let Some(store) = &self.store else {
            return;
        };
        let guests = self.guests.lock().expect("guest list lock");
        let record = super::durable::record_of(
            store.key(),
            &self.id,
            self.state.settings(),
            &guests,
            self.wants_live,
            self.created_at,
        );
        drop(guests);
        let record = crate::store::RoomRecord {
            recording: self.state.recording().map(|r| r.session_id.clone()),
            ..record
        };
        store.save(&record);
    }

    /// Session events arrive on the session's own channel; one small task per participant
    /// tags them with the participant and feeds the room.
    fn relay_session_events(
        &self,
        participant_id: ParticipantId,
        mut events: mpsc::Receiver<SessionEvent>,
    ) {
        let room = self.session_tx.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if room.send((participant_id.clone(), event)).await.is_err() {
                    break;
                }
            }
        });
    }

    fn on_session_event(&mut self, participant_id: ParticipantId, event: SessionEvent) {
        let result = match event {
            SessionEvent::TrackStarted(track) => match track_desc(&track) {
                Some(desc) => {
                    info!(participant = %participant_id, track = %desc.track_id, codec = ?desc.codec, "track started");
                    self.input(Input::TrackStarted {
                        participant_id,
                        track: desc,
                    })
                }
                None => {
                    warn!(participant = %participant_id, "ignoring track with a codec the mixer cannot decode");
                    Ok(())
                }
            },
            SessionEvent::TrackEnded { track_id } => self.input(Input::TrackEnded {
                participant_id,
                track_id,
            }),
            SessionEvent::Connected => {
                info!(participant = %participant_id, "media connected");
                Ok(())
            }
            SessionEvent::Closed { reason } => {
                info!(participant = %participant_id, %reason, "participant's connection closed");
                self.input(Input::Leave { participant_id })
            }
        };
        if let Err(e) = result {
            // E.g. a late event of a participant who already left: nothing to undo.
            tracing::debug!("session event ignored: {e}");
        }
    }

    fn on_mixer_report(&mut self, report: MixerReport) {
        let input = match report {
            MixerReport::Event { epoch, event } => {
                let current = self.mixer_epoch() == Some(epoch);
                match &event {
                    Event::Ready { version, binary } => {
                        self.mixer_identity = Some((epoch, version.clone(), binary.clone()));
                    }
                    Event::Heartbeat {
                        quality: Some(quality),
                        ..
                    } if current => self.quality.program(quality.clone(), Instant::now()),
                    Event::InputVisible { input_id } if current => self.input_visible(input_id),
                    Event::Recording {
                        recording_id,
                        state,
                        reason,
                        ..
                    } => self.recorder.on_event(recording_id, *state, reason.clone()),
                    _ => {}
                }
                Input::Mixer { epoch, event }
            }
            MixerReport::Exited {
                epoch,
                reason,
                worker_lost,
            } => {
                if self.mixer_epoch() == Some(epoch) {
                    self.mixer = None;
                    self.quality.program_ended();
                }
                if self.outgoing.as_ref().map(|m| m.epoch()) == Some(epoch) {
                    self.outgoing = None;
                }
                self.recorder.mixer_exited(epoch, &reason);
                Input::MixerExited {
                    epoch,
                    reason,
                    worker_lost,
                }
            }
            MixerReport::MoveRequested { epoch } => Input::MoveMixer { epoch },
        };
        let _ = self.input(input);
    }

    /// A guest's picture reached the program: join → visible, once per join.
    fn input_visible(&mut self, input_id: &str) {
        let Some(participant_id) = self.state.participant_of_input(input_id) else {
            return;
        };
        if let Some(took) = self.quality.visible(&participant_id, Instant::now()) {
            info!(participant = %participant_id, ms = took.as_millis() as u64, "visible in the program");
            crate::api::metrics::observe_join_to_visible(took);
        }
    }

    fn mixer_epoch(&self) -> Option<u64> {
        self.mixer.as_ref().map(|m| m.epoch())
    }

    /// The current mixer, or the one a planned move is replacing, by epoch.
    fn mixer_of(&self, epoch: u64) -> Option<&dyn MixerLink> {
        [&self.mixer, &self.outgoing]
            .into_iter()
            .flatten()
            .find(|m| m.epoch() == epoch)
            .map(|m| m.as_ref())
    }

    fn take_mixer(&mut self, epoch: u64) -> Option<Box<dyn MixerLink>> {
        [&mut self.mixer, &mut self.outgoing]
            .into_iter()
            .find(|m| m.as_ref().is_some_and(|m| m.epoch() == epoch))
            .and_then(Option::take)
    }

    fn launch_mixer(&mut self, epoch: u64) {
        match self
            .runtime
            .pool
            .launch(&self.id, epoch, self.mixer_tx.clone())
        {
            Ok(link) => self.mixer = Some(link),
            Err(e) => {
                warn!("{e}");
                // No mixer to be had (no process, no worker fits): counts as a crash, so a
                // fleet that cannot take the room ends the broadcast in time.
                let _ = self.input(Input::MixerExited {
                    epoch,
                    reason: e.to_string(),
                    worker_lost: false,
                });
            }
        }
    }

    fn run_effects(&mut self) {
        while let Some(effect) = self.state.poll_effect() {
            self.run_effect(effect);
        }
        self.settle_mixer_links();
    }

    /// A planned move that was called off leaves the old mixer as the room's mixer again: its
    /// link goes back from `outgoing` to `mixer` (status, quality and exits follow it).
    fn settle_mixer_links(&mut self) {
        let live_epoch = match self.state.broadcast() {
            super::state::Broadcast::Live { epoch, .. } => Some(*epoch),
            _ => None,
        };
        if self.mixer.is_none() && self.outgoing.as_ref().map(|m| m.epoch()) == live_epoch {
            self.mixer = self.outgoing.take();
        }
    }

    fn run_effect(&mut self, effect: Effect) {
        match effect {
            Effect::Reserve { video, inputs } => {
                let answer = match self.runtime.pool.admit(&self.id, &video, inputs) {
                    Ok(_) => Input::Admitted,
                    Err(refusal) => {
                        let reason = refusal.to_string();
                        self.refusal = Some(refusal);
                        Input::Refused { reason }
                    }
                };
                let _ = self.input(answer);
            }
            Effect::Resize { video, inputs } => self.runtime.pool.resize(&self.id, &video, inputs),
            Effect::Release => self.runtime.pool.release(&self.id),
            Effect::SpawnMixer { epoch } => {
                if let Some(old) = self.mixer.take() {
                    old.stop(self.runtime.stop_grace);
                }
                self.launch_mixer(epoch);
            }
            Effect::SpawnSuccessor { epoch } => {
                // The current mixer stays on air until the room stops it.
                if let Some(current) = self.mixer.take() {
                    if let Some(older) = self.outgoing.replace(current) {
                        older.stop(self.runtime.stop_grace);
                    }
                }
                self.launch_mixer(epoch);
            }
            Effect::ToMixer { epoch, command } => {
                if let Some(mixer) = self.mixer_of(epoch) {
                    mixer.send(command);
                }
            }
            Effect::KillMixer { epoch } => {
                if let Some(mixer) = self.take_mixer(epoch) {
                    let info = mixer.info();
                    warn!(epoch, pid = ?info.pid, worker = ?info.worker, "killing the mixer");
                    // Dropping the handle kills the process.
                    drop(mixer);
                }
            }
            Effect::StopMixer { epoch } => {
                self.recorder.mixer_stopping(epoch);
                if let Some(mixer) = self.take_mixer(epoch) {
                    mixer.stop(self.runtime.stop_grace);
                }
            }
            Effect::Forward {
                participant_id,
                track_id,
                targets,
            } => {
                if let Some(session) = self.sessions.get(&participant_id) {
                    session.set_forward_targets(&track_id, targets);
                }
            }
            Effect::RequestKeyframe {
                participant_id,
                track_id,
            } => {
                if let Some(session) = self.sessions.get(&participant_id).cloned() {
                    tokio::spawn(async move { session.request_keyframe(&track_id).await });
                }
            }
            Effect::AttachSubscription {
                source,
                subscription_id,
            } => {
                if let (Some(session), Some(subscription)) = (
                    self.sessions.get(&source),
                    self.subscriptions.get(&subscription_id),
                ) {
                    info!(subscription = %subscription_id, source = %source, "subscription started");
                    session.add_subscription(subscription);
                }
            }
            Effect::RecordPart {
                epoch,
                session_id,
                part,
            } => {
                // A mixer that could not be launched records nothing (its replacement will).
                if self.mixer_of(epoch).is_some() {
                    if let Some(command) = self.recorder.begin(epoch, &session_id, part) {
                        if let Some(mixer) = self.mixer_of(epoch) {
                            mixer.send(command);
                        }
                    }
                }
            }
            Effect::EndRecordingPart { epoch } => {
                for command in self.recorder.end(epoch) {
                    if let Some(mixer) = self.mixer_of(epoch) {
                        mixer.send(command);
                    }
                }
            }
            Effect::CloseSubscription {
                source,
                subscription_id,
            } => {
                if let Some(session) = self.sessions.get(&source) {
                    session.remove_subscription(&subscription_id);
                }
                self.subscriber_identities.remove(&subscription_id);
                if let Some(subscription) = self.subscriptions.remove(&subscription_id) {
                    tokio::spawn(async move { subscription.close().await });
                }
            }
            Effect::CloseSession { participant_id } => {
                self.quality.left(&participant_id);
                if let Some(session) = self.sessions.remove(&participant_id) {
                    info!(participant = %participant_id, "participant left");
                    tokio::spawn(async move { session.close().await });
                }
            }
        }
    }

    fn shut_down(&mut self) {
        if self.detach_on_end.load(std::sync::atomic::Ordering::SeqCst) {
            for mixer in [self.mixer.take(), self.outgoing.take()]
                .into_iter()
                .flatten()
            {
                info!(
                    epoch = mixer.epoch(),
                    "serve is shutting down: the mixer is left running for the next serve"
                );
                mixer.detach(self.runtime.stop_grace);
            }
        }
        let _ = self.input(Input::StopLive);
        for participant_id in self.state.participant_ids() {
            let _ = self.input(Input::Leave { participant_id });
        }
        self.run_effects();
        info!("room ended");
    }
}
