use super::*;
use costream_mixer::control::OutputBytes;

fn settings(outputs: usize) -> RoomSettings {
    RoomSettings {
        name: "test".into(),
        video: VideoSpec::default(),
        outputs: (0..outputs)
            .map(|i| OutputSpec {
                output_id: format!("out{i}"),
                url: format!("rtmp://127.0.0.1/live/key{i}"),
            })
            .collect(),
        max_participants: 3,
    }
}

fn vp8(track_id: &str) -> TrackDesc {
    TrackDesc {
        track_id: track_id.into(),
        codec: Codec::Vp8,
        payload_type: 96,
        clock_rate: 90_000,
    }
}

fn opus(track_id: &str) -> TrackDesc {
    TrackDesc {
        track_id: track_id.into(),
        codec: Codec::Opus,
        payload_type: 111,
        clock_rate: 48_000,
    }
}

fn drain(room: &mut RoomState) -> Vec<Effect> {
    std::iter::from_fn(|| room.poll_effect()).collect()
}

fn join(room: &mut RoomState, now: Instant, id: &str, tracks: &[TrackDesc]) {
    room.handle(
        now,
        Input::Join {
            participant_id: id.into(),
            role: Role::Guest,
            display_name: id.to_uppercase(),
        },
    )
    .unwrap();
    for track in tracks {
        room.handle(
            now,
            Input::TrackStarted {
                participant_id: id.into(),
                track: track.clone(),
            },
        )
        .unwrap();
    }
}

