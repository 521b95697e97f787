//! What a placement on a worker remembers so that its mixer can outlive serve: when serve is
//! lost (killed, restarted, upgraded) the mixer keeps pushing, and the serve that comes back
//! takes the placement over ([`super::wire::ToWorker::Resume`]) instead of starting a new
//! mixer, so the CDN never sees the publisher leave. Pure: the caller passes `now` and carries
//! out the commands and events returned.
//!
//! - While no serve is attached the cameras are gone (their RTP came through serve): their
//!   video inputs are removed, so each participant's tile shows its name slate instead of a
//!   frozen frame. Their audio inputs stay, which keeps the tiles (and silence is silence).
//! - The serve that takes over starts the room as if the mixer were new. Its `Start` is
//!   answered here from memory (`Ready`, each output's last state) and only the difference in
//!   outputs reaches the mixer; layout, look and audio commands are idempotent and pass.
//! - Its participants come back as new sessions, with new ids. A returning participant is
//!   recognised by display name and replaces its slate at once; the slates nobody claims are
//!   removed after [`HOLD_AFTER_RESUME`]. Events about the left-over inputs are not passed on:
//!   the new serve never knew them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use costream_mixer::control::{Command, Event, MediaKind, OutputSpec};

/// After a takeover, how long the slates of participants who have not come back stay.
pub const HOLD_AFTER_RESUME: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Input {
    participant_id: String,
    display_name: String,
    kind: MediaKind,
}

/// One placement's memory, kept by the worker for as long as the placement lives.
#[derive(Debug, Default)]
pub struct PlacementMemory {
    /// The mixer has been sent `Start`.
    started: bool,
    /// `Ready`'s fields, once the mixer has said it.
    ready: Option<(String, String)>,
    /// What the mixer pushes to now, by output id.
    outputs: BTreeMap<String, OutputSpec>,
    /// Each output's last `Output` event.
    output_events: BTreeMap<String, Event>,
    /// Inputs added by the serve attached now.
    inputs: HashMap<String, Input>,
    /// Inputs left over from a serve that was lost (their media stopped with it).
    left_over: HashMap<String, Input>,
    /// Inputs the mixer was asked to remove for us, until it confirms.
    removing: HashSet<String>,
    /// When the left-over inputs still present are removed (set at a takeover).
    hold_until: Option<Instant>,
}

/// What to do with a command from serve.
#[derive(Debug, Default, PartialEq)]
pub struct Handling {
    /// Send these to the mixer (the command itself, or what replaces it).
    pub to_mixer: Vec<Command>,
    /// Answer serve with these events, as if the mixer had sent them.
    pub to_serve: Vec<Event>,
}

impl PlacementMemory {
    /// Participants mixed for the serve attached now (the worker's admission charge).
    pub fn participants(&self) -> u32 {
        let mut ids: Vec<&str> = self
            .inputs
            .values()
            .chain(self.left_over.values())
            .map(|i| i.participant_id.as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        u32::try_from(ids.len()).unwrap_or(u32::MAX)
    }

    /// A command from the serve attached now.
    pub fn command(&mut self, command: Command) -> Handling {
        let mut handling = Handling::default();
        match &command {
            Command::Start { outputs, .. } if self.started => {
                // A takeover: the pipeline runs. Answer as the mixer did, and only change the
                // outputs that differ.
                if let Some((version, binary)) = &self.ready {
                    handling.to_serve.push(Event::Ready {
                        version: version.clone(),
                        binary: binary.clone(),
                    });
                }
                handling.to_mixer = self.reconcile_outputs(outputs);
                handling
                    .to_serve
                    .extend(self.output_events.values().cloned());
                return handling;
            }
            Command::Start { outputs, .. } => {
                self.started = true;
                self.outputs = outputs
                    .iter()
                    .map(|o| (o.output_id.clone(), o.clone()))
                    .collect();
            }
            Command::AddOutput { output } => {
                self.outputs
                    .insert(output.output_id.clone(), output.clone());
            }
            Command::RemoveOutput { output_id } => {
                self.outputs.remove(output_id);
                self.output_events.remove(output_id);
            }
            Command::AddInput {
                input_id,
                participant_id,
                display_name,
                codec,
                ..
            } => {
                handling.to_mixer = self.claim_slate(display_name);
                self.inputs.insert(
                    input_id.clone(),
                    Input {
                        participant_id: participant_id.clone(),
                        display_name: display_name.clone(),
                        kind: codec.kind(),
                    },
                );
            }
            Command::RemoveInput { input_id } => {
                self.inputs.remove(input_id);
            }
            _ => {}
        }
        handling.to_mixer.push(command);
        handling
    }

    /// An event of the mixer; false when serve must not see it (it is about a left-over input).
    pub fn event(&mut self, event: &Event) -> bool {
        match event {
            Event::Ready { version, binary } => {
                self.ready = Some((version.clone(), binary.clone()));
            }
            Event::Output { output_id, .. } if self.outputs.contains_key(output_id) => {
                self.output_events.insert(output_id.clone(), event.clone());
            }
            Event::OutputRemoved { output_id } => {
                self.output_events.remove(output_id);
            }
            Event::InputRemoved { input_id }
            | Event::InputReady { input_id, .. }
            | Event::KeyframeRequest { input_id }
            | Event::InputVisible { input_id } => {
                let ours =
                    self.left_over.contains_key(input_id) || self.removing.contains(input_id);
                if ours && !self.inputs.contains_key(input_id) {
                    if matches!(event, Event::InputRemoved { .. }) {
                        self.removing.remove(input_id);
                    }
                    return false;
                }
            }
            _ => {}
        }
        true
    }

    /// serve was lost: every input becomes a left-over, and the cameras go (slates instead).
    pub fn serve_lost(&mut self) -> Vec<Command> {
        self.hold_until = None;
        self.left_over.extend(self.inputs.drain());
        self.remove_left_over(|input| input.kind == MediaKind::Video)
    }

    /// A serve took the placement over at `now`.
    pub fn taken_over(&mut self, now: Instant) {
        if !self.left_over.is_empty() {
            self.hold_until = Some(now + HOLD_AFTER_RESUME);
        }
    }

    /// When [`PlacementMemory::expire`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.hold_until
    }

