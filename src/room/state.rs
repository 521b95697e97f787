//! The room as a sans-IO state machine: `handle(now, input)` updates state and queues
//! [`Effect`]s; `poll_effect()` hands them to the actor, which does the IO. No sockets, no clock
//! reads, no processes here, so every transition is tested in plain unit tests.
//!
//! Each mixer process gets a fresh `epoch`. Mixer events carry the epoch they came from and
//! events of an older epoch are ignored, so a dying mixer cannot corrupt the state of its
//! successor (fencing, the same idea the distributed backend will need).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use costream_mixer::control::{
    AudioMix, Codec, Command, DestinationPolicy, Event, LayoutSpec, Look, MediaKind, OutputSpec,
    OutputState, VideoSpec,
};

use super::recovery::{CrashHistory, CrashPolicy, RestartDecision};
use super::tokens::Role;

pub type ParticipantId = String;
/// A WHEP subscription to one participant's media (the SFU return path).
pub type SubscriptionId = String;

/// What a room is configured to produce.
#[derive(Debug, Clone)]
pub struct RoomSettings {
    pub name: String,
    pub video: VideoSpec,
    pub outputs: Vec<OutputSpec>,
    /// Where outputs may push (`[outputs]`): checked by the API when an output is added and
    /// again by the mixer before every connection, since a name may resolve elsewhere by then.
    pub destinations: DestinationPolicy,
    pub max_participants: usize,
    /// Outputs the host may have at once (create and `POST .../outputs` together).
    pub max_outputs: usize,
    /// WHEP subscriptions open at once in the room.
    pub max_subscriptions: usize,
    /// How the mix is laid out; the host changes it live with `Input::SetLayout`.
    pub layout: LayoutSpec,
    /// Background, name labels, logo, slate title; the host changes it live with
    /// `Input::SetLook`. An empty title means the room name.
    pub look: Look,
    /// Record every broadcast from its start (`record: true` at creation).
    pub record: bool,
}

/// A media track a participant publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackDesc {
    pub track_id: String,
    pub codec: Codec,
    pub payload_type: u8,
    pub clock_rate: u32,
}

