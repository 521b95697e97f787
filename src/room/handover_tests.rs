//! The planned move, step by step, as the room's effects show it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use costream_mixer::control::{Codec, Command, Event, LayoutSpec, OutputState};

use super::super::{Broadcast, Effect, Input, MixerPhase, RoomState, TrackDesc};
use crate::room::state::tests::{drain, go_live, ready, settings};
use crate::room::tokens::Role;

const OLD: u64 = 1;
const NEW: u64 = 2;

fn track(track_id: &str, codec: Codec) -> TrackDesc {
    let (payload_type, clock_rate) = match codec {
        Codec::Opus => (111, 48_000),
        _ => (96, 90_000),
    };
    TrackDesc {
        track_id: track_id.into(),
        codec,
        payload_type,
        clock_rate,
    }
}

fn addr(mixer: u64, input: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, mixer as u8], 40_000 + input))
}

fn mixer(room: &mut RoomState, now: Instant, epoch: u64, event: Event) -> Vec<Effect> {
    room.handle(now, Input::Mixer { epoch, event }).unwrap();
    drain(room)
}

fn input_ready(room: &mut RoomState, now: Instant, epoch: u64, input: u16) -> Vec<Effect> {
    let event = Event::InputReady {
        input_id: format!("in{input}"),
        rtp_port: 0,
        rtp_addr: Some(addr(epoch, input)),
    };
    mixer(room, now, epoch, event)
}

/// Live on mixer 1 with two outputs and a guest's video (in0) and audio (in1), running.
fn live_room(now: Instant) -> RoomState {
    let mut room = RoomState::new(settings(2));
    room.handle(
        now,
        Input::Join {
            participant_id: "a".into(),
            role: Role::Guest,
            identity: "a".into(),
            display_name: "A".into(),
        },
    )
    .unwrap();
    for desc in [track("v", Codec::Vp8), track("a", Codec::Opus)] {
        let track = Input::TrackStarted {
            participant_id: "a".into(),
            track: desc,
        };
        room.handle(now, track).unwrap();
    }
    go_live(&mut room, now);
    mixer(&mut room, now, OLD, ready());
    input_ready(&mut room, now, OLD, 0);
    input_ready(&mut room, now, OLD, 1);
    room
}

fn forwards(effects: &[Effect]) -> Vec<(String, Vec<SocketAddr>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Forward {
                track_id, targets, ..
            } => Some((track_id.clone(), targets.clone())),
            _ => None,
        })
        .collect()
}

fn commands_to(effects: &[Effect], to: u64) -> Vec<&Command> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::ToMixer { epoch, command } if *epoch == to => Some(command),
            _ => None,
        })
        .collect()
}

fn output_ids(commands: &[&Command], added: bool) -> Vec<String> {
    commands
        .iter()
        .filter_map(|c| match (c, added) {
            (Command::AddOutput { output }, true) => Some(output.output_id.clone()),
            (Command::RemoveOutput { output_id }, false) => Some(output_id.clone()),
            _ => None,
        })
        .collect()
}

fn live_epoch(room: &RoomState) -> (u64, MixerPhase, u32) {
    match room.broadcast() {
        Broadcast::Live {
            epoch,
            mixer,
            restarts,
            ..
        } => (*epoch, *mixer, *restarts),
        other => panic!("not live: {other:?}"),
    }
}

/// Moves to mixer 2 up to the point where it has every input and shows the video.
fn successor_running(room: &mut RoomState, now: Instant) -> Vec<Effect> {
    room.handle(now, Input::MoveMixer { epoch: OLD }).unwrap();
    drain(room);
    mixer(room, now, NEW, ready());
    input_ready(room, now, NEW, 0);
    input_ready(room, now, NEW, 1);
    let event = Event::InputVisible {
        input_id: "in0".into(),
    };
    mixer(room, now, NEW, event)
}

