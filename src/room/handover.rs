//! A planned move of a live room's mixer (make before break): the worker running it is
//! draining, so a successor starts elsewhere while the old mixer stays on air; the successor
//! gets every input (RTP goes to both meanwhile) and shows them; then each output is taken off
//! the old mixer and handed to the successor the moment the old one has let go of it (one stream
//! key takes one publisher), and the old mixer stops.
//!
//! A child module of `state`: it is part of the room's state machine (sans IO), kept apart
//! because the rest of the room never sees a handover.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use costream_mixer::control::{Command, Event, MediaKind};

use super::{track_kind, Broadcast, Effect, MixerPhase, RoomState};

/// The successor must be running with every input by then, or the move is called off (the
/// old mixer never stopped).
const SUCCESSOR_LIMIT: Duration = Duration::from_secs(10);
/// How long the successor may take to show every video input once it has them all; a
/// participant the layout hides never shows, so the cut-over does not wait for it forever.
const VISIBLE_WAIT: Duration = Duration::from_secs(2);
/// The old mixer has this long to let go of its outputs before it is killed.
const RELEASE_LIMIT: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub(super) struct Handover {
    /// The mixer being replaced: on air until the cut-over.
    old_epoch: u64,
    /// Inputs the old mixer has (tracks that joined since go to the successor only).
    old_inputs: BTreeSet<String>,
    /// Outputs the old mixer still pushes.
    old_outputs: BTreeSet<String>,
    /// Where the successor listens for each input.
    successor_addrs: BTreeMap<String, SocketAddr>,
    /// Video inputs the successor has shown in its program.
    visible: BTreeSet<String>,
    successor_ready: bool,
    started: Instant,
    /// Since when every input reached the successor.
    all_inputs_at: Option<Instant>,
    /// Set once the outputs are being taken off the old mixer.
    releasing_since: Option<Instant>,
}

impl Handover {
    /// The next moment `tick` has something to decide.
    pub(super) fn deadline(&self) -> Instant {
        match (self.releasing_since, self.all_inputs_at) {
            (Some(since), _) => since + RELEASE_LIMIT,
            (None, Some(at)) if self.successor_ready => at + VISIBLE_WAIT,
            _ => self.started + SUCCESSOR_LIMIT,
        }
    }

    pub(super) fn old_epoch(&self) -> u64 {
        self.old_epoch
    }

    pub(super) fn successor_addr(&self, input_id: &str) -> Option<SocketAddr> {
        self.successor_addrs.get(input_id).copied()
    }
}

impl RoomState {
    /// The worker running mixer `epoch` asks for the room to move (it is draining). Only a
    /// running mixer is handed over; anything else moves the usual way when its worker exits.
    pub(super) fn begin_handover(&mut self, now: Instant, epoch: u64) {
        let running = matches!(
            self.broadcast,
            Broadcast::Live { epoch: e, mixer: MixerPhase::Running, .. } if e == epoch
        );
        if !running || self.handover.is_some() || self.restart_at.is_some() {
            return;
        }
        // A running mixer was given every track (some may not have answered `InputReady` yet).
        let old_inputs = self
            .participants
            .values()
            .flat_map(|p| &p.tracks)
            .map(|t| t.input_id.clone())
            .collect();
        let old_outputs = self
            .outputs
            .iter()
            .map(|o| o.spec.output_id.clone())
            .collect();
        let successor = self.next_epoch();
        if let Broadcast::Live {
            epoch: live, mixer, ..
        } = &mut self.broadcast
        {
            *live = successor;
            *mixer = MixerPhase::Starting;
        }
        self.handover = Some(Handover {
            old_epoch: epoch,
            old_inputs,
            old_outputs,
            successor_addrs: BTreeMap::new(),
            visible: BTreeSet::new(),
            successor_ready: false,
            started: now,
            all_inputs_at: None,
            releasing_since: None,
        });
        // Without outputs: the successor gets each one only once the old mixer has let go.
        self.start_mixer_as(
            now,
            successor,
            Effect::SpawnSuccessor { epoch: successor },
            Vec::new(),
        );
    }