    /// Removes the slates nobody came back for once the hold has passed.
    pub fn expire(&mut self, now: Instant) -> Vec<Command> {
        match self.hold_until {
            Some(until) if now >= until => {
                self.hold_until = None;
                self.remove_left_over(|_| true)
            }
            _ => Vec::new(),
        }
    }

    /// A participant named `display_name` is back: its left-over inputs go.
    fn claim_slate(&mut self, display_name: &str) -> Vec<Command> {
        if display_name.trim().is_empty() || self.hold_until.is_none() {
            return Vec::new();
        }
        self.remove_left_over(|input| input.display_name == display_name)
    }

    /// Asks the mixer to remove the left-over inputs that match (their `InputRemoved` is
    /// swallowed by [`PlacementMemory::event`]).
    fn remove_left_over(&mut self, matches: impl Fn(&Input) -> bool) -> Vec<Command> {
        let mut ids: Vec<String> = self
            .left_over
            .iter()
            .filter(|(_, input)| matches(input))
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        for id in &ids {
            self.left_over.remove(id);
            self.removing.insert(id.clone());
        }
        ids.into_iter()
            .map(|input_id| Command::RemoveInput { input_id })
            .collect()
    }

    fn reconcile_outputs(&mut self, wanted: &[OutputSpec]) -> Vec<Command> {
        let mut commands = Vec::new();
        let wanted: BTreeMap<&str, &OutputSpec> =
            wanted.iter().map(|o| (o.output_id.as_str(), o)).collect();
        let running: Vec<String> = self.outputs.keys().cloned().collect();
        for output_id in running {
            if wanted.get(output_id.as_str()) != self.outputs.get(&output_id).as_ref() {
                self.outputs.remove(&output_id);
                self.output_events.remove(&output_id);
                commands.push(Command::RemoveOutput { output_id });
            }
        }
        for (output_id, spec) in wanted {
            if !self.outputs.contains_key(output_id) {
                self.outputs.insert(output_id.to_string(), spec.clone());
                commands.push(Command::AddOutput {
                    output: spec.clone(),
                });
            }
        }
        commands
    }
}

#[cfg(test)]
mod tests {
    use costream_mixer::control::{Codec, OutputState, VideoSpec};

    use super::*;

    fn add(input_id: &str, participant: &str, name: &str, codec: Codec) -> Command {
        Command::AddInput {
            input_id: input_id.into(),
            participant_id: participant.into(),
            display_name: name.into(),
            codec,
            payload_type: 96,
            clock_rate: if codec == Codec::Opus { 48_000 } else { 90_000 },
        }
    }

    fn start(outputs: &[OutputSpec]) -> Command {
        Command::Start {
            video: VideoSpec::default(),
            outputs: outputs.to_vec(),
            destinations: Default::default(),
        }
    }

    fn live(output_id: &str) -> Event {
        Event::Output {
            output_id: output_id.into(),
            state: OutputState::Live,
            reason: None,
            bytes_sent: 1000,
        }
    }

    fn removed(input_id: &str) -> Command {
        Command::RemoveInput {
            input_id: input_id.into(),
        }
    }

    /// A placement live with Ada (camera + mic) and Bo (mic only), pushing to `cdn`.
    fn live_room() -> (PlacementMemory, OutputSpec) {
        let cdn = OutputSpec::new("out0", "rtmp://cdn/live/key");
        let mut memory = PlacementMemory::default();
        for command in [
            start(std::slice::from_ref(&cdn)),
            add("a-v", "p1", "Ada", Codec::Vp8),
            add("a-a", "p1", "Ada", Codec::Opus),
            add("b-a", "p2", "Bo", Codec::Opus),
        ] {
            let handling = memory.command(command.clone());
            assert_eq!(handling.to_mixer, vec![command], "passed on untouched");
            assert!(handling.to_serve.is_empty());
        }
        let ready = Event::Ready {
            version: "1.2.3".into(),
            binary: "/bin/costream".into(),
        };
        assert!(memory.event(&ready) && memory.event(&live("out0")));
        (memory, cdn)
    }