#[test]
fn a_planned_move_starts_the_successor_first_and_hands_each_output_over_once_released() {
    let now = Instant::now();
    let mut room = live_room(now);
    room.handle(now, Input::MoveMixer { epoch: OLD }).unwrap();
    let started = drain(&mut room);
    assert_eq!(started[0], Effect::SpawnSuccessor { epoch: NEW });
    assert!(
        matches!(commands_to(&started, NEW)[0], Command::Start { outputs, .. } if outputs.is_empty()),
        "the successor starts without outputs: {started:?}"
    );
    let added: Vec<_> = commands_to(&started, NEW)
        .into_iter()
        .filter(|c| matches!(c, Command::AddInput { .. }))
        .collect();
    assert_eq!(added.len(), 2);
    assert!(
        !started
            .iter()
            .any(|e| matches!(e, Effect::StopMixer { .. } | Effect::KillMixer { .. })),
        "the old mixer stays on air: {started:?}"
    );
    assert_eq!(live_epoch(&room), (NEW, MixerPhase::Starting, 0));

    // RTP goes to both mixers until the cut-over.
    mixer(&mut room, now, NEW, ready());
    let fx = input_ready(&mut room, now, NEW, 0);
    assert_eq!(
        forwards(&fx),
        vec![("v".into(), vec![addr(OLD, 0), addr(NEW, 0)])]
    );
    assert!(fx
        .iter()
        .any(|e| matches!(e, Effect::RequestKeyframe { .. })));
    // The host's changes reach both while both are on air.
    room.handle(
        now,
        Input::SetLayout {
            layout: LayoutSpec::Speaker { pin: None },
        },
    )
    .unwrap();
    let fx = drain(&mut room);
    assert_eq!(commands_to(&fx, OLD).len(), 1);
    assert_eq!(commands_to(&fx, NEW).len(), 1);

    // Every input there and the video shown: the outputs leave the old mixer, not yet added.
    let fx = input_ready(&mut room, now, NEW, 1);
    assert!(output_ids(&commands_to(&fx, OLD), false).is_empty());
    let fx = mixer(
        &mut room,
        now,
        NEW,
        Event::InputVisible {
            input_id: "in0".into(),
        },
    );
    assert_eq!(output_ids(&commands_to(&fx, OLD), false), ["out0", "out1"]);
    assert!(output_ids(&commands_to(&fx, NEW), true).is_empty());

    // Each one goes to the successor the moment the old mixer let go of it.
    let released = |id: &str| Event::OutputRemoved {
        output_id: id.into(),
    };
    let fx = mixer(&mut room, now, OLD, released("out0"));
    assert_eq!(output_ids(&commands_to(&fx, NEW), true), ["out0"]);
    assert!(!fx.iter().any(|e| matches!(e, Effect::StopMixer { .. })));
    let fx = mixer(&mut room, now, OLD, released("out1"));
    assert_eq!(output_ids(&commands_to(&fx, NEW), true), ["out1"]);
    assert!(fx.contains(&Effect::StopMixer { epoch: OLD }), "{fx:?}");
    let mut after = forwards(&fx);
    after.sort();
    assert_eq!(
        after,
        vec![
            ("a".into(), vec![addr(NEW, 1)]),
            ("v".into(), vec![addr(NEW, 0)])
        ]
    );

    // The old mixer's exit afterwards is no crash; the room never restarted.
    room.handle(
        now,
        Input::MixerExited {
            epoch: OLD,
            reason: "exit status 0".into(),
            worker_lost: false,
        },
    )
    .unwrap();
    assert!(drain(&mut room).is_empty());
    assert_eq!(live_epoch(&room), (NEW, MixerPhase::Running, 0));
}

#[test]
fn a_successor_that_fails_before_the_cut_over_leaves_the_old_mixer_on_air() {
    let now = Instant::now();
    let mut room = live_room(now);
    room.handle(now, Input::MoveMixer { epoch: OLD }).unwrap();
    drain(&mut room);
    input_ready(&mut room, now, NEW, 0);
    // A guest's new track during the attempt goes to the successor only...
    room.handle(
        now,
        Input::TrackStarted {
            participant_id: "a".into(),
            track: track("v2", Codec::Vp8),
        },
    )
    .unwrap();
    drain(&mut room);
    room.handle(
        now,
        Input::MixerExited {
            epoch: NEW,
            reason: "no worker can take the room".into(),
            worker_lost: false,
        },
    )
    .unwrap();
    let fx = drain(&mut room);
    assert!(fx.contains(&Effect::KillMixer { epoch: NEW }));
    assert!(!fx.iter().any(|e| matches!(e, Effect::StopMixer { .. })));
    assert!(forwards(&fx).contains(&("v".into(), vec![addr(OLD, 0)])));
    // ...and is added to the old mixer now.
    assert!(commands_to(&fx, OLD)
        .iter()
        .any(|c| matches!(c, Command::AddInput { input_id, .. } if input_id == "in2")));
    assert_eq!(live_epoch(&room), (OLD, MixerPhase::Running, 0));
    // The old mixer is the room's mixer again.
    let fx = mixer(
        &mut room,
        now,
        OLD,
        Event::Output {
            output_id: "out0".into(),
            state: OutputState::Reconnecting,
            reason: Some("reset".into()),
            bytes_sent: 5,
        },
    );
    assert!(fx.is_empty());
    assert_eq!(room.outputs()[0].state, OutputState::Reconnecting);
}