    /// An event of the successor while the handover runs: its input addresses and progress go
    /// to the handover, the rest to the usual handling.
    pub(super) fn successor_event(&mut self, now: Instant, epoch: u64, event: Event) {
        let Some(handover) = self.handover.as_mut() else {
            return self.mixer_event(epoch, event);
        };
        match event {
            Event::InputReady {
                input_id,
                rtp_port,
                rtp_addr,
            } => {
                let target = rtp_addr.unwrap_or_else(|| super::legacy_mixer_rtp_addr(rtp_port));
                let Some((participant_id, track)) = self.find_input(&input_id) else {
                    self.effects.push_back(Effect::ToMixer {
                        epoch,
                        command: Command::RemoveInput { input_id },
                    });
                    return;
                };
                // Both mixers get the track until the cut-over.
                let targets = track.mixer_addr.into_iter().chain([target]).collect();
                let track_id = track.desc.track_id.clone();
                if let Some(handover) = self.handover.as_mut() {
                    handover.successor_addrs.insert(input_id, target);
                }
                self.effects.push_back(Effect::Forward {
                    participant_id: participant_id.clone(),
                    track_id: track_id.clone(),
                    targets,
                });
                self.effects.push_back(Effect::RequestKeyframe {
                    participant_id,
                    track_id,
                });
            }
            Event::InputVisible { input_id } => {
                handover.visible.insert(input_id);
            }
            Event::Ready { .. } => {
                handover.successor_ready = true;
                self.mixer_event(epoch, event);
            }
            Event::Fatal { reason } => return self.successor_failed(now, reason),
            other => self.mixer_event(epoch, other),
        }
        self.advance_handover(now);
    }

    /// An event of the old mixer while it is still on air.
    pub(super) fn old_mixer_event(&mut self, now: Instant, event: Event) {
        let Some(handover) = self.handover.as_mut() else {
            return;
        };
        let old_epoch = handover.old_epoch;
        let on_air = handover.releasing_since.is_none();
        match event {
            // A track it was given just before the move: it goes on air there too meanwhile.
            Event::InputReady {
                input_id,
                rtp_port,
                rtp_addr,
            } => {
                let target = rtp_addr.unwrap_or_else(|| super::legacy_mixer_rtp_addr(rtp_port));
                let successor = handover.successor_addrs.get(&input_id).copied();
                let Some((participant_id, track)) = self.find_input(&input_id) else {
                    self.effects.push_back(Effect::ToMixer {
                        epoch: old_epoch,
                        command: Command::RemoveInput { input_id },
                    });
                    return;
                };
                track.mixer_addr = Some(target);
                let track_id = track.desc.track_id.clone();
                self.effects.push_back(Effect::Forward {
                    participant_id: participant_id.clone(),
                    track_id: track_id.clone(),
                    targets: std::iter::once(target).chain(successor).collect(),
                });
                self.effects.push_back(Effect::RequestKeyframe {
                    participant_id,
                    track_id,
                });
            }
            Event::OutputRemoved { output_id } => {
                if handover.old_outputs.remove(&output_id) {
                    self.hand_output_to_successor(&output_id);
                }
                self.advance_handover(now);
            }
            // Its outputs are still the room's until released (the successor reports only those
            // it has).
            Event::Output { ref output_id, .. }
                if on_air && handover.old_outputs.contains(output_id) =>
            {
                self.mixer_event(old_epoch, event);
            }
            Event::KeyframeRequest { .. } | Event::ActiveSpeaker { .. } => {
                self.mixer_event(old_epoch, event);
            }
            Event::Fatal { .. } => self.old_mixer_gone(),
            _ => {}
        }
    }

    /// The old mixer died before the cut-over: the successor takes every output now.
    pub(super) fn old_mixer_gone(&mut self) {
        let Some(handover) = self.handover.as_mut() else {
            return;
        };
        let outputs = std::mem::take(&mut handover.old_outputs);
        for output_id in outputs {
            self.hand_output_to_successor(&output_id);
        }
        self.finish_handover();
    }

