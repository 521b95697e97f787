//! The mixer's life in a live room: starting one with the whole room, replacing it after a
//! crash, a hang or a lost machine, stopping it, and what its events change. A child module of
//! `state` (the same state machine, sans IO), apart from the inputs the API and sessions make.

use std::time::{Duration, Instant};

use costream_mixer::control::{Command, Event, OutputSpec, OutputState};

use super::{
    add_input_command, legacy_mixer_rtp_addr, AudioMix, Broadcast, Effect, MixerPhase,
    ParticipantId, RestartDecision, RoomState, Track,
};

impl RoomState {
    pub(super) fn next_epoch(&mut self) -> u64 {
        self.last_epoch += 1;
        self.last_epoch
    }

    /// Spawns mixer `epoch` and feeds it the room: start, then every known track.
    pub(super) fn start_mixer(&mut self, now: Instant, epoch: u64) {
        let outputs = self.settings.outputs.clone();
        self.start_mixer_as(now, epoch, Effect::SpawnMixer { epoch }, outputs);
    }

    /// `spawn` starts the process; `outputs` are those it pushes from the start.
    pub(super) fn start_mixer_as(
        &mut self,
        now: Instant,
        epoch: u64,
        spawn: Effect,
        outputs: Vec<OutputSpec>,
    ) {
        self.restart_at = None;
        self.last_heard = Some(now);
        self.effects.push_back(spawn);
        self.effects.push_back(Effect::ToMixer {
            epoch,
            command: Command::Start {
                video: self.settings.video,
                outputs,
                destinations: self.settings.destinations.clone(),
            },
        });
        // Before the inputs, so a replacement mixer never shows a frame in the wrong layout.
        self.effects.push_back(Effect::ToMixer {
            epoch,
            command: Command::SetLayout {
                layout: self.settings.layout.clone(),
            },
        });
        self.effects.push_back(Effect::ToMixer {
            epoch,
            command: Command::SetLook {
                look: self.mixer_look(),
            },
        });
        let add_inputs: Vec<Effect> = self
            .participants()
            .into_iter()
            .flat_map(|(participant_id, participant)| {
                let inputs = participant.tracks.iter().map(move |track| Effect::ToMixer {
                    epoch,
                    command: add_input_command(participant_id, participant, track),
                });
                // The host's gain/mute, if changed, before any of its audio is heard.
                let audio = (participant.audio != AudioMix::default()).then(|| Effect::ToMixer {
                    epoch,
                    command: Command::SetAudio {
                        participant_id: participant_id.clone(),
                        audio: participant.audio,
                    },
                });
                audio.into_iter().chain(inputs)
            })
            .collect();
        self.effects.extend(add_inputs);
        self.record_part(epoch);
    }

    /// The machine running the current mixer was lost (a fleet worker died, froze or was cut
    /// off): the room moves to another at once. Not a crash of the mixer, so it neither backs
    /// off nor counts toward giving up; a fleet where no worker can take the room answers the
    /// next launch with a refusal, which does count.
    pub(super) fn worker_lost(&mut self, now: Instant, reason: String) {
        self.replace_mixer(now, RestartDecision::RestartAfter(Duration::ZERO), reason);
    }

    /// The current mixer exited or hung while live: replace it (guests' sessions are untouched),
    /// or end the broadcast as failed in a crash loop.
    pub(super) fn mixer_crashed(&mut self, now: Instant, reason: String) {
        let decision = self.crashes.record(now, &self.policy);
        self.replace_mixer(now, decision, reason);
    }