#[test]
fn a_successor_not_running_in_time_is_given_up() {
    let now = Instant::now();
    let mut room = live_room(now);
    room.handle(now, Input::MoveMixer { epoch: OLD }).unwrap();
    drain(&mut room);
    let deadline = room.poll_timeout().expect("a deadline");
    assert!(deadline <= now + Duration::from_secs(10));
    room.handle(deadline, Input::Tick).unwrap();
    let fx = drain(&mut room);
    assert!(fx.contains(&Effect::KillMixer { epoch: NEW }), "{fx:?}");
    assert_eq!(live_epoch(&room), (OLD, MixerPhase::Running, 0));
}

#[test]
fn a_move_called_off_does_not_read_the_old_mixers_frame_count_as_a_stall() {
    let now = Instant::now();
    let mut room = live_room(now);
    let beat = |frames_out| Event::Heartbeat {
        frames_out,
        outputs: vec![],
        quality: None,
    };
    mixer(&mut room, now, OLD, beat(300));
    room.handle(now, Input::MoveMixer { epoch: OLD }).unwrap();
    drain(&mut room);
    // The old mixer keeps putting out frames meanwhile; its heartbeats go to the move.
    for n in 1..=9u64 {
        let at = now + Duration::from_secs(n);
        mixer(&mut room, at, OLD, beat(300 + n * 30));
    }
    let deadline = room.poll_timeout().expect("the move's deadline");
    room.handle(deadline, Input::Tick).unwrap();
    let fx = drain(&mut room);
    assert!(fx.contains(&Effect::KillMixer { epoch: NEW }), "{fx:?}");
    assert!(!fx.contains(&Effect::KillMixer { epoch: OLD }), "{fx:?}");
    assert_eq!(live_epoch(&room), (OLD, MixerPhase::Running, 0));
    // Its next heartbeats keep it on air.
    let later = deadline + Duration::from_secs(1);
    mixer(&mut room, later, OLD, beat(700));
    room.handle(later + Duration::from_secs(3), Input::Tick)
        .unwrap();
    let fx = drain(&mut room);
    assert!(fx.is_empty(), "{fx:?}");
}

#[test]
fn a_hidden_input_does_not_hold_the_cut_over_back_for_long() {
    let now = Instant::now();
    let mut room = live_room(now);
    room.handle(now, Input::MoveMixer { epoch: OLD }).unwrap();
    drain(&mut room);
    mixer(&mut room, now, NEW, ready());
    input_ready(&mut room, now, NEW, 0);
    let fx = input_ready(&mut room, now, NEW, 1);
    assert!(output_ids(&commands_to(&fx, OLD), false).is_empty());
    let later = now + Duration::from_secs(2);
    assert_eq!(room.poll_timeout(), Some(later));
    room.handle(later, Input::Tick).unwrap();
    let fx = drain(&mut room);
    assert_eq!(output_ids(&commands_to(&fx, OLD), false), ["out0", "out1"]);
}

#[test]
fn an_old_mixer_that_does_not_let_go_is_killed_and_the_successor_takes_over() {
    let now = Instant::now();
    let mut room = live_room(now);
    successor_running(&mut room, now);
    let later = now + Duration::from_secs(2);
    room.handle(later, Input::Tick).unwrap();
    let fx = drain(&mut room);
    assert!(fx.contains(&Effect::KillMixer { epoch: OLD }), "{fx:?}");
    assert_eq!(output_ids(&commands_to(&fx, NEW), true), ["out0", "out1"]);
    assert_eq!(live_epoch(&room), (NEW, MixerPhase::Running, 0));
}