#[derive(Debug, Clone)]
pub struct Track {
    pub desc: TrackDesc,
    /// The mixer's name for this track's RTP stream (`in<N>`: short and safe for element names).
    pub input_id: String,
    /// Set once the current mixer listens for this track: where its RTP goes.
    pub mixer_addr: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct Participant {
    pub role: Role,
    /// Who this is (the token's `sub`, or generated for the shared guest link).
    pub identity: String,
    pub display_name: String,
    pub joined_at: Instant,
    pub tracks: Vec<Track>,
    /// The host's gain/mute for this participant in the program.
    pub audio: AudioMix,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MixerPhase {
    /// Process spawned, pipeline not yet PLAYING.
    Starting,
    /// Pipeline PLAYING.
    Running,
    /// The previous mixer died or hung; a new one starts at the restart time.
    Restarting,
}

#[derive(Debug, Clone)]
pub struct OutputStatus {
    pub spec: OutputSpec,
    pub state: OutputState,
    pub reason: Option<String>,
    pub bytes_sent: u64,
}

/// The broadcast (mixing + pushing) part of the room.
#[derive(Debug, Clone)]
pub enum Broadcast {
    Offline,
    Live {
        epoch: u64,
        mixer: MixerPhase,
        since: Instant,
        frames_out: u64,
        /// Mixers replaced after a crash or hang during this broadcast.
        restarts: u32,
    },
    /// The mixer died; the room stays usable and can go live again.
    Failed {
        reason: String,
    },
}

/// Inputs from the API, the participants' sessions and the mixer.
#[derive(Debug, Clone)]
pub enum Input {
    Join {
        participant_id: ParticipantId,
        role: Role,
        identity: String,
        display_name: String,
    },
    TrackStarted {
        participant_id: ParticipantId,
        track: TrackDesc,
    },
    TrackEnded {
        participant_id: ParticipantId,
        track_id: String,
    },
    Leave {
        participant_id: ParticipantId,
    },
    /// The host asks to go live: capacity is reserved first (`Effect::Reserve`), the mixer
    /// starts once `Admitted`.
    GoLive,
    /// The capacity reserved for going live is held for this room.
    Admitted,
    /// No capacity for it (the reason is the API's answer): the room stays offline.
    Refused {
        reason: String,
    },
    StopLive,
    Mixer {
        epoch: u64,
        event: Event,
    },
    MixerExited {
        epoch: u64,
        reason: String,
        /// Its machine was lost (a fleet worker), not the mixer: restart at once, uncounted.
        worker_lost: bool,
    },
    /// The host changed the layout (applied live, without restarting anything).
    SetLayout {
        layout: LayoutSpec,
    },
    /// The host changed the room's look (applied live).
    SetLook {
        look: Look,
    },
    /// The host changed a participant's gain or mute in the program (`None`: unchanged).
    SetAudio {
        participant_id: ParticipantId,
        gain: Option<f64>,
        muted: Option<bool>,
    },
    /// The host adds an RTMP destination (validated URL). Offline it waits for the next
    /// go-live; live, the mixer starts pushing to it at once. Its id is the last of `outputs()`.
    AddOutput {
        url: String,
    },
    /// The host removes a destination; live, the mixer stops pushing to it at once.
    RemoveOutput {
        output_id: String,
    },
    /// Time passed: `poll_timeout()` was reached.
    Tick,
    /// Someone subscribes to `source`'s audio and video.
    Subscribe {
        subscription_id: SubscriptionId,
        source: ParticipantId,
    },
    /// A subscription ends (DELETE, or its connection failed).
    Unsubscribe {
        subscription_id: SubscriptionId,
    },
    /// The machine running mixer `epoch` is draining: move the room to a successor mixer
    /// before this one stops (make before break, see `handover`).
    MoveMixer {
        epoch: u64,
    },
    /// The host starts recording the program (live, or going live); `session_id` names it,
    /// its parts are numbered from `first_part` (1, or on from the parts a recording resumed
    /// after a serve restart already has).
    StartRecording {
        session_id: String,
        first_part: u32,
    },
    /// The host stops the recording in progress (the broadcast goes on).
    StopRecording,
}

/// IO the actor must carry out, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Hold capacity for the room going live with `inputs` participants (admission by cost);
    /// answered with `Input::Admitted` or `Input::Refused`.
    Reserve {
        video: VideoSpec,
        inputs: u32,
    },
    /// Re-charge the held capacity: the participants changed while live.
    Resize {
        video: VideoSpec,
        inputs: u32,
    },
    /// The broadcast ended: the capacity is free again.
    Release,
    SpawnMixer {
        epoch: u64,
    },
    /// Like `SpawnMixer`, but the current mixer stays on air beside it (a planned move): it is
    /// stopped later by its own `StopMixer`.
    SpawnSuccessor {
        epoch: u64,
    },
    ToMixer {
        epoch: u64,
        command: Command,
    },
    StopMixer {
        epoch: u64,
    },
    /// Kill at once (hung or crashed mixer; no flushing).
    KillMixer {
        epoch: u64,
    },
    /// Replace where this track's RTP goes (empty: nowhere).
    Forward {
        participant_id: ParticipantId,
        track_id: String,
        targets: Vec<SocketAddr>,
    },
    RequestKeyframe {
        participant_id: ParticipantId,
        track_id: String,
    },
    CloseSession {
        participant_id: ParticipantId,
    },
    /// Start feeding `source`'s media to the subscription. Separate from `Forward`: the mixer's
    /// targets and the subscriptions never replace each other.
    AttachSubscription {
        source: ParticipantId,
        subscription_id: SubscriptionId,
    },
    /// Stop feeding it and close its connection.
    CloseSubscription {
        source: ParticipantId,
        subscription_id: SubscriptionId,
    },
    /// Mixer `epoch` records part `part` of recording `session_id` (sent after its `Start`).
    RecordPart {
        epoch: u64,
        session_id: String,
        part: u32,
    },
    /// Mixer `epoch` closes the part it records (the recording was stopped).
    EndRecordingPart {
        epoch: u64,
    },
}

/// Why an input was refused; the API turns these into HTTP errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    #[error("the room is full ({max} participants); ask the host to remove someone")]
    Full { max: usize },
    #[error("participant {0} is already in the room")]
    AlreadyJoined(ParticipantId),
    #[error("no participant {0} in this room")]
    UnknownParticipant(ParticipantId),
    #[error("no subscription {0} in this room; it may have ended with its source")]
    UnknownSubscription(SubscriptionId),
    #[error("this room already has {max} subscriptions open (limits.max_subscriptions_per_room); retry when one ends")]
    TooManySubscriptions { max: usize },
    #[error("the room has no outputs to push to; create it with \"outputs\": [{{\"url\": \"rtmp://...\"}}]")]
    NoOutputs,
    #[error("{0}")]
    InvalidLayout(String),
    #[error("{0}")]
    InvalidAudio(String),
    #[error("the room already has {max} outputs (the most allowed); remove one with DELETE /api/v1/rooms/{{id}}/outputs/{{output_id}} first")]
    TooManyOutputs { max: usize },
    #[error(
        "the room already pushes to this URL (output {0}); one stream key takes one publisher"
    )]
    DuplicateOutput(String),
    #[error("no output {0} in this room")]
    UnknownOutput(String),
    #[error("{0}")]
    InvalidLook(String),
    #[error("the room is not live; recording starts with the broadcast (go live first, or create the room with \"record\": true)")]
    NotLive,
    #[error("recording {0} is already running; stop it with DELETE /api/v1/rooms/{{id}}/recordings/active first")]
    AlreadyRecording(String),
    #[error("nothing is being recorded in this room")]
    NotRecording,
    #[error("{0}")]
    RecordingUnavailable(&'static str),
}