fn input_ids(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::ToMixer {
                command: Command::AddInput { input_id, .. },
                ..
            } => Some(input_id.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn tracks_before_go_live_do_nothing_until_live() {
    let now = Instant::now();
    let mut room = RoomState::new(settings(1));
    join(&mut room, now, "a", &[vp8("v"), opus("a")]);
    assert!(drain(&mut room).is_empty());

    room.handle(now, Input::GoLive).unwrap();
    let effects = drain(&mut room);
    assert_eq!(effects[0], Effect::SpawnMixer { epoch: 1 });
    assert!(matches!(
        &effects[1],
        Effect::ToMixer { epoch: 1, command: Command::Start { outputs, .. } } if outputs.len() == 1
    ));
    assert_eq!(input_ids(&effects), vec!["in0", "in1"]);
    assert_eq!(room.outputs()[0].state, OutputState::Connecting);
}

#[test]
fn input_ready_forwards_rtp_and_asks_for_a_keyframe() {
    let now = Instant::now();
    let mut room = RoomState::new(settings(1));
    room.handle(now, Input::GoLive).unwrap();
    drain(&mut room);
    join(&mut room, now, "a", &[vp8("v")]);
    assert_eq!(input_ids(&drain(&mut room)), vec!["in0"]);

    room.handle(
        now,
        Input::Mixer {
            epoch: 1,
            event: Event::InputReady {
                input_id: "in0".into(),
                rtp_port: 40000,
            },
        },
    )
    .unwrap();
    assert_eq!(
        drain(&mut room),
        vec![
            Effect::Forward {
                participant_id: "a".into(),
                track_id: "v".into(),
                targets: vec!["127.0.0.1:40000".parse().unwrap()],
            },
            Effect::RequestKeyframe {
                participant_id: "a".into(),
                track_id: "v".into(),
            },
        ]
    );
}

#[test]
fn leaving_while_live_removes_inputs_and_closes_the_session() {
    let now = Instant::now();
    let mut room = RoomState::new(settings(1));
    join(&mut room, now, "a", &[vp8("v"), opus("a")]);
    room.handle(now, Input::GoLive).unwrap();
    drain(&mut room);

    room.handle(
        now,
        Input::Leave {
            participant_id: "a".into(),
        },
    )
    .unwrap();
    let effects = drain(&mut room);
    let removed: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::ToMixer {
                command: Command::RemoveInput { input_id },
                ..
            } => Some(input_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(removed, vec!["in0", "in1"]);
    assert_eq!(
        effects.last(),
        Some(&Effect::CloseSession {
            participant_id: "a".into()
        })
    );
    assert!(room.participants().is_empty());
}

#[test]
fn events_from_an_old_mixer_are_ignored() {
    let now = Instant::now();
    let mut room = RoomState::new(settings(1));
    room.handle(now, Input::GoLive).unwrap();
    room.handle(now, Input::StopLive).unwrap();
    room.handle(now, Input::GoLive).unwrap();
    drain(&mut room);

    room.handle(
        now,
        Input::MixerExited {
            epoch: 1,
            reason: "killed".into(),
        },
    )
    .unwrap();
    assert!(matches!(room.broadcast(), Broadcast::Live { epoch: 2, .. }));
    room.handle(
        now,
        Input::Mixer {
            epoch: 1,
            event: Event::Output {
                output_id: "out0".into(),
                state: OutputState::Failed,
                reason: Some("old".into()),
                bytes_sent: 0,
            },
        },
    )
    .unwrap();
    assert_eq!(room.outputs()[0].state, OutputState::Connecting);
}

#[test]
fn mixer_crash_fails_outputs_with_reason_and_stops_forwarding() {
    let now = Instant::now();
    let mut room = RoomState::new(settings(2));
    join(&mut room, now, "a", &[vp8("v")]);
    room.handle(now, Input::GoLive).unwrap();
    room.handle(
        now,
        Input::Mixer {
            epoch: 1,
            event: Event::InputReady {
                input_id: "in0".into(),
                rtp_port: 40000,
            },
        },
    )
    .unwrap();
    drain(&mut room);

    room.handle(
        now,
        Input::MixerExited {
            epoch: 1,
            reason: "exit status 139".into(),
        },
    )
    .unwrap();
    let effects = drain(&mut room);
    assert!(effects.contains(&Effect::Forward {
        participant_id: "a".into(),
        track_id: "v".into(),
        targets: vec![],
    }));
    assert!(matches!(room.broadcast(), Broadcast::Failed { reason } if reason.contains("139")));
    for output in room.outputs() {
        assert_eq!(output.state, OutputState::Failed);
        assert!(output.reason.as_deref().unwrap().contains("139"));
    }
    // The room can go live again, with a new epoch.
    room.handle(now, Input::GoLive).unwrap();
    assert_eq!(drain(&mut room)[0], Effect::SpawnMixer { epoch: 2 });
}

#[test]
fn output_events_and_heartbeats_update_status() {
    let now = Instant::now();
    let mut room = RoomState::new(settings(2));
    room.handle(now, Input::GoLive).unwrap();
    let live = |event| Input::Mixer { epoch: 1, event };
    room.handle(now, live(Event::Ready)).unwrap();
    room.handle(
        now,
        live(Event::Output {
            output_id: "out1".into(),
            state: OutputState::Failed,
            reason: Some("connection refused".into()),
            bytes_sent: 0,
        }),
    )
    .unwrap();
    room.handle(
        now,
        live(Event::Heartbeat {
            frames_out: 90,
            outputs: vec![OutputBytes {
                output_id: "out0".into(),
                bytes_sent: 1234,
            }],
        }),
    )
    .unwrap();
    assert!(matches!(
        room.broadcast(),
        Broadcast::Live {
            mixer: MixerPhase::Running,
            frames_out: 90,
            ..
        }
    ));
    assert_eq!(room.outputs()[0].bytes_sent, 1234);
    assert_eq!(room.outputs()[1].state, OutputState::Failed);
    assert_eq!(
        room.outputs()[1].reason.as_deref(),
        Some("connection refused")
    );
}

#[test]
fn refusals() {
    let now = Instant::now();
    let mut room = RoomState::new(settings(0));
    assert_eq!(room.handle(now, Input::GoLive), Err(RoomError::NoOutputs));
    join(&mut room, now, "a", &[]);
    join(&mut room, now, "b", &[]);
    join(&mut room, now, "c", &[]);
    let full = room.handle(
        now,
        Input::Join {
            participant_id: "d".into(),
            role: Role::Guest,
            display_name: String::new(),
        },
    );
    assert_eq!(full, Err(RoomError::Full { max: 3 }));
    assert_eq!(
        room.handle(
            now,
            Input::Leave {
                participant_id: "zz".into()
            }
        ),
        Err(RoomError::UnknownParticipant("zz".into()))
    );
}

#[test]
fn input_ready_for_a_departed_track_removes_it_from_the_mixer() {
    let now = Instant::now();
    let mut room = RoomState::new(settings(1));
    room.handle(now, Input::GoLive).unwrap();
    drain(&mut room);
    room.handle(
        now,
        Input::Mixer {
            epoch: 1,
            event: Event::InputReady {
                input_id: "in7".into(),
                rtp_port: 1,
            },
        },
    )
    .unwrap();
    assert_eq!(
        drain(&mut room),
        vec![Effect::ToMixer {
            epoch: 1,
            command: Command::RemoveInput {
                input_id: "in7".into()
            }
        }]
    );
}

#[test]
fn participants_are_listed_in_join_order() {
    let t0 = Instant::now();
    let mut room = RoomState::new(settings(1));
    join(&mut room, t0 + Duration::from_secs(2), "a", &[]);
    join(&mut room, t0, "z", &[]);
    let order: Vec<_> = room
        .participants()
        .iter()
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(order, vec!["z", "a"]);
}