#[test]
fn an_old_mixer_that_dies_during_the_move_hands_everything_over_at_once() {
    let now = Instant::now();
    let mut room = live_room(now);
    room.handle(now, Input::MoveMixer { epoch: OLD }).unwrap();
    drain(&mut room);
    room.handle(
        now,
        Input::MixerExited {
            epoch: OLD,
            reason: "fenced".into(),
            worker_lost: true,
        },
    )
    .unwrap();
    let fx = drain(&mut room);
    assert_eq!(output_ids(&commands_to(&fx, NEW), true), ["out0", "out1"]);
    assert!(!fx.contains(&Effect::KillMixer { epoch: NEW }));
    assert_eq!(live_epoch(&room).2, 0, "not a restart");
}

#[test]
fn stopping_during_a_move_stops_both_mixers_and_removed_outputs_are_not_handed_over() {
    let now = Instant::now();
    let mut room = live_room(now);
    successor_running(&mut room, now);
    room.handle(
        now,
        Input::RemoveOutput {
            output_id: "out1".into(),
        },
    )
    .unwrap();
    let fx = mixer(
        &mut room,
        now,
        OLD,
        Event::OutputRemoved {
            output_id: "out1".into(),
        },
    );
    assert!(
        output_ids(&commands_to(&fx, NEW), true).is_empty(),
        "{fx:?}"
    );
    room.handle(now, Input::StopLive).unwrap();
    let fx = drain(&mut room);
    assert!(fx.contains(&Effect::StopMixer { epoch: OLD }), "{fx:?}");
    assert!(fx.contains(&Effect::StopMixer { epoch: NEW }), "{fx:?}");
}

#[test]
fn only_a_running_mixer_is_moved() {
    let now = Instant::now();
    let mut room = live_room(now);
    room.handle(now, Input::MoveMixer { epoch: 7 }).unwrap();
    assert!(drain(&mut room).is_empty());
    successor_running(&mut room, now);
    // A second request (or one for the successor still starting) changes nothing.
    room.handle(now, Input::MoveMixer { epoch: OLD }).unwrap();
    room.handle(now, Input::MoveMixer { epoch: NEW }).unwrap();
    assert!(!drain(&mut room)
        .iter()
        .any(|e| matches!(e, Effect::SpawnSuccessor { .. })));
}

#[test]
fn a_successor_that_hangs_after_ready_is_called_off_not_counted_as_a_crash() {
    let now = Instant::now();
    let mut room = live_room(now);
    room.handle(now, Input::MoveMixer { epoch: OLD }).unwrap();
    drain(&mut room);
    mixer(&mut room, now, NEW, ready());
    // Running, then silent past the heartbeat timeout, before it has every input.
    let later = now + Duration::from_secs(5);
    room.handle(later, Input::Tick).unwrap();
    let fx = drain(&mut room);
    assert!(fx.contains(&Effect::KillMixer { epoch: NEW }), "{fx:?}");
    assert!(
        !fx.iter().any(|e| matches!(
            e,
            Effect::StopMixer { epoch: OLD } | Effect::KillMixer { epoch: OLD }
        )),
        "the old mixer stays on air: {fx:?}"
    );
    assert_eq!(live_epoch(&room), (OLD, MixerPhase::Running, 0));
}

#[test]
fn a_late_input_of_the_old_mixer_goes_on_air_there_and_is_not_added_twice() {
    let now = Instant::now();
    let mut room = live_room(now);
    // A track given to the old mixer whose InputReady is still on its way.
    room.handle(
        now,
        Input::TrackStarted {
            participant_id: "a".into(),
            track: track("v2", Codec::Vp8),
        },
    )
    .unwrap();
    drain(&mut room);
    room.handle(now, Input::MoveMixer { epoch: OLD }).unwrap();
    drain(&mut room);
    let fx = input_ready(&mut room, now, NEW, 2);
    assert_eq!(forwards(&fx), vec![("v2".into(), vec![addr(NEW, 2)])]);
    let fx = input_ready(&mut room, now, OLD, 2);
    assert_eq!(
        forwards(&fx),
        vec![("v2".into(), vec![addr(OLD, 2), addr(NEW, 2)])]
    );
    // Called off: the old mixer has it already, no second AddInput.
    room.handle(
        now,
        Input::MixerExited {
            epoch: NEW,
            reason: "gone".into(),
            worker_lost: true,
        },
    )
    .unwrap();
    let fx = drain(&mut room);
    assert!(
        !commands_to(&fx, OLD)
            .iter()
            .any(|c| matches!(c, Command::AddInput { .. })),
        "{fx:?}"
    );
    assert!(forwards(&fx).contains(&("v2".into(), vec![addr(OLD, 2)])));
}
