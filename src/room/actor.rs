//! The room actor: owns a [`RoomState`], the participants' WebRTC sessions and the room's mixer
//! process, and turns effects into IO. Only control goes through here; RTP flows from each
//! track's read loop straight to its UDP targets (see `costream_ingest`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use costream_ingest::{PeerSession, SessionEvent};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use super::media::track_desc;
use super::meter::OutputMeters;
use super::state::{Broadcast, Effect, Input, ParticipantId, RoomError, RoomSettings, RoomState};
use super::status::RoomStatus;
use super::tokens::{Role, RoomTokens};
use crate::pool::{MixerProcess, MixerReport};

/// Commands from the API to one room.
enum RoomCommand {
    Join {
        session: PeerSession,
        events: mpsc::Receiver<SessionEvent>,
        role: Role,
        display_name: String,
        reply: oneshot::Sender<Result<ParticipantId, RoomError>>,
    },
    Leave {
        participant_id: ParticipantId,
        /// The host removed them (they are told so), rather than they left.
        removed: bool,
        reply: oneshot::Sender<Result<(), RoomError>>,
    },
    GoLive {
        reply: oneshot::Sender<Result<RoomStatus, RoomError>>,
    },
    StopLive {
        reply: oneshot::Sender<RoomStatus>,
    },
    Status {
        reply: oneshot::Sender<RoomStatus>,
    },
}

/// Happenings that are not part of the room's state, for the event streams.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RoomNotice {
    /// The host removed this participant.
    Removed { participant_id: ParticipantId },
}

/// While live, the status is republished this often so bitrate and durations move.
const LIVE_STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// Notices a slow event stream may fall behind by before it skips some.
const NOTICE_BUFFER: usize = 16;

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
    /// Bounded: a flood of requests waits instead of growing memory.
    commands: mpsc::Sender<RoomCommand>,
    /// Ends the actor: stops the mixer and closes every session.
    cancel: CancellationToken,
    /// The latest status, republished by the actor on every change (closed when it ends).
    status: watch::Receiver<Arc<RoomStatus>>,
    /// Notices for event streams; bounded, a lagging receiver skips.
    notices: broadcast::Sender<RoomNotice>,
}

/// What the actor needs from the server to run a room.
#[derive(Clone)]
pub struct RoomRuntime {
    /// Executable to spawn as `<binary> mixer`.
    pub mixer_binary: PathBuf,
    /// How long a stopping mixer may flush before it is killed.
    pub stop_grace: Duration,
}