    #[test]
    fn a_lost_serve_leaves_name_slates_and_a_takeover_is_answered_from_memory() {
        let (mut memory, cdn) = live_room();
        assert_eq!(memory.participants(), 2);
        // The cameras go: Ada's tile shows her slate (her mic input keeps it).
        assert_eq!(memory.serve_lost(), vec![removed("a-v")]);
        assert_eq!(memory.participants(), 2, "the tiles stay");
        assert!(!memory.event(&Event::InputRemoved {
            input_id: "a-v".into()
        }));

        let t0 = Instant::now();
        memory.taken_over(t0);
        // The new serve starts the room as if the mixer were new: nothing reaches the mixer,
        // and it hears Ready and the output's state.
        let handling = memory.command(start(std::slice::from_ref(&cdn)));
        assert!(handling.to_mixer.is_empty(), "{:?}", handling.to_mixer);
        assert_eq!(
            handling.to_serve,
            vec![
                Event::Ready {
                    version: "1.2.3".into(),
                    binary: "/bin/costream".into()
                },
                live("out0")
            ]
        );
        // Ada comes back as a new session: her slate goes as her camera arrives.
        let handling = memory.command(add("a2-v", "p9", "Ada", Codec::Vp8));
        assert_eq!(
            handling.to_mixer,
            vec![removed("a-a"), add("a2-v", "p9", "Ada", Codec::Vp8)]
        );
        // Events of the left-overs are not the new serve's business; its own pass.
        assert!(!memory.event(&Event::InputRemoved {
            input_id: "a-a".into()
        }));
        assert!(!memory.event(&Event::KeyframeRequest {
            input_id: "b-a".into()
        }));
        assert!(memory.event(&Event::KeyframeRequest {
            input_id: "a2-v".into()
        }));
        // Bo does not come back: his slate goes after the hold.
        assert_eq!(memory.next_deadline(), Some(t0 + HOLD_AFTER_RESUME));
        assert!(memory.expire(t0 + HOLD_AFTER_RESUME / 2).is_empty());
        assert_eq!(memory.expire(t0 + HOLD_AFTER_RESUME), vec![removed("b-a")]);
        assert_eq!(memory.next_deadline(), None);
        assert_eq!(memory.participants(), 1);
    }

    #[test]
    fn a_takeover_changes_only_the_outputs_that_differ() {
        let (mut memory, cdn) = live_room();
        memory.serve_lost();
        memory.taken_over(Instant::now());
        // The built-in origin's URL is made anew by a restarted serve: same id, new key.
        let origin_old = OutputSpec::new("origin", "rtmp://127.0.0.1/live/old");
        let origin_new = OutputSpec::new("origin", "rtmp://127.0.0.1/live/new");
        memory.command(Command::AddOutput {
            output: origin_old.clone(),
        });
        let extra = OutputSpec::new("out1", "rtmp://other/live/k");
        let handling = memory.command(start(&[cdn.clone(), origin_new.clone(), extra.clone()]));
        assert_eq!(
            handling.to_mixer,
            vec![
                Command::RemoveOutput {
                    output_id: "origin".into()
                },
                Command::AddOutput { output: origin_new },
                Command::AddOutput { output: extra },
            ]
        );
        // An output the host removed while serve was away is stopped.
        let handling = memory.command(start(std::slice::from_ref(&cdn)));
        assert_eq!(handling.to_mixer.len(), 2, "{:?}", handling.to_mixer);
        assert!(handling
            .to_mixer
            .iter()
            .all(|c| matches!(c, Command::RemoveOutput { .. })));
    }

    #[test]
    fn before_any_takeover_nothing_is_held_or_swallowed() {
        let (mut memory, _) = live_room();
        // A new participant with a name like nobody's slate: plain pass-through.
        let handling = memory.command(add("c-v", "p3", "Ada", Codec::Vp8));
        assert_eq!(handling.to_mixer.len(), 1);
        assert!(memory.event(&Event::InputRemoved {
            input_id: "a-v".into()
        }));
        assert_eq!(memory.next_deadline(), None);
        assert!(memory
            .expire(Instant::now() + HOLD_AFTER_RESUME * 2)
            .is_empty());
        // A mixer that had not started when serve was lost gets the new serve's Start.
        let mut fresh = PlacementMemory::default();
        fresh.serve_lost();
        fresh.taken_over(Instant::now());
        let handling = fresh.command(start(&[]));
        assert_eq!(handling.to_mixer.len(), 1);
        assert!(handling.to_serve.is_empty());
    }
}