    /// The successor exited or failed. Before the cut-over the move is called off and the old
    /// mixer simply carries on; after it, the successor's loss is an ordinary crash.
    pub(super) fn successor_failed(&mut self, now: Instant, reason: String) {
        let Some(handover) = self.handover.take() else {
            return;
        };
        let successor = self.live_epoch();
        if let Some(epoch) = successor {
            self.effects.push_back(Effect::KillMixer { epoch });
        }
        if handover.releasing_since.is_none() {
            if let Broadcast::Live { epoch, mixer, .. } = &mut self.broadcast {
                *epoch = handover.old_epoch;
                *mixer = MixerPhase::Running;
            }
            self.last_heard = Some(now);
            // Its heartbeats went to the move meanwhile: its frame count starts anew from the
            // next one (a stale count would read as a stall and kill the mixer on air).
            self.frames_progress = None;
            self.forward_to_one_mixer(&handover, false);
            // Tracks that started during the attempt are not on the old mixer yet.
            let joined_since: Vec<Effect> = self
                .participants
                .iter()
                .flat_map(|(participant_id, participant)| {
                    participant
                        .tracks
                        .iter()
                        .filter(|t| !handover.old_inputs.contains(&t.input_id))
                        .map(move |track| Effect::ToMixer {
                            epoch: handover.old_epoch,
                            command: super::add_input_command(participant_id, participant, track),
                        })
                })
                .collect();
            self.effects.extend(joined_since);
            return;
        }
        // Some outputs already left the old mixer: stop it, and recover as after any crash.
        self.effects.push_back(Effect::StopMixer {
            epoch: handover.old_epoch,
        });
        self.forward_to_one_mixer(&handover, true);
        self.mixer_crashed(
            now,
            format!("mixer failed while taking the room over: {reason}"),
        );
    }

    /// The broadcast stops, fails or restarts while a handover runs: the old mixer goes too.
    pub(super) fn abandon_handover(&mut self) {
        let Some(handover) = self.handover.take() else {
            return;
        };
        self.effects.push_back(Effect::StopMixer {
            epoch: handover.old_epoch,
        });
        // Tracks only the successor knew are detached here; the others by `detach_from_mixer`.
        for (participant_id, participant) in &self.participants {
            for track in &participant.tracks {
                if track.mixer_addr.is_none()
                    && handover.successor_addrs.contains_key(&track.input_id)
                {
                    self.effects.push_back(Effect::Forward {
                        participant_id: participant_id.clone(),
                        track_id: track.desc.track_id.clone(),
                        targets: Vec::new(),
                    });
                }
            }
        }
    }

    /// Time passed: call the move off, cut over without waiting any longer, or kill an old
    /// mixer that does not let go.
    pub(super) fn handover_tick(&mut self, now: Instant) {
        let Some(handover) = self.handover.as_ref() else {
            return;
        };
        if now < handover.deadline() {
            return;
        }
        if handover.releasing_since.is_some() {
            self.effects.push_back(Effect::KillMixer {
                epoch: handover.old_epoch,
            });
            return self.old_mixer_gone();
        }
        if handover.successor_ready && handover.all_inputs_at.is_some() {
            return self.release_old_outputs(now);
        }
        self.successor_failed(
            now,
            format!(
                "not running with every input within {} s",
                SUCCESSOR_LIMIT.as_secs()
            ),
        );
    }

    /// A handover runs and the old mixer still has the outputs: the successor is on trial.
    pub(super) fn successor_on_trial(&self) -> bool {
        self.handover
            .as_ref()
            .is_some_and(|h| h.releasing_since.is_none())
    }

    /// Layout, look and audio changes reach the old mixer too while it is on air.
    pub(super) fn mirror_to_old_mixer(&mut self, command: &Command) {
        if let Some(handover) = &self.handover {
            if handover.releasing_since.is_none() {
                self.effects.push_back(Effect::ToMixer {
                    epoch: handover.old_epoch,
                    command: command.clone(),
                });
            }
        }
    }

    /// The host removed an output: if the old mixer still pushes it, it stops there (and is not
    /// handed over). Returns whether the old mixer had it.
    pub(super) fn remove_old_output(&mut self, output_id: &str) -> bool {
        let Some(handover) = self.handover.as_mut() else {
            return false;
        };
        if !handover.old_outputs.remove(output_id) {
            return false;
        }
        if handover.releasing_since.is_none() {
            self.effects.push_back(Effect::ToMixer {
                epoch: handover.old_epoch,
                command: Command::RemoveOutput {
                    output_id: output_id.to_string(),
                },
            });
        }
        true
    }