impl RoomHandle {
    pub fn spawn(
        id: String,
        tokens: RoomTokens,
        settings: RoomSettings,
        runtime: RoomRuntime,
    ) -> Self {
        let (commands, command_rx) = mpsc::channel(64);
        let cancel = CancellationToken::new();
        let (session_tx, session_rx) = mpsc::channel(256);
        let (mixer_tx, mixer_rx) = mpsc::channel(256);
        let state = RoomState::new(settings);
        let (status_tx, status) =
            watch::channel(Arc::new(RoomStatus::of(&id, &state, Instant::now())));
        let (notices, _) = broadcast::channel(NOTICE_BUFFER);
        let actor = RoomActor {
            id: id.clone(),
            state,
            sessions: HashMap::new(),
            mixer: None,
            runtime,
            session_tx,
            mixer_tx,
            meters: OutputMeters::default(),
            status_tx,
            notices: notices.clone(),
        };
        // A root span: the actor outlives the HTTP request that created the room.
        let span = tracing::info_span!(parent: None, "room", room = %id);
        tokio::spawn(
            actor
                .run(command_rx, session_rx, mixer_rx, cancel.clone())
                .instrument(span),
        );
        Self {
            id,
            tokens,
            commands,
            cancel,
            status,
            notices,
        }
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
        display_name: String,
    ) -> Result<Result<ParticipantId, RoomError>, RoomGone> {
        self.ask(|reply| RoomCommand::Join {
            session,
            events,
            role,
            display_name,
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

    pub async fn go_live(&self) -> Result<Result<RoomStatus, RoomError>, RoomGone> {
        self.ask(|reply| RoomCommand::GoLive { reply }).await
    }

    pub async fn stop_live(&self) -> Result<RoomStatus, RoomGone> {
        self.ask(|reply| RoomCommand::StopLive { reply }).await
    }

    pub async fn status(&self) -> Result<RoomStatus, RoomGone> {
        self.ask(|reply| RoomCommand::Status { reply }).await
    }

    /// Ends the room: the mixer stops and every participant is disconnected.
    pub fn end(&self) {
        self.cancel.cancel();
    }
}

impl Drop for RoomHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

struct RoomActor {
    id: String,
    state: RoomState,
    sessions: HashMap<ParticipantId, PeerSession>,
    mixer: Option<MixerProcess>,
    runtime: RoomRuntime,
    session_tx: mpsc::Sender<(ParticipantId, SessionEvent)>,
    mixer_tx: mpsc::Sender<MixerReport>,
    /// Bitrate, time live and reconnects per output, for the status view.
    meters: OutputMeters,
    /// Publishes the status; `send` never waits, slow readers just see the latest value.
    status_tx: watch::Sender<Arc<RoomStatus>>,
    notices: broadcast::Sender<RoomNotice>,
}

impl RoomActor {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<RoomCommand>,
        mut session_events: mpsc::Receiver<(ParticipantId, SessionEvent)>,
        mut mixer_reports: mpsc::Receiver<MixerReport>,
        cancel: CancellationToken,
    ) {
        let mut live_status = tokio::time::interval(LIVE_STATUS_INTERVAL);
        live_status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                    changed = !matches!(command, RoomCommand::Status { .. });
                    self.on_command(command);
                }
                Some((participant_id, event)) = session_events.recv() => {
                    self.on_session_event(participant_id, event);
                }
                Some(report) = mixer_reports.recv() => self.on_mixer_report(report),
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
        status.mixer.pid = self.mixer.as_ref().and_then(MixerProcess::pid);
        self.meters.apply(&mut status.outputs, now);
        status
    }

    fn publish_status(&mut self) {
        self.meters.observe(Instant::now(), self.state.outputs());
        self.status_tx.send_replace(Arc::new(self.status()));
    }

    fn on_command(&mut self, command: RoomCommand) {
        match command {
            RoomCommand::Join {
                session,
                events,
                role,
                display_name,
                reply,
            } => {
                let participant_id = session.id().to_string();
                let joined = self.input(Input::Join {
                    participant_id: participant_id.clone(),
                    role,
                    display_name,
                });
                match joined {
                    Ok(()) => {
                        info!(participant = %participant_id, ?role, "participant joined");
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
                let result = self.input(Input::GoLive).map(|()| self.status());
                let _ = reply.send(result);
            }
            RoomCommand::StopLive { reply } => {
                let _ = self.input(Input::StopLive);
                let _ = reply.send(self.status());
            }
            RoomCommand::Status { reply } => {
                let _ = reply.send(self.status());
            }
        }
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
            MixerReport::Event { epoch, event } => Input::Mixer { epoch, event },
            MixerReport::Exited { epoch, reason } => {
                if self.mixer.as_ref().map(MixerProcess::epoch) == Some(epoch) {
                    self.mixer = None;
                }
                Input::MixerExited { epoch, reason }
            }
        };
        let _ = self.input(input);
    }

    fn run_effects(&mut self) {
        while let Some(effect) = self.state.poll_effect() {
            self.run_effect(effect);
        }
    }

    fn run_effect(&mut self, effect: Effect) {
        match effect {
            Effect::SpawnMixer { epoch } => {
                if let Some(old) = self.mixer.take() {
                    old.stop(self.runtime.stop_grace);
                }
                match MixerProcess::spawn(
                    &self.runtime.mixer_binary,
                    &self.id,
                    epoch,
                    self.mixer_tx.clone(),
                ) {
                    Ok(process) => self.mixer = Some(process),
                    Err(e) => {
                        warn!("{e}");
                        let _ = self.input(Input::MixerExited {
                            epoch,
                            reason: e.to_string(),
                        });
                    }
                }
            }
            Effect::ToMixer { epoch, command } => match &self.mixer {
                Some(mixer) if mixer.epoch() == epoch => {
                    mixer.send(command);
                }
                _ => {}
            },
            Effect::KillMixer { epoch } => {
                if self.mixer.as_ref().map(MixerProcess::epoch) == Some(epoch) {
                    if let Some(mixer) = self.mixer.take() {
                        warn!(epoch, pid = ?mixer.pid(), "killing the mixer");
                        // Dropping the handle kills the process.
                        drop(mixer);
                    }
                }
            }
            Effect::StopMixer { epoch } => {
                if self.mixer.as_ref().map(MixerProcess::epoch) == Some(epoch) {
                    if let Some(mixer) = self.mixer.take() {
                        mixer.stop(self.runtime.stop_grace);
                    }
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
            Effect::CloseSession { participant_id } => {
                if let Some(session) = self.sessions.remove(&participant_id) {
                    info!(participant = %participant_id, "participant left");
                    tokio::spawn(async move { session.close().await });
                }
            }
        }
    }

    fn shut_down(&mut self) {
        let _ = self.input(Input::StopLive);
        for participant_id in self.state.participant_ids() {
            let _ = self.input(Input::Leave { participant_id });
        }
        self.run_effects();
        info!("room ended");
    }
}
