//! Going live, inputs, and a mixer's failures: crashes, lost workers, hangs, stalls.

use super::*;

#[test]
fn tracks_before_go_live_do_nothing_until_live() {
    let now = Instant::now();
    let mut room = RoomState::new(settings(1));
    join(&mut room, now, "a", &[vp8("v"), opus("a")]);
    assert!(drain(&mut room).is_empty());

    go_live(&mut room, now);
    let effects = drain(&mut room);
    assert_eq!(effects[0], Effect::SpawnMixer { epoch: 1 });
    assert!(matches!(
        &effects[1],
        Effect::ToMixer { epoch: 1, command: Command::Start { outputs, .. } } if outputs.len() == 1
    ));
    assert_eq!(input_ids(&effects), vec!["in0", "in1"]);
    assert_eq!(room.outputs()[0].state, OutputState::Connecting);
}

/// The mixer re-checks every destination when it connects, so it must be told the policy.
#[test]
fn the_mixer_gets_the_rooms_destination_policy() {
    let now = Instant::now();
    let strict = DestinationPolicy {
        allow_private: false,
        allow_hosts: vec!["*.cdn.example".into()],
    };
    let mut room = RoomState::new(RoomSettings {
        destinations: strict.clone(),
        ..settings(1)
    });
    go_live(&mut room, now);
    let effects = drain(&mut room);
    assert!(
        matches!(
            &effects[1],
            Effect::ToMixer { command: Command::Start { destinations, outputs, .. }, .. }
                if *destinations == strict && !outputs[0].internal
        ),
        "{effects:?}"
    );
    room.handle(
        now,
        Input::AddOutput {
            url: "rtmp://eu.cdn.example/live/k".into(),
        },
    )
    .unwrap();
    assert!(drain(&mut room).iter().any(|e| matches!(
        e,
        Effect::ToMixer { command: Command::AddOutput { output }, .. } if !output.internal
    )));
}