#[derive(Debug)]
pub struct RoomState {
    settings: RoomSettings,
    participants: BTreeMap<ParticipantId, Participant>,
    broadcast: Broadcast,
    outputs: Vec<OutputStatus>,
    last_epoch: u64,
    next_input: u64,
    /// Number in the next added output's id (`out<N>`).
    next_output: usize,
    effects: VecDeque<Effect>,
    policy: CrashPolicy,
    crashes: CrashHistory,
    /// When a crashed mixer's successor is due.
    restart_at: Option<Instant>,
    /// Last sign of life from the current mixer (any event), for hang detection.
    last_heard: Option<Instant>,
    /// The live mixer's program frame count, and when it last grew (stall detection).
    frames_progress: Option<FramesProgress>,
    /// Who the mixer hears speaking (reported by it while live).
    active_speaker: Option<ParticipantId>,
    /// Active subscriptions and whose media each carries.
    subscriptions: BTreeMap<SubscriptionId, ParticipantId>,
    /// A planned move of the mixer in progress (the old one still on air).
    handover: Option<handover::Handover>,
    /// Capacity held for the broadcast: the participants it is charged for.
    reserved_inputs: Option<u32>,
    /// A go-live waits for `Admitted` or `Refused`.
    awaiting_admission: bool,
    /// The recording in progress (see `recording_session`).
    recording: Option<recording_session::RecordingSession>,
}

/// A mixer's program frame count and when it last grew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FramesProgress {
    pub epoch: u64,
    pub frames: u64,
    pub since: Instant,
}

impl RoomState {
    pub fn new(settings: RoomSettings) -> Self {
        let outputs = settings
            .outputs
            .iter()
            .map(|spec| OutputStatus {
                spec: spec.clone(),
                state: OutputState::Idle,
                reason: None,
                bytes_sent: 0,
            })
            .collect();
        Self {
            next_output: settings.outputs.len(),
            settings,
            participants: BTreeMap::new(),
            broadcast: Broadcast::Offline,
            outputs,
            last_epoch: 0,
            next_input: 0,
            effects: VecDeque::new(),
            policy: CrashPolicy::default(),
            crashes: CrashHistory::default(),
            restart_at: None,
            last_heard: None,
            frames_progress: None,
            active_speaker: None,
            subscriptions: BTreeMap::new(),
            handover: None,
            reserved_inputs: None,
            awaiting_admission: false,
            recording: None,
        }
    }