    pub(super) fn replace_mixer(
        &mut self,
        now: Instant,
        decision: RestartDecision,
        reason: String,
    ) {
        let Broadcast::Live {
            epoch, restarts, ..
        } = self.broadcast
        else {
            return;
        };
        self.abandon_handover();
        self.effects.push_back(Effect::KillMixer { epoch });
        self.detach_from_mixer();
        match decision {
            RestartDecision::GiveUp { count } => {
                self.mixer_failed(format!(
                    "mixer failed {count} times within {} s, giving up; last: {reason}",
                    self.policy.window.as_secs()
                ));
            }
            RestartDecision::RestartAfter(delay) => {
                for output in &mut self.outputs {
                    if output.state != OutputState::Failed {
                        output.state = OutputState::Reconnecting;
                        output.reason = Some(format!("mixer restarting: {reason}"));
                    }
                }
                // A fresh epoch at once, so late events of the dead mixer are ignored.
                let new_epoch = self.next_epoch();
                if let Broadcast::Live {
                    epoch,
                    mixer,
                    restarts: count,
                    ..
                } = &mut self.broadcast
                {
                    *epoch = new_epoch;
                    *mixer = MixerPhase::Restarting;
                    *count = restarts + 1;
                }
                self.restart_at = Some(now + delay);
                self.last_heard = None;
                if delay.is_zero() {
                    self.tick(now);
                }
            }
        }
    }

    /// A heartbeat's frame count: growth (or a new mixer) restarts the stall clock.
    pub(super) fn note_frames(&mut self, now: Instant, epoch: u64, frames: u64) {
        let grew = self
            .frames_progress
            .is_none_or(|p| p.epoch != epoch || frames > p.frames);
        if grew {
            self.frames_progress = Some(super::FramesProgress {
                epoch,
                frames,
                since: now,
            });
        }
    }