#[test]
fn input_ready_forwards_rtp_and_asks_for_a_keyframe() {
    let now = Instant::now();
    let mut room = RoomState::new(settings(1));
    go_live(&mut room, now);
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
                rtp_addr: Some("10.0.0.2:40000".parse().unwrap()),
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
                // Wherever the mixer runs (here a worker on another machine).
                targets: vec!["10.0.0.2:40000".parse().unwrap()],
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
    go_live(&mut room, now);
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
        effects
            .iter()
            .rev()
            .find(|e| !matches!(e, Effect::Resize { .. })),
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
    go_live(&mut room, now);
    room.handle(now, Input::StopLive).unwrap();
    go_live(&mut room, now);
    drain(&mut room);

    room.handle(
        now,
        Input::MixerExited {
            epoch: 1,
            reason: "killed".into(),
            worker_lost: false,
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
fn a_crashed_mixer_is_replaced_at_once_with_the_same_inputs() {
    let now = Instant::now();
    let mut room = live_room_with_one_input(now, CrashPolicy::default());
    let effects = crash(&mut room, now, 1);
    assert_eq!(effects[0], Effect::KillMixer { epoch: 1 });
    assert!(effects.contains(&Effect::Forward {
        participant_id: "a".into(),
        track_id: "v".into(),
        targets: vec![],
    }));
    assert!(effects.contains(&Effect::SpawnMixer { epoch: 2 }));
    assert_eq!(input_ids(&effects), vec!["in0"]);
    assert!(matches!(
        room.broadcast(),
        Broadcast::Live {
            epoch: 2,
            restarts: 1,
            mixer: MixerPhase::Starting,
            ..
        }
    ));
    for output in room.outputs() {
        assert_eq!(output.state, OutputState::Reconnecting);
        assert!(output.reason.as_deref().unwrap().contains("139"));
    }
    // The new mixer's "connecting" does not hide the reconnect; "live" ends it.
    let live = |state| Input::Mixer {
        epoch: 2,
        event: Event::Output {
            output_id: "out0".into(),
            state,
            reason: None,
            bytes_sent: 10,
        },
    };
    room.handle(now, live(OutputState::Connecting)).unwrap();
    assert_eq!(room.outputs()[0].state, OutputState::Reconnecting);
    room.handle(now, live(OutputState::Live)).unwrap();
    assert_eq!(room.outputs()[0].state, OutputState::Live);
    // The dead mixer's late words change nothing.
    assert!(crash(&mut room, now, 1).is_empty());
}

#[test]
fn lost_workers_move_the_room_at_once_and_never_count_as_crashes() {
    let t0 = Instant::now();
    let mut room = live_room_with_one_input(t0, CrashPolicy::default());
    // Ten machines lost within a second (more than max_crashes): each a new mixer at once.
    for epoch in 1..=10 {
        room.handle(
            t0 + Duration::from_millis(epoch * 100),
            Input::MixerExited {
                epoch,
                reason: "worker w1: connection closed".into(),
                worker_lost: true,
            },
        )
        .unwrap();
        let effects = drain(&mut room);
        assert!(
            effects.contains(&Effect::SpawnMixer { epoch: epoch + 1 }),
            "loss {epoch}: {effects:?}"
        );
    }
    assert!(matches!(
        room.broadcast(),
        Broadcast::Live { restarts: 10, .. }
    ));
    // A crash of the mixer itself still starts the crash count from scratch: immediate.
    assert!(crash(&mut room, t0 + Duration::from_secs(2), 11)
        .contains(&Effect::SpawnMixer { epoch: 12 }));
}

#[test]
fn a_crash_loop_backs_off_then_fails_with_the_reason() {
    let t0 = Instant::now();
    let mut room = live_room_with_one_input(t0, CrashPolicy::default());
    assert!(crash(&mut room, t0, 1).contains(&Effect::SpawnMixer { epoch: 2 }));

    // The second crash waits for the backoff before spawning.
    let t1 = t0 + Duration::from_secs(1);
    let effects = crash(&mut room, t1, 2);
    assert!(!effects
        .iter()
        .any(|e| matches!(e, Effect::SpawnMixer { .. })));
    assert!(matches!(
        room.broadcast(),
        Broadcast::Live {
            mixer: MixerPhase::Restarting,
            ..
        }
    ));
    let due = room.poll_timeout().unwrap();
    assert_eq!(due, t1 + Duration::from_millis(500));
    room.handle(due - Duration::from_millis(1), Input::Tick)
        .unwrap();
    assert!(drain(&mut room).is_empty());
    room.handle(due, Input::Tick).unwrap();
    assert!(drain(&mut room).contains(&Effect::SpawnMixer { epoch: 3 }));

    let mut now = due;
    let mut epoch = 3;
    while matches!(room.broadcast(), Broadcast::Live { .. }) {
        now += Duration::from_secs(1);
        crash(&mut room, now, epoch);
        if let Some(at) = room
            .poll_timeout()
            .filter(|_| room.outputs()[0].state == OutputState::Reconnecting)
        {
            room.handle(at, Input::Tick).unwrap();
            drain(&mut room);
        }
        epoch += 1;
        assert!(epoch < 10, "never gave up");
    }
    match room.broadcast() {
        Broadcast::Failed { reason } => {
            assert!(
                reason.contains("5 times") && reason.contains("139"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(room.outputs()[0].state, OutputState::Failed);
}

#[test]
fn a_silent_mixer_is_declared_hung_and_replaced() {
    let t0 = Instant::now();
    let policy = CrashPolicy::default();
    let mut room = live_room_with_one_input(t0, policy);
    room.handle(
        t0,
        Input::Mixer {
            epoch: 1,
            event: ready(),
        },
    )
    .unwrap();
    // Heartbeats keep it alive.
    let t1 = t0 + Duration::from_secs(3);
    room.handle(
        t1,
        Input::Mixer {
            epoch: 1,
            event: Event::Heartbeat {
                frames_out: 90,
                outputs: vec![],
                quality: None,
            },
        },
    )
    .unwrap();
    assert_eq!(room.poll_timeout(), Some(t1 + policy.heartbeat_timeout));
    room.handle(t1 + Duration::from_secs(1), Input::Tick)
        .unwrap();
    assert!(drain(&mut room).is_empty());

    // Then silence past the deadline: killed and replaced.
    room.handle(t1 + policy.heartbeat_timeout, Input::Tick)
        .unwrap();
    let effects = drain(&mut room);
    assert_eq!(effects[0], Effect::KillMixer { epoch: 1 });
    assert!(effects.contains(&Effect::SpawnMixer { epoch: 2 }));
    assert!(room.outputs()[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("unresponsive"));
}

#[test]
fn a_mixer_whose_heartbeats_carry_no_new_frames_is_declared_stalled_and_replaced() {
    let t0 = Instant::now();
    let policy = CrashPolicy::default();
    let mut room = live_room_with_one_input(t0, policy);
    let beat = |room: &mut RoomState, at: Instant, epoch: u64, frames_out: u64| {
        room.handle(
            at,
            Input::Mixer {
                epoch,
                event: Event::Heartbeat {
                    frames_out,
                    outputs: vec![],
                    quality: None,
                },
            },
        )
        .unwrap();
    };
    room.handle(
        t0,
        Input::Mixer {
            epoch: 1,
            event: ready(),
        },
    )
    .unwrap();
    // Growing counts keep it alive, heartbeat after heartbeat.
    let mut at = t0;
    for n in 1..=10u64 {
        at = t0 + Duration::from_secs(n);
        beat(&mut room, at, 1, n * 30);
        room.handle(at, Input::Tick).unwrap();
    }
    assert!(drain(&mut room)
        .iter()
        .all(|e| !matches!(e, Effect::KillMixer { .. })));
    // Then heartbeats on time, but the count stands still: stalled after the stall timeout.
    let stalled_at = at;
    for n in 1..=4u64 {
        beat(&mut room, stalled_at + Duration::from_secs(n), 1, 300);
    }
    assert_eq!(
        room.poll_timeout(),
        Some(stalled_at + policy.output_stall_timeout)
    );
    room.handle(stalled_at + Duration::from_secs(4), Input::Tick)
        .unwrap();
    assert!(drain(&mut room).is_empty(), "not yet");
    room.handle(stalled_at + policy.output_stall_timeout, Input::Tick)
        .unwrap();
    let effects = drain(&mut room);
    assert_eq!(effects[0], Effect::KillMixer { epoch: 1 });
    assert!(effects.contains(&Effect::SpawnMixer { epoch: 2 }));
    assert!(room.outputs()[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("no program frames"));

    // The successor starts its count from zero: not a stall, and its own clock.
    let t2 = stalled_at + policy.output_stall_timeout;
    room.handle(
        t2,
        Input::Mixer {
            epoch: 2,
            event: ready(),
        },
    )
    .unwrap();
    beat(&mut room, t2 + Duration::from_secs(1), 2, 0);
    beat(&mut room, t2 + Duration::from_secs(2), 2, 0);
    // No frame yet: it gets the startup timeout from its first heartbeat.
    assert_eq!(
        room.output_stall_deadline(),
        Some(t2 + Duration::from_secs(1) + policy.startup_timeout)
    );
    beat(&mut room, t2 + Duration::from_secs(3), 2, 30);
    assert_eq!(
        room.output_stall_deadline(),
        Some(t2 + Duration::from_secs(3) + policy.output_stall_timeout)
    );
}

#[test]
fn stopping_on_purpose_is_not_a_crash() {
    let now = Instant::now();
    let mut room = live_room_with_one_input(now, CrashPolicy::default());
    room.handle(now, Input::StopLive).unwrap();
    assert!(drain(&mut room).contains(&Effect::StopMixer { epoch: 1 }));
    assert_eq!(room.poll_timeout(), None);
    assert!(crash(&mut room, now, 1).is_empty());
    assert!(matches!(room.broadcast(), Broadcast::Offline));
}

#[test]
fn output_events_and_heartbeats_update_status() {
    let now = Instant::now();
    let mut room = RoomState::new(settings(2));
    go_live(&mut room, now);
    let live = |event| Input::Mixer { epoch: 1, event };
    room.handle(now, live(ready())).unwrap();
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
            quality: None,
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
            identity: "d".into(),
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
    go_live(&mut room, now);
    drain(&mut room);
    room.handle(
        now,
        Input::Mixer {
            epoch: 1,
            event: Event::InputReady {
                input_id: "in7".into(),
                rtp_port: 1,
                rtp_addr: None,
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
