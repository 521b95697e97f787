//! Outputs added and removed, offline and live.

use super::*;

fn add_output(room: &mut RoomState, now: Instant, url: &str) -> Result<(), RoomError> {
    room.handle(now, Input::AddOutput { url: url.into() })
}

#[test]
fn outputs_added_offline_are_pushed_to_on_the_next_go_live() {
    let t0 = Instant::now();
    let mut room = RoomState::new(settings(1));
    add_output(&mut room, t0, "rtmp://cdn.example/live/second").unwrap();
    assert!(
        drain(&mut room).is_empty(),
        "offline: nothing to tell a mixer"
    );
    let added = room.outputs().last().unwrap();
    assert_eq!(added.spec.output_id, "out1");
    assert_eq!(added.state, OutputState::Idle);
    go_live(&mut room, t0);
    let start = drain(&mut room)
        .into_iter()
        .find_map(|e| match e {
            Effect::ToMixer {
                command: Command::Start { outputs, .. },
                ..
            } => Some(outputs),
            _ => None,
        })
        .expect("Start");
    let ids: Vec<_> = start.iter().map(|o| o.output_id.as_str()).collect();
    assert_eq!(ids, ["out0", "out1"]);
}

#[test]
fn outputs_added_and_removed_live_go_to_the_mixer_and_survive_a_restart() {
    let t0 = Instant::now();
    let mut room = RoomState::new(settings(1));
    go_live(&mut room, t0);
    drain(&mut room);
    add_output(&mut room, t0, "rtmp://cdn.example/live/second").unwrap();
    let fx = drain(&mut room);
    assert!(
        matches!(&fx[..], [Effect::ToMixer { epoch: 1, command: Command::AddOutput { output } }]
            if output.output_id == "out1" && output.url.ends_with("/second")),
        "{fx:?}"
    );
    assert_eq!(room.outputs()[1].state, OutputState::Connecting);

    // A replacement mixer starts with both outputs.
    room.handle(
        t0,
        Input::MixerExited {
            epoch: 1,
            reason: "boom".into(),
            worker_lost: false,
        },
    )
    .unwrap();
    let start = drain(&mut room)
        .into_iter()
        .find_map(|e| match e {
            Effect::ToMixer {
                epoch,
                command: Command::Start { outputs, .. },
            } => Some((epoch, outputs)),
            _ => None,
        })
        .expect("replacement Start");
    assert_eq!(start.0, 2);
    assert_eq!(start.1.len(), 2);

    room.handle(
        t0,
        Input::RemoveOutput {
            output_id: "out0".into(),
        },
    )
    .unwrap();
    assert_eq!(
        drain(&mut room),
        vec![Effect::ToMixer {
            epoch: 2,
            command: Command::RemoveOutput {
                output_id: "out0".into()
            }
        }]
    );
    let ids: Vec<_> = room
        .outputs()
        .iter()
        .map(|o| o.spec.output_id.clone())
        .collect();
    assert_eq!(ids, ["out1"]);
    assert_eq!(room.settings().outputs.len(), 1);
    // Late events about the removed output change nothing.
    room.handle(
        t0,
        Input::Mixer {
            epoch: 2,
            event: Event::OutputRemoved {
                output_id: "out0".into(),
            },
        },
    )
    .unwrap();
    assert_eq!(room.outputs().len(), 1);
}

#[test]
fn output_limits_duplicates_and_unknown_ids_are_refused() {
    let t0 = Instant::now();
    let mut room = RoomState::new(settings(2));
    add_output(&mut room, t0, "rtmp://cdn.example/live/third").unwrap();
    assert_eq!(
        add_output(&mut room, t0, "rtmp://cdn.example/live/fourth"),
        Err(RoomError::TooManyOutputs { max: 3 })
    );
    room.handle(
        t0,
        Input::RemoveOutput {
            output_id: "out2".into(),
        },
    )
    .unwrap();
    assert_eq!(
        add_output(&mut room, t0, "rtmp://127.0.0.1/live/key0"),
        Err(RoomError::DuplicateOutput("out0".into()))
    );
    assert_eq!(
        room.handle(
            t0,
            Input::RemoveOutput {
                output_id: "nope".into()
            }
        ),
        Err(RoomError::UnknownOutput("nope".into()))
    );
    // Ids are never reused, so an old id can't silently name a new destination.
    add_output(&mut room, t0, "rtmp://cdn.example/live/fifth").unwrap();
    assert_eq!(room.outputs().last().unwrap().spec.output_id, "out3");
}