    pub(super) fn tick(&mut self, now: Instant) {
        self.handover_tick(now);
        if self.restart_at.is_some_and(|at| at <= now) {
            if let Some(epoch) = self.live_epoch() {
                if let Broadcast::Live { mixer, .. } = &mut self.broadcast {
                    *mixer = MixerPhase::Starting;
                }
                self.start_mixer(now, epoch);
            }
            return;
        }
        let due = |deadline: Option<Instant>| {
            self.restart_at.is_none() && deadline.is_some_and(|deadline| deadline <= now)
        };
        let reason = if due(self.heartbeat_deadline()) {
            let silent_for = self
                .last_heard
                .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
            Some(format!(
                "mixer unresponsive for {:.1} s (hung?)",
                silent_for.as_secs_f64()
            ))
        } else if due(self.output_stall_deadline()) {
            // Heartbeats without frames: the process lives, its pipeline does not flow.
            let stalled_for = self
                .frames_progress
                .map_or(Duration::ZERO, |p| now.saturating_duration_since(p.since));
            Some(format!(
                "mixer put out no program frames for {:.1} s (stalled pipeline)",
                stalled_for.as_secs_f64()
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            if self.successor_on_trial() {
                // A move's successor that hangs is called off: the old mixer is still on air.
                self.successor_failed(now, reason);
            } else {
                self.mixer_crashed(now, reason);
            }
        }
    }

    pub(super) fn stop_live(&mut self) {
        // The mixer's EOS closes the part it writes: the recording ends with the broadcast.
        self.recording = None;
        let Some(epoch) = self.live_epoch() else {
            return;
        };
        self.restart_at = None;
        self.last_heard = None;
        self.active_speaker = None;
        self.abandon_handover();
        self.effects.push_back(Effect::StopMixer { epoch });
        self.detach_from_mixer();
        self.broadcast = Broadcast::Offline;
        for output in &mut self.outputs {
            output.state = OutputState::Idle;
            output.reason = None;
        }
    }

    pub(super) fn mixer_failed(&mut self, reason: String) {
        self.abandon_handover();
        if let Some(epoch) = self.live_epoch() {
            self.effects.push_back(Effect::StopMixer { epoch });
        }
        self.restart_at = None;
        self.last_heard = None;
        self.recording = None;
        self.detach_from_mixer();
        for output in &mut self.outputs {
            if output.state != OutputState::Failed {
                output.state = OutputState::Failed;
                output.reason = Some(format!("mixer stopped: {reason}"));
            }
        }
        self.broadcast = Broadcast::Failed { reason };
    }

    /// Stops forwarding every track to the (old) mixer.
    pub(super) fn detach_from_mixer(&mut self) {
        for (participant_id, participant) in &mut self.participants {
            for track in &mut participant.tracks {
                if track.mixer_addr.take().is_some() {
                    self.effects.push_back(Effect::Forward {
                        participant_id: participant_id.clone(),
                        track_id: track.desc.track_id.clone(),
                        targets: Vec::new(),
                    });
                }
            }
        }
    }

    /// Whose track a mixer input carries.
    pub fn participant_of_input(&self, input_id: &str) -> Option<ParticipantId> {
        self.participants
            .iter()
            .find(|(_, p)| p.tracks.iter().any(|t| t.input_id == input_id))
            .map(|(pid, _)| pid.clone())
    }

    pub(super) fn find_input(&mut self, input_id: &str) -> Option<(ParticipantId, &mut Track)> {
        self.participants.iter_mut().find_map(|(pid, p)| {
            p.tracks
                .iter_mut()
                .find(|t| t.input_id == input_id)
                .map(|t| (pid.clone(), t))
        })
    }

    pub(super) fn mixer_event(&mut self, epoch: u64, event: Event) {
        match event {
            // Said before `Start`; the pool consumes it, nothing for the room.
            Event::Hello { .. } => {}
            Event::Ready { .. } => {
                if let Broadcast::Live { mixer, .. } = &mut self.broadcast {
                    *mixer = MixerPhase::Running;
                }
            }
            Event::InputReady {
                input_id,
                rtp_port,
                rtp_addr,
            } => {
                let Some((participant_id, track)) = self.find_input(&input_id) else {
                    // The track left before the mixer was ready for it.
                    self.effects.push_back(Effect::ToMixer {
                        epoch,
                        command: Command::RemoveInput { input_id },
                    });
                    return;
                };
                let target = rtp_addr.unwrap_or_else(|| legacy_mixer_rtp_addr(rtp_port));
                track.mixer_addr = Some(target);
                let track_id = track.desc.track_id.clone();
                self.effects.push_back(Effect::Forward {
                    participant_id: participant_id.clone(),
                    track_id: track_id.clone(),
                    targets: vec![target],
                });
                self.effects.push_back(Effect::RequestKeyframe {
                    participant_id,
                    track_id,
                });
            }
            // Recordings are the actor's (files and their records); the room only says which
            // mixer writes which part.
            Event::InputRemoved { .. }
            | Event::Recording { .. }
            | Event::OutputRemoved { .. }
            | Event::InputVisible { .. } => {}
            Event::ActiveSpeaker { participant_id } => self.active_speaker = participant_id,
            Event::KeyframeRequest { input_id } => {
                if let Some((participant_id, track)) = self.find_input(&input_id) {
                    let track_id = track.desc.track_id.clone();
                    self.effects.push_back(Effect::RequestKeyframe {
                        participant_id,
                        track_id,
                    });
                }
            }
            Event::Output {
                output_id,
                state,
                reason,
                bytes_sent,
            } => {
                if let Some(output) = self
                    .outputs
                    .iter_mut()
                    .find(|o| o.spec.output_id == output_id)
                {
                    // After a mixer restart the output stays "reconnecting" until it is live
                    // again, rather than flickering through "connecting".
                    let keep_reconnecting = output.state == OutputState::Reconnecting
                        && state == OutputState::Connecting;
                    if !keep_reconnecting {
                        output.state = state;
                        output.reason = reason;
                    }
                    output.bytes_sent = output.bytes_sent.max(bytes_sent);
                }
            }
            Event::Heartbeat {
                frames_out: frames,
                outputs,
                ..
            } => {
                if let Broadcast::Live { frames_out, .. } = &mut self.broadcast {
                    *frames_out = frames;
                }
                for reported in outputs {
                    if let Some(output) = self
                        .outputs
                        .iter_mut()
                        .find(|o| o.spec.output_id == reported.output_id)
                    {
                        output.bytes_sent = output.bytes_sent.max(reported.bytes_sent);
                    }
                }
            }
            // A fatal error (e.g. a missing element) would recur on every restart.
            Event::Fatal { reason } => self.mixer_failed(reason),
        }
    }
}