    /// Replaces the recovery limits (tests use short ones).
    pub fn with_crash_policy(mut self, policy: CrashPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// When `handle(now, Input::Tick)` is next due: a pending restart or a heartbeat deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.restart_at,
            self.heartbeat_deadline(),
            self.output_stall_deadline(),
            self.handover.as_ref().map(handover::Handover::deadline),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// When the live mixer counts as hung if it says nothing more.
    fn heartbeat_deadline(&self) -> Option<Instant> {
        match &self.broadcast {
            Broadcast::Live { mixer, .. } => self.last_heard.map(|t| {
                t + match mixer {
                    MixerPhase::Running => self.policy.heartbeat_timeout,
                    MixerPhase::Starting | MixerPhase::Restarting => self.policy.startup_timeout,
                }
            }),
            _ => None,
        }
    }

    /// When the live, running mixer counts as stalled if its frame count does not grow.
    pub(super) fn output_stall_deadline(&self) -> Option<Instant> {
        let Broadcast::Live {
            epoch,
            mixer: MixerPhase::Running,
            ..
        } = &self.broadcast
        else {
            return None;
        };
        let progress = self.frames_progress.filter(|p| p.epoch == *epoch)?;
        Some(
            progress.since
                + if progress.frames == 0 {
                    self.policy.startup_timeout
                } else {
                    self.policy.output_stall_timeout
                },
        )
    }

    pub fn settings(&self) -> &RoomSettings {
        &self.settings
    }

    pub fn broadcast(&self) -> &Broadcast {
        &self.broadcast
    }

    pub fn outputs(&self) -> &[OutputStatus] {
        &self.outputs
    }

    /// Participants in join order.
    pub fn participants(&self) -> Vec<(&ParticipantId, &Participant)> {
        let mut list: Vec<_> = self.participants.iter().collect();
        list.sort_by_key(|(id, p)| (p.joined_at, (*id).clone()));
        list
    }

    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    fn live_epoch(&self) -> Option<u64> {
        match self.broadcast {
            Broadcast::Live { epoch, .. } => Some(epoch),
            _ => None,
        }
    }

    pub fn handle(&mut self, now: Instant, input: Input) -> Result<(), RoomError> {
        let result = self.apply(now, input);
        self.sync_reservation();
        result
    }

    fn apply(&mut self, now: Instant, input: Input) -> Result<(), RoomError> {
        match input {
            Input::Join {
                participant_id,
                role,
                identity,
                display_name,
            } => self.join(now, participant_id, role, identity, display_name),
            Input::TrackStarted {
                participant_id,
                track,
            } => self.track_started(participant_id, track),
            Input::TrackEnded {
                participant_id,
                track_id,
            } => {
                self.track_ended(&participant_id, &track_id);
                Ok(())
            }
            Input::Leave { participant_id } => self.leave(&participant_id),
            Input::GoLive => self.request_go_live(),
            Input::Admitted => {
                if std::mem::take(&mut self.awaiting_admission) {
                    self.reserved_inputs = Some(self.participant_count());
                    self.go_live(now);
                }
                Ok(())
            }
            Input::Refused { .. } => {
                self.awaiting_admission = false;
                self.recording = None;
                Ok(())
            }
            Input::StartRecording {
                session_id,
                first_part,
            } => self.start_recording(session_id, first_part),
            Input::StopRecording => self.stop_recording(),
            Input::SetLayout { layout } => self.set_layout(layout),
            Input::SetLook { look } => self.set_look(look),
            Input::SetAudio {
                participant_id,
                gain,
                muted,
            } => self.set_audio(&participant_id, gain, muted),
            Input::StopLive => {
                self.stop_live();
                Ok(())
            }
            Input::Mixer { epoch, event } => {
                if self.live_epoch() == Some(epoch) {
                    self.last_heard = Some(now);
                    if let Event::Heartbeat { frames_out, .. } = &event {
                        self.note_frames(now, epoch, *frames_out);
                    }
                    self.successor_event(now, epoch, event);
                } else if self.old_mixer_epoch() == Some(epoch) {
                    self.old_mixer_event(now, event);
                }
                Ok(())
            }
            Input::MoveMixer { epoch } => {
                self.begin_handover(now, epoch);
                Ok(())
            }
            Input::MixerExited {
                epoch,
                reason,
                worker_lost,
            } => {
                if self.old_mixer_epoch() == Some(epoch) {
                    self.old_mixer_gone();
                } else if self.live_epoch() == Some(epoch)
                    && self.restart_at.is_none()
                    && self.handover.is_some()
                {
                    self.successor_failed(now, reason);
                } else if self.live_epoch() == Some(epoch) && self.restart_at.is_none() {
                    if worker_lost {
                        self.worker_lost(now, reason);
                    } else {
                        self.mixer_crashed(now, reason);
                    }
                }
                Ok(())
            }
            Input::AddOutput { url } => self.add_output(url),
            Input::RemoveOutput { output_id } => self.remove_output(&output_id),
            Input::Tick => {
                self.tick(now);
                Ok(())
            }
            Input::Subscribe {
                subscription_id,
                source,
            } => self.subscribe(subscription_id, source),
            Input::Unsubscribe { subscription_id } => {
                let source = self
                    .subscriptions
                    .remove(&subscription_id)
                    .ok_or_else(|| RoomError::UnknownSubscription(subscription_id.clone()))?;
                self.effects.push_back(Effect::CloseSubscription {
                    source,
                    subscription_id,
                });
                Ok(())
            }
        }
    }

    fn subscribe(
        &mut self,
        subscription_id: SubscriptionId,
        source: ParticipantId,
    ) -> Result<(), RoomError> {
        if !self.participants.contains_key(&source) {
            return Err(RoomError::UnknownParticipant(source));
        }
        if self.subscriptions.len() >= self.settings.max_subscriptions {
            return Err(RoomError::TooManySubscriptions {
                max: self.settings.max_subscriptions,
            });
        }
        self.subscriptions
            .insert(subscription_id.clone(), source.clone());
        self.effects.push_back(Effect::AttachSubscription {
            source,
            subscription_id,
        });
        Ok(())
    }

    /// Number of active subscriptions to this participant's media.
    pub fn subscriber_count(&self, participant_id: &str) -> usize {
        self.subscriptions
            .values()
            .filter(|source| source.as_str() == participant_id)
            .count()
    }

    fn join(
        &mut self,
        now: Instant,
        participant_id: ParticipantId,
        role: Role,
        identity: String,
        display_name: String,
    ) -> Result<(), RoomError> {
        if self.participants.contains_key(&participant_id) {
            return Err(RoomError::AlreadyJoined(participant_id));
        }
        if self.participants.len() >= self.settings.max_participants {
            return Err(RoomError::Full {
                max: self.settings.max_participants,
            });
        }
        self.participants.insert(
            participant_id,
            Participant {
                role,
                identity,
                display_name,
                joined_at: now,
                tracks: Vec::new(),
                audio: AudioMix::default(),
            },
        );
        Ok(())
    }

    fn track_started(
        &mut self,
        participant_id: ParticipantId,
        desc: TrackDesc,
    ) -> Result<(), RoomError> {
        let input_id = format!("in{}", self.next_input);
        let live_epoch = self.live_epoch();
        let participant = self
            .participants
            .get_mut(&participant_id)
            .ok_or_else(|| RoomError::UnknownParticipant(participant_id.clone()))?;
        if participant
            .tracks
            .iter()
            .any(|t| t.desc.track_id == desc.track_id)
        {
            return Ok(());
        }
        self.next_input += 1;
        let track = Track {
            desc,
            input_id,
            mixer_addr: None,
        };
        if let Some(epoch) = live_epoch {
            self.effects.push_back(Effect::ToMixer {
                epoch,
                command: add_input_command(&participant_id, participant, &track),
            });
        }
        participant.tracks.push(track);
        Ok(())
    }

    fn track_ended(&mut self, participant_id: &str, track_id: &str) {
        let Some(participant) = self.participants.get_mut(participant_id) else {
            return;
        };
        let Some(pos) = participant
            .tracks
            .iter()
            .position(|t| t.desc.track_id == track_id)
        else {
            return;
        };
        let track = participant.tracks.remove(pos);
        self.forget_old_input(&track.input_id);
        if let Some(epoch) = self.live_epoch() {
            self.effects.push_back(Effect::ToMixer {
                epoch,
                command: Command::RemoveInput {
                    input_id: track.input_id,
                },
            });
        }
    }

    fn leave(&mut self, participant_id: &str) -> Result<(), RoomError> {
        let participant = self
            .participants
            .remove(participant_id)
            .ok_or_else(|| RoomError::UnknownParticipant(participant_id.to_string()))?;
        for track in &participant.tracks {
            self.forget_old_input(&track.input_id);
        }
        if let Some(epoch) = self.live_epoch() {
            for track in &participant.tracks {
                self.effects.push_back(Effect::ToMixer {
                    epoch,
                    command: Command::RemoveInput {
                        input_id: track.input_id.clone(),
                    },
                });
            }
        }
        // Its subscribers lose their source: close them before the source's session.
        let orphaned: Vec<SubscriptionId> = self
            .subscriptions
            .iter()
            .filter(|(_, source)| source.as_str() == participant_id)
            .map(|(id, _)| id.clone())
            .collect();
        for subscription_id in orphaned {
            self.subscriptions.remove(&subscription_id);
            self.effects.push_back(Effect::CloseSubscription {
                source: participant_id.to_string(),
                subscription_id,
            });
        }
        self.effects.push_back(Effect::CloseSession {
            participant_id: participant_id.to_string(),
        });
        Ok(())
    }

    /// Going live starts with a reservation of capacity for the room as it is now.
    fn request_go_live(&mut self) -> Result<(), RoomError> {
        if self.live_epoch().is_some() || self.awaiting_admission {
            return Ok(());
        }
        if self.outputs.is_empty() {
            return Err(RoomError::NoOutputs);
        }
        self.awaiting_admission = true;
        self.effects.push_back(Effect::Reserve {
            video: self.settings.video,
            inputs: self.participant_count(),
        });
        Ok(())
    }

    fn participant_count(&self) -> u32 {
        u32::try_from(self.participants.len()).unwrap_or(u32::MAX)
    }

    /// Keeps the held capacity in step with the broadcast: re-charged when participants come
    /// and go while live, released when it stops or fails.
    fn sync_reservation(&mut self) {
        let Some(charged) = self.reserved_inputs else {
            return;
        };
        if self.live_epoch().is_none() {
            self.reserved_inputs = None;
            self.effects.push_back(Effect::Release);
            return;
        }
        let inputs = self.participant_count();
        if inputs != charged {
            self.reserved_inputs = Some(inputs);
            self.effects.push_back(Effect::Resize {
                video: self.settings.video,
                inputs,
            });
        }
    }

    /// Admitted: the mixer starts with every output.
    fn go_live(&mut self, now: Instant) {
        self.crashes.clear();
        for output in &mut self.outputs {
            output.state = OutputState::Connecting;
            output.reason = None;
            output.bytes_sent = 0;
        }
        let epoch = self.next_epoch();
        self.broadcast = Broadcast::Live {
            epoch,
            mixer: MixerPhase::Starting,
            since: now,
            frames_out: 0,
            restarts: 0,
        };
        self.start_mixer(now, epoch);
    }

    /// Validates and stores a layout; a live mixer gets it at once. Pins and custom tiles must
    /// name participants in the room (a typo would silently show nothing).
    fn set_layout(&mut self, layout: LayoutSpec) -> Result<(), RoomError> {
        layout.validate().map_err(RoomError::InvalidLayout)?;
        let named: Vec<(&str, String)> = match &layout {
            LayoutSpec::Custom { tiles } => tiles
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    (
                        t.participant_id.as_str(),
                        format!("layout.tiles[{i}].participant_id"),
                    )
                })
                .collect(),
            other => other
                .pin()
                .map(|p| (p, "layout.pin".to_string()))
                .into_iter()
                .collect(),
        };
        if let Some((id, field)) = named
            .iter()
            .find(|(id, _)| !self.participants.contains_key(*id))
        {
            return Err(RoomError::InvalidLayout(format!(
                "{field}: no participant {id:?} in this room"
            )));
        }
        self.settings.layout = layout;
        self.send_to_live_mixers(Command::SetLayout {
            layout: self.settings.layout.clone(),
        });
        Ok(())
    }

    /// Validates and stores the look; a live mixer gets it at once.
    fn set_look(&mut self, look: Look) -> Result<(), RoomError> {
        look.validate().map_err(RoomError::InvalidLook)?;
        self.settings.look = look;
        self.send_to_live_mixers(Command::SetLook {
            look: self.mixer_look(),
        });
        Ok(())
    }

    /// The look as the mixer gets it: the slate title defaults to the room name.
    fn mixer_look(&self) -> Look {
        let mut look = self.settings.look.clone();
        if look.title.trim().is_empty() {
            look.title = self.settings.name.clone();
        }
        look
    }

    /// Stores a participant's program gain/mute; a live mixer gets it at once, a new mixer
    /// right after the participant's inputs.
    fn set_audio(
        &mut self,
        participant_id: &str,
        gain: Option<f64>,
        muted: Option<bool>,
    ) -> Result<(), RoomError> {
        let participant = self
            .participants
            .get_mut(participant_id)
            .ok_or_else(|| RoomError::UnknownParticipant(participant_id.to_string()))?;
        let audio = AudioMix {
            gain: gain.unwrap_or(participant.audio.gain),
            muted: muted.unwrap_or(participant.audio.muted),
        };
        audio.validate().map_err(RoomError::InvalidAudio)?;
        participant.audio = audio;
        self.send_to_live_mixers(Command::SetAudio {
            participant_id: participant_id.to_string(),
            audio,
        });
        Ok(())
    }

    /// Stores a new destination in the settings (so a replacement mixer and the next go-live
    /// push to it too) and, while live, hands it to the running mixer.
    fn add_output(&mut self, url: String) -> Result<(), RoomError> {
        if self.outputs.len() >= self.settings.max_outputs {
            return Err(RoomError::TooManyOutputs {
                max: self.settings.max_outputs,
            });
        }
        if let Some(same) = self.outputs.iter().find(|o| o.spec.url == url) {
            return Err(RoomError::DuplicateOutput(same.spec.output_id.clone()));
        }
        let output_id = loop {
            let id = format!("out{}", self.next_output);
            self.next_output += 1;
            if !self.outputs.iter().any(|o| o.spec.output_id == id) {
                break id;
            }
        };
        let spec = OutputSpec::new(output_id, url);
        let live_epoch = self.live_epoch();
        self.settings.outputs.push(spec.clone());
        self.outputs.push(OutputStatus {
            spec: spec.clone(),
            state: if live_epoch.is_some() {
                OutputState::Connecting
            } else {
                OutputState::Idle
            },
            reason: None,
            bytes_sent: 0,
        });
        if let Some(epoch) = live_epoch {
            self.effects.push_back(Effect::ToMixer {
                epoch,
                command: Command::AddOutput { output: spec },
            });
        }
        Ok(())
    }

    fn remove_output(&mut self, output_id: &str) -> Result<(), RoomError> {
        let pos = self
            .outputs
            .iter()
            .position(|o| o.spec.output_id == output_id)
            .ok_or_else(|| RoomError::UnknownOutput(output_id.to_string()))?;
        self.outputs.remove(pos);
        self.settings.outputs.retain(|o| o.output_id != output_id);
        if self.remove_old_output(output_id) {
            return Ok(());
        }
        if let Some(epoch) = self.live_epoch() {
            self.effects.push_back(Effect::ToMixer {
                epoch,
                command: Command::RemoveOutput {
                    output_id: output_id.to_string(),
                },
            });
        }
        Ok(())
    }

    /// The participant the mixer currently features by voice.
    pub fn active_speaker(&self) -> Option<&str> {
        self.active_speaker.as_deref()
    }

    /// A presentational command for the live mixer, and for the one it replaces while a
    /// handover runs (both are on air).
    fn send_to_live_mixers(&mut self, command: Command) {
        self.mirror_to_old_mixer(&command);
        if let Some(epoch) = self.live_epoch() {
            self.effects.push_back(Effect::ToMixer { epoch, command });
        }
    }

    /// A planned move of the mixer is under way (the old one still on air).
    pub fn is_moving(&self) -> bool {
        self.handover.is_some()
    }

    /// The mixer a running handover replaces.
    fn old_mixer_epoch(&self) -> Option<u64> {
        self.handover.as_ref().map(handover::Handover::old_epoch)
    }

    /// How long the room has been live, if it is.
    pub fn live_for(&self, now: Instant) -> Option<Duration> {
        match self.broadcast {
            Broadcast::Live { since, .. } => Some(now.saturating_duration_since(since)),
            _ => None,
        }
    }

    /// Every participant id, e.g. to close all sessions when the room ends.
    pub fn participant_ids(&self) -> Vec<ParticipantId> {
        self.participants.keys().cloned().collect()
    }
}

fn add_input_command(participant_id: &str, participant: &Participant, track: &Track) -> Command {
    Command::AddInput {
        input_id: track.input_id.clone(),
        participant_id: participant_id.to_string(),
        display_name: participant.display_name.clone(),
        codec: track.desc.codec,
        payload_type: track.desc.payload_type,
        clock_rate: track.desc.clock_rate,
    }
}

/// Mixers older than `InputReady.rtp_addr` ran next to serve and listened on loopback only.
fn legacy_mixer_rtp_addr(port: u16) -> SocketAddr {
    SocketAddr::new(costream_mixer::control::DEFAULT_RTP_BIND, port)
}

/// Media kind of a track, for the status view.
pub fn track_kind(track: &Track) -> MediaKind {
    track.desc.codec.kind()
}

#[path = "handover.rs"]
mod handover;

#[path = "mixer_lifecycle.rs"]
mod mixer_lifecycle;

#[path = "recording_session.rs"]
mod recording_session;
pub use recording_session::RecordingSession;

#[cfg(test)]
#[path = "state_tests/mod.rs"]
pub(crate) mod tests;
