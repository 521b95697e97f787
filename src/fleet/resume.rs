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
//! - A new serve numbers its inputs from `in0` again, as the lost one did: each takeover is a
//!   new generation, whose input ids are suffixed `-g<generation>` towards the mixer (and the
//!   suffix stripped from the mixer's events), so they never meet a left-over's id.

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
    /// Takeovers so far: the attached serve's input ids carry it towards the mixer.
    generation: u32,
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
    /// The mixer has been sent `Start` (nothing to keep for a serve that never started it).
    pub fn started(&self) -> bool {
        self.started
    }

    /// The mixer's id of the attached serve's input `input_id`.
    fn mixer_id(&self, input_id: &str) -> String {
        match self.generation {
            0 => input_id.to_string(),
            generation => format!("{input_id}-g{generation}"),
        }
    }

    /// The attached serve's id of the mixer's input `mixer_id`.
    fn serve_id(&self, mixer_id: &str) -> String {
        let suffix = format!("-g{}", self.generation);
        match self.generation {
            0 => mixer_id.to_string(),
            _ => mixer_id
                .strip_suffix(suffix.as_str())
                .unwrap_or(mixer_id)
                .to_string(),
        }
    }

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
                payload_type,
                clock_rate,
            } => {
                handling.to_mixer = self.claim_slate(display_name);
                let mixer_id = self.mixer_id(input_id);
                self.inputs.insert(
                    mixer_id.clone(),
                    Input {
                        participant_id: participant_id.clone(),
                        display_name: display_name.clone(),
                        kind: codec.kind(),
                    },
                );
                handling.to_mixer.push(Command::AddInput {
                    input_id: mixer_id,
                    participant_id: participant_id.clone(),
                    display_name: display_name.clone(),
                    codec: *codec,
                    payload_type: *payload_type,
                    clock_rate: *clock_rate,
                });
                return handling;
            }
            Command::RemoveInput { input_id } => {
                let mixer_id = self.mixer_id(input_id);
                self.inputs.remove(&mixer_id);
                handling
                    .to_mixer
                    .push(Command::RemoveInput { input_id: mixer_id });
                return handling;
            }
            _ => {}
        }
        handling.to_mixer.push(command);
        handling
    }

    /// An event of the mixer as the attached serve must see it; `None` when it must not (it is
    /// about a left-over input).
    pub fn event(&mut self, event: Event) -> Option<Event> {
        match &event {
            Event::Ready { version, binary } => {
                self.ready = Some((version.clone(), binary.clone()));
            }
            Event::Output { output_id, .. } if self.outputs.contains_key(output_id) => {
                self.output_events.insert(output_id.clone(), event.clone());
            }
            Event::OutputRemoved { output_id } => {
                self.output_events.remove(output_id);
            }
            _ => {}
        }
        let Some(mixer_id) = input_of(&event) else {
            return Some(event);
        };
        if self.left_over.contains_key(mixer_id) || self.removing.contains(mixer_id) {
            if matches!(event, Event::InputRemoved { .. }) {
                let mixer_id = mixer_id.to_string();
                self.removing.remove(&mixer_id);
            }
            return None;
        }
        let serve_id = self.serve_id(mixer_id);
        Some(match event {
            Event::InputReady {
                rtp_port, rtp_addr, ..
            } => Event::InputReady {
                input_id: serve_id,
                rtp_port,
                rtp_addr,
            },
            Event::InputRemoved { .. } => Event::InputRemoved { input_id: serve_id },
            Event::KeyframeRequest { .. } => Event::KeyframeRequest { input_id: serve_id },
            Event::InputVisible { .. } => Event::InputVisible { input_id: serve_id },
            other => other,
        })
    }

    /// serve was lost: every input becomes a left-over, and the cameras go (slates instead).
    pub fn serve_lost(&mut self) -> Vec<Command> {
        self.hold_until = None;
        self.left_over.extend(self.inputs.drain());
        self.remove_left_over(|input| input.kind == MediaKind::Video)
    }

    /// A serve took the placement over at `now`.
    pub fn taken_over(&mut self, now: Instant) {
        self.generation += 1;
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

/// The input an event is about.
fn input_of(event: &Event) -> Option<&str> {
    match event {
        Event::InputRemoved { input_id }
        | Event::InputReady { input_id, .. }
        | Event::KeyframeRequest { input_id }
        | Event::InputVisible { input_id } => Some(input_id),
        _ => None,
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

    fn input_removed(input_id: &str) -> Event {
        Event::InputRemoved {
            input_id: input_id.into(),
        }
    }

    fn keyframe(input_id: &str) -> Event {
        Event::KeyframeRequest {
            input_id: input_id.into(),
        }
    }

    /// A placement live with Ada (camera `in0` + mic `in1`) and Bo (mic `in2`), numbered as
    /// serve numbers them, pushing to `cdn`.
    fn live_room() -> (PlacementMemory, OutputSpec) {
        let cdn = OutputSpec::new("out0", "rtmp://cdn/live/key");
        let mut memory = PlacementMemory::default();
        for command in [
            start(std::slice::from_ref(&cdn)),
            add("in0", "p1", "Ada", Codec::Vp8),
            add("in1", "p1", "Ada", Codec::Opus),
            add("in2", "p2", "Bo", Codec::Opus),
        ] {
            let handling = memory.command(command.clone());
            assert_eq!(handling.to_mixer, vec![command], "passed on untouched");
            assert!(handling.to_serve.is_empty());
        }
        let ready = Event::Ready {
            version: "1.2.3".into(),
            binary: "/bin/costream".into(),
        };
        assert_eq!(memory.event(ready.clone()), Some(ready));
        assert_eq!(memory.event(live("out0")), Some(live("out0")));
        assert_eq!(memory.event(keyframe("in0")), Some(keyframe("in0")));
        (memory, cdn)
    }

    #[test]
    fn a_lost_serve_leaves_name_slates_and_a_takeover_is_answered_from_memory() {
        let (mut memory, cdn) = live_room();
        assert!(memory.started());
        assert_eq!(memory.participants(), 2);
        // The cameras go: Ada's tile shows her slate (her mic input keeps it).
        assert_eq!(memory.serve_lost(), vec![removed("in0")]);
        assert_eq!(memory.participants(), 2, "the tiles stay");
        assert_eq!(memory.event(input_removed("in0")), None);

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
        // Bo comes back first, numbered from in0 again: his own slate (in2) goes, and his ids
        // never meet Ada's left-over mic (in1).
        let handling = memory.command(add("in0", "p8", "Bo", Codec::Vp8));
        assert_eq!(
            handling.to_mixer,
            vec![removed("in2"), add("in0-g1", "p8", "Bo", Codec::Vp8)]
        );
        let handling = memory.command(add("in1", "p8", "Bo", Codec::Opus));
        assert_eq!(
            handling.to_mixer,
            vec![add("in1-g1", "p8", "Bo", Codec::Opus)]
        );
        // The mixer's events come back under the new serve's ids; the left-overs' are not
        // the new serve's business.
        let ready = Event::InputReady {
            input_id: "in1-g1".into(),
            rtp_port: 5000,
            rtp_addr: None,
        };
        assert_eq!(
            memory.event(ready),
            Some(Event::InputReady {
                input_id: "in1".into(),
                rtp_port: 5000,
                rtp_addr: None
            })
        );
        assert_eq!(memory.event(input_removed("in2")), None);
        assert_eq!(memory.event(keyframe("in1")), None, "Ada's left-over mic");
        assert_eq!(memory.event(keyframe("in0-g1")), Some(keyframe("in0")));
        // The new serve removes its own input by its own id.
        let handling = memory.command(removed("in0"));
        assert_eq!(handling.to_mixer, vec![removed("in0-g1")]);
        assert_eq!(
            memory.event(input_removed("in0-g1")),
            Some(input_removed("in0"))
        );
        // Ada does not come back: her slate goes after the hold.
        assert_eq!(memory.next_deadline(), Some(t0 + HOLD_AFTER_RESUME));
        assert!(memory.expire(t0 + HOLD_AFTER_RESUME / 2).is_empty());
        assert_eq!(memory.expire(t0 + HOLD_AFTER_RESUME), vec![removed("in1")]);
        assert_eq!(memory.next_deadline(), None);
        assert_eq!(memory.participants(), 1);
    }

    #[test]
    fn a_second_loss_keeps_the_new_generation_apart() {
        let (mut memory, _) = live_room();
        memory.serve_lost();
        memory.taken_over(Instant::now());
        memory.command(add("in0", "p9", "Ada", Codec::Vp8));
        memory.command(add("in1", "p9", "Ada", Codec::Opus));
        // The second serve is lost too, then a third takes over.
        assert_eq!(memory.serve_lost(), vec![removed("in0-g1")]);
        memory.taken_over(Instant::now());
        let handling = memory.command(add("in1", "p10", "Ada", Codec::Opus));
        assert_eq!(
            handling.to_mixer,
            vec![removed("in1-g1"), add("in1-g2", "p10", "Ada", Codec::Opus)]
        );
        assert_eq!(memory.event(input_removed("in1-g1")), None);
        assert_eq!(memory.event(keyframe("in1-g2")), Some(keyframe("in1")));
    }

    #[test]
    fn a_takeover_changes_only_the_outputs_that_differ() {
        let cdn = OutputSpec::new("out0", "rtmp://cdn/live/key");
        // The built-in origin's URL is made anew by a restarted serve: same id, new key.
        let origin_old = OutputSpec::new("origin", "rtmp://127.0.0.1/live/old");
        let origin_new = OutputSpec::new("origin", "rtmp://127.0.0.1/live/new");
        let gone = OutputSpec::new("out1", "rtmp://other/live/k");
        let mut memory = PlacementMemory::default();
        memory.command(start(&[cdn.clone(), origin_old, gone]));
        memory.serve_lost();
        memory.taken_over(Instant::now());
        let added = OutputSpec::new("out2", "rtmp://third/live/k");
        let handling = memory.command(start(&[cdn, origin_new.clone(), added.clone()]));
        assert_eq!(
            handling.to_mixer,
            vec![
                Command::RemoveOutput {
                    output_id: "origin".into()
                },
                Command::RemoveOutput {
                    output_id: "out1".into()
                },
                Command::AddOutput { output: origin_new },
                Command::AddOutput { output: added },
            ]
        );
        assert!(handling.to_serve.is_empty(), "the mixer never said Ready");
    }

    #[test]
    fn before_any_takeover_nothing_is_held_or_swallowed() {
        let (mut memory, _) = live_room();
        // A new participant with a name like nobody's slate: plain pass-through.
        let handling = memory.command(add("in3", "p3", "Ada", Codec::Vp8));
        assert_eq!(handling.to_mixer, vec![add("in3", "p3", "Ada", Codec::Vp8)]);
        assert_eq!(
            memory.event(input_removed("in0")),
            Some(input_removed("in0"))
        );
        assert_eq!(memory.next_deadline(), None);
        assert!(memory
            .expire(Instant::now() + HOLD_AFTER_RESUME * 2)
            .is_empty());
        // A mixer that had not started when serve was lost gets the new serve's Start.
        let mut fresh = PlacementMemory::default();
        assert!(!fresh.started());
        fresh.serve_lost();
        fresh.taken_over(Instant::now());
        let handling = fresh.command(start(&[]));
        assert_eq!(handling.to_mixer.len(), 1);
        assert!(handling.to_serve.is_empty());
    }
}