    /// A track ended or its participant left: the old mixer forgets it too.
    pub(super) fn forget_old_input(&mut self, input_id: &str) {
        if let Some(handover) = self.handover.as_mut() {
            handover.successor_addrs.remove(input_id);
            handover.visible.remove(input_id);
            if handover.old_inputs.remove(input_id) && handover.releasing_since.is_none() {
                self.effects.push_back(Effect::ToMixer {
                    epoch: handover.old_epoch,
                    command: Command::RemoveInput {
                        input_id: input_id.to_string(),
                    },
                });
            }
        }
    }

    /// Moves on when the successor is ready for it: every input there and every video input
    /// shown → take the outputs off the old mixer; every output handed over → done.
    fn advance_handover(&mut self, now: Instant) {
        let tracks: Vec<(String, MediaKind)> = self
            .participants
            .values()
            .flat_map(|p| &p.tracks)
            .map(|t| (t.input_id.clone(), track_kind(t)))
            .collect();
        let Some(handover) = self.handover.as_mut() else {
            return;
        };
        if handover.releasing_since.is_some() {
            if handover.old_outputs.is_empty() {
                self.finish_handover();
            }
            return;
        }
        let all_inputs = tracks
            .iter()
            .all(|(input_id, _)| handover.successor_addrs.contains_key(input_id));
        if !all_inputs {
            handover.all_inputs_at = None;
            return;
        }
        let all_inputs_at = *handover.all_inputs_at.get_or_insert(now);
        let all_shown = tracks
            .iter()
            .filter(|(_, kind)| *kind == MediaKind::Video)
            .all(|(input_id, _)| handover.visible.contains(input_id));
        if handover.successor_ready && (all_shown || now >= all_inputs_at + VISIBLE_WAIT) {
            self.release_old_outputs(now);
        }
    }

    /// Asks the old mixer to stop pushing each output; each goes to the successor once the old
    /// mixer says it let go (`OutputRemoved`).
    fn release_old_outputs(&mut self, now: Instant) {
        let Some(handover) = self.handover.as_mut() else {
            return;
        };
        handover.releasing_since = Some(now);
        let old_epoch = handover.old_epoch;
        let outputs: Vec<String> = handover.old_outputs.iter().cloned().collect();
        if outputs.is_empty() {
            return self.finish_handover();
        }
        for output_id in outputs {
            self.effects.push_back(Effect::ToMixer {
                epoch: old_epoch,
                command: Command::RemoveOutput { output_id },
            });
        }
    }

    fn hand_output_to_successor(&mut self, output_id: &str) {
        let (Some(epoch), Some(output)) = (
            self.live_epoch(),
            self.outputs.iter().find(|o| o.spec.output_id == output_id),
        ) else {
            return;
        };
        self.effects.push_back(Effect::ToMixer {
            epoch,
            command: Command::AddOutput {
                output: output.spec.clone(),
            },
        });
    }

    /// Every output is on the successor: RTP goes to it alone, the old mixer stops.
    fn finish_handover(&mut self) {
        let Some(handover) = self.handover.take() else {
            return;
        };
        self.effects.push_back(Effect::StopMixer {
            epoch: handover.old_epoch,
        });
        self.forward_to_one_mixer(&handover, true);
    }

    /// Ends the double forwarding: to the successor's addresses (`successor`), or back to the
    /// old mixer's alone (the move was called off).
    fn forward_to_one_mixer(&mut self, handover: &Handover, successor: bool) {
        for (participant_id, participant) in &mut self.participants {
            for track in &mut participant.tracks {
                let Some(new_addr) = handover.successor_addr(&track.input_id) else {
                    continue;
                };
                if successor {
                    track.mixer_addr = Some(new_addr);
                }
                self.effects.push_back(Effect::Forward {
                    participant_id: participant_id.clone(),
                    track_id: track.desc.track_id.clone(),
                    targets: track.mixer_addr.into_iter().collect(),
                });
            }
        }
    }
}

#[cfg(test)]
#[path = "handover_tests.rs"]
mod tests;
