use super::*;
use crate::room::recovery::CrashPolicy;
use costream_mixer::control::OutputBytes;

pub(crate) fn settings(outputs: usize) -> RoomSettings {
    RoomSettings {
        name: "test".into(),
        video: VideoSpec::default(),
        outputs: (0..outputs)
            .map(|i| OutputSpec::new(format!("out{i}"), format!("rtmp://127.0.0.1/live/key{i}")))
            .collect(),
        destinations: Default::default(),
        max_participants: 3,
        max_outputs: 3,
        max_subscriptions: 8,
        layout: LayoutSpec::default(),
        look: Default::default(),
        record: false,
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

/// Goes live with the capacity admitted (the reservation it asks for is checked and taken).
pub(crate) fn go_live(room: &mut RoomState, now: Instant) {
    room.handle(now, Input::GoLive).unwrap();
    let reserve = room
        .effects
        .iter()
        .rposition(|e| matches!(e, Effect::Reserve { .. }))
        .expect("going live reserves capacity first");
    assert_eq!(reserve, room.effects.len() - 1, "nothing before admission");
    room.effects.remove(reserve);
    room.handle(now, Input::Admitted).unwrap();
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
            identity: id.into(),
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

fn live_room_with_one_input(now: Instant, policy: CrashPolicy) -> RoomState {
    let mut room = RoomState::new(settings(2)).with_crash_policy(policy);
    join(&mut room, now, "a", &[vp8("v")]);
    go_live(&mut room, now);
    room.handle(
        now,
        Input::Mixer {
            epoch: 1,
            event: Event::InputReady {
                input_id: "in0".into(),
                rtp_port: 40000,
                // A mixer older than the field: it listens on loopback.
                rtp_addr: None,
            },
        },
    )
    .unwrap();
    drain(&mut room);
    room
}

fn crash(room: &mut RoomState, now: Instant, epoch: u64) -> Vec<Effect> {
    room.handle(
        now,
        Input::MixerExited {
            epoch,
            reason: "exit status 139".into(),
            worker_lost: false,
        },
    )
    .unwrap();
    drain(room)
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
            event: Event::Ready {
                version: String::new(),
                binary: String::new(),
            },
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
            event: Event::Ready {
                version: String::new(),
                binary: String::new(),
            },
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
            event: Event::Ready {
                version: String::new(),
                binary: String::new(),
            },
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
    room.handle(
        now,
        live(Event::Ready {
            version: String::new(),
            binary: String::new(),
        }),
    )
    .unwrap();
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

fn layouts_sent(effects: &[Effect]) -> Vec<(u64, LayoutSpec)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::ToMixer {
                epoch,
                command: Command::SetLayout { layout },
            } => Some((*epoch, layout.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn layout_changes_reach_the_live_mixer_and_survive_a_replacement() {
    let now = Instant::now();
    let mut room = live_room_with_one_input(now, CrashPolicy::default());
    let pip = LayoutSpec::Pip {
        pin: Some("a".into()),
    };
    room.handle(
        now,
        Input::SetLayout {
            layout: pip.clone(),
        },
    )
    .unwrap();
    let effects = drain(&mut room);
    assert_eq!(layouts_sent(&effects), vec![(1, pip.clone())]);
    // No restart, no input churn: only the layout command.
    assert_eq!(effects.len(), 1, "{effects:?}");

    // A replacement mixer gets the layout right after Start, before any input.
    let effects = crash(&mut room, now, 1);
    assert_eq!(layouts_sent(&effects), vec![(2, pip.clone())]);
    let start = effects
        .iter()
        .position(|e| {
            matches!(
                e,
                Effect::ToMixer {
                    command: Command::Start { .. },
                    ..
                }
            )
        })
        .unwrap();
    let layout = effects
        .iter()
        .position(|e| {
            matches!(
                e,
                Effect::ToMixer {
                    command: Command::SetLayout { .. },
                    ..
                }
            )
        })
        .unwrap();
    let first_input = effects
        .iter()
        .position(|e| {
            matches!(
                e,
                Effect::ToMixer {
                    command: Command::AddInput { .. },
                    ..
                }
            )
        })
        .unwrap();
    assert!(start < layout && layout < first_input, "{effects:?}");
    assert_eq!(room.settings().layout, pip);
}

#[test]
fn layout_while_offline_is_kept_for_go_live() {
    let now = Instant::now();
    let mut room = RoomState::new(settings(1));
    join(&mut room, now, "a", &[vp8("v")]);
    let speaker = LayoutSpec::Speaker { pin: None };
    room.handle(
        now,
        Input::SetLayout {
            layout: speaker.clone(),
        },
    )
    .unwrap();
    assert!(drain(&mut room).is_empty());
    go_live(&mut room, now);
    assert_eq!(layouts_sent(&drain(&mut room)), vec![(1, speaker)]);
}

#[test]
fn layouts_naming_strangers_or_out_of_canvas_are_refused() {
    let now = Instant::now();
    let mut room = RoomState::new(settings(1));
    join(&mut room, now, "a", &[vp8("v")]);
    let err = room
        .handle(
            now,
            Input::SetLayout {
                layout: LayoutSpec::Speaker {
                    pin: Some("zed".into()),
                },
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("layout.pin"), "{err}");
    let tile = |id: &str, x: f64| costream_mixer::control::CustomTile {
        participant_id: id.into(),
        x,
        y: 0.0,
        width: 0.5,
        height: 0.5,
        z: 0,
    };
    let err = room
        .handle(
            now,
            Input::SetLayout {
                layout: LayoutSpec::Custom {
                    tiles: vec![tile("a", 0.0), tile("b", 0.5)],
                },
            },
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("layout.tiles[1].participant_id"),
        "{err}"
    );
    let err = room
        .handle(
            now,
            Input::SetLayout {
                layout: LayoutSpec::Custom {
                    tiles: vec![tile("a", 0.9)],
                },
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("past the canvas"), "{err}");
    assert_eq!(room.settings().layout, LayoutSpec::default());
}

#[test]
fn the_active_speaker_comes_from_the_mixer_and_clears_when_offline() {
    let now = Instant::now();
    let mut room = live_room_with_one_input(now, CrashPolicy::default());
    room.handle(
        now,
        Input::Mixer {
            epoch: 1,
            event: Event::ActiveSpeaker {
                participant_id: Some("a".into()),
            },
        },
    )
    .unwrap();
    assert_eq!(room.active_speaker(), Some("a"));
    room.handle(now, Input::StopLive).unwrap();
    assert_eq!(room.active_speaker(), None);
}

#[test]
fn audio_controls_are_kept_per_participant_and_replayed_to_a_new_mixer() {
    let now = Instant::now();
    let mut room = live_room_with_one_input(now, CrashPolicy::default());
    room.handle(
        now,
        Input::SetAudio {
            participant_id: "a".into(),
            gain: Some(0.5),
            muted: None,
        },
    )
    .unwrap();
    let half = AudioMix {
        gain: 0.5,
        muted: false,
    };
    assert_eq!(
        drain(&mut room),
        vec![Effect::ToMixer {
            epoch: 1,
            command: Command::SetAudio {
                participant_id: "a".into(),
                audio: half,
            },
        }]
    );
    // Mute keeps the gain.
    room.handle(
        now,
        Input::SetAudio {
            participant_id: "a".into(),
            gain: None,
            muted: Some(true),
        },
    )
    .unwrap();
    drain(&mut room);
    let effects = crash(&mut room, now, 1);
    let replayed = effects.iter().position(|e| {
        *e == Effect::ToMixer {
            epoch: 2,
            command: Command::SetAudio {
                participant_id: "a".into(),
                audio: AudioMix {
                    gain: 0.5,
                    muted: true,
                },
            },
        }
    });
    let first_input = effects.iter().position(|e| {
        matches!(
            e,
            Effect::ToMixer {
                command: Command::AddInput { .. },
                ..
            }
        )
    });
    assert!(replayed.unwrap() < first_input.unwrap(), "{effects:?}");

    let err = room
        .handle(
            now,
            Input::SetAudio {
                participant_id: "a".into(),
                gain: Some(9.0),
                muted: None,
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("gain"), "{err}");
    let err = room
        .handle(
            now,
            Input::SetAudio {
                participant_id: "ghost".into(),
                gain: Some(1.0),
                muted: None,
            },
        )
        .unwrap_err();
    assert_eq!(err, RoomError::UnknownParticipant("ghost".into()));
}

fn subscribe(room: &mut RoomState, id: &str, source: &str) -> Result<(), RoomError> {
    room.handle(
        Instant::now(),
        Input::Subscribe {
            subscription_id: id.into(),
            source: source.into(),
        },
    )
}

#[test]
fn subscriptions_attach_count_and_close_with_their_source() {
    let now = Instant::now();
    let mut room = RoomState::new(settings(1));
    join(&mut room, now, "a", &[vp8("v")]);
    join(&mut room, now, "b", &[vp8("v")]);
    drain(&mut room);
    subscribe(&mut room, "s1", "a").unwrap();
    subscribe(&mut room, "s2", "a").unwrap();
    subscribe(&mut room, "s3", "b").unwrap();
    assert_eq!(
        drain(&mut room)[0],
        Effect::AttachSubscription {
            source: "a".into(),
            subscription_id: "s1".into()
        }
    );
    assert_eq!(room.subscriber_count("a"), 2);
    assert_eq!(
        subscribe(&mut room, "s4", "nobody"),
        Err(RoomError::UnknownParticipant("nobody".into()))
    );

    // a leaves: both of its subscriptions close before its session; b's stays.
    room.handle(
        now,
        Input::Leave {
            participant_id: "a".into(),
        },
    )
    .unwrap();
    let effects = drain(&mut room);
    let closing: Vec<&Effect> = effects
        .iter()
        .filter(|e| {
            matches!(
                e,
                Effect::CloseSubscription { .. } | Effect::CloseSession { .. }
            )
        })
        .collect();
    assert_eq!(closing.len(), 3, "{effects:?}");
    assert!(matches!(closing[2], Effect::CloseSession { participant_id } if participant_id == "a"));
    assert_eq!(room.subscriber_count("a"), 0);
    assert_eq!(room.subscriber_count("b"), 1);

    room.handle(
        now,
        Input::Unsubscribe {
            subscription_id: "s3".into(),
        },
    )
    .unwrap();
    assert_eq!(
        drain(&mut room),
        vec![Effect::CloseSubscription {
            source: "b".into(),
            subscription_id: "s3".into()
        }]
    );
    assert_eq!(
        room.handle(
            now,
            Input::Unsubscribe {
                subscription_id: "s3".into()
            }
        ),
        Err(RoomError::UnknownSubscription("s3".into()))
    );
}

#[test]
fn a_mixer_restart_never_touches_subscriptions() {
    let now = Instant::now();
    let mut room = RoomState::new(settings(1));
    join(&mut room, now, "a", &[vp8("v")]);
    subscribe(&mut room, "s1", "a").unwrap();
    go_live(&mut room, now);
    room.handle(
        now,
        Input::MixerExited {
            epoch: 1,
            reason: "boom".into(),
            worker_lost: false,
        },
    )
    .unwrap();
    room.handle(now, Input::StopLive).unwrap();
    let effects = drain(&mut room);
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::CloseSubscription { .. })),
        "{effects:?}"
    );
    assert_eq!(room.subscriber_count("a"), 1);
}

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

fn looks_sent(effects: &[Effect]) -> Vec<(u64, Look)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::ToMixer {
                epoch,
                command: Command::SetLook { look },
            } => Some((*epoch, look.clone())),
            _ => None,
        })
        .collect()
}

/// A 1x1 PNG as the API takes it.
const PNG_1X1: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";

fn branded() -> Look {
    Look {
        labels: true,
        background: "#808000".into(),
        logo: Some(PNG_1X1.into()),
        title: String::new(),
    }
}

#[test]
fn look_changes_reach_the_live_mixer_and_are_replayed_to_a_replacement() {
    let now = Instant::now();
    let mut room = live_room_with_one_input(now, CrashPolicy::default());
    room.handle(now, Input::SetLook { look: branded() })
        .unwrap();
    // The mixer's slate title is the room name when the host gave none.
    let sent = Look {
        title: "test".into(),
        ..branded()
    };
    let effects = drain(&mut room);
    assert_eq!(looks_sent(&effects), vec![(1, sent.clone())]);
    assert_eq!(effects.len(), 1, "no restart, no input churn: {effects:?}");
    assert_eq!(room.settings().look, branded());

    // A replacement mixer gets the same look after Start and before any input, so its first
    // frames (the slates among them) already look right.
    let effects = crash(&mut room, now, 1);
    assert_eq!(looks_sent(&effects), vec![(2, sent)]);
    let position = |want: fn(&Command) -> bool| {
        effects
            .iter()
            .position(|e| matches!(e, Effect::ToMixer { command, .. } if want(command)))
            .unwrap()
    };
    let start = position(|c| matches!(c, Command::Start { .. }));
    let look = position(|c| matches!(c, Command::SetLook { .. }));
    let first_input = position(|c| matches!(c, Command::AddInput { .. }));
    assert!(start < look && look < first_input, "{effects:?}");
}

#[test]
fn a_look_set_before_going_live_is_sent_with_the_start_and_keeps_its_title() {
    let now = Instant::now();
    let mut room = RoomState::new(settings(1));
    join(&mut room, now, "a", &[opus("mic")]);
    let look = Look {
        title: "Friday show".into(),
        ..branded()
    };
    room.handle(now, Input::SetLook { look: look.clone() })
        .unwrap();
    assert!(drain(&mut room).is_empty(), "nothing to tell while offline");
    go_live(&mut room, now);
    let effects = drain(&mut room);
    assert_eq!(looks_sent(&effects), vec![(1, look)]);
    // The audio-only guest's slate shows its display name: the mixer gets it with the input.
    let names: Vec<&str> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::ToMixer {
                command: Command::AddInput { display_name, .. },
                ..
            } => Some(display_name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(names, vec!["A"]);
}

#[test]
fn invalid_looks_are_refused_naming_the_field_and_change_nothing() {
    let now = Instant::now();
    let mut room = live_room_with_one_input(now, CrashPolicy::default());
    let cases = [
        (
            Look {
                background: "olive".into(),
                ..branded()
            },
            "look.background",
        ),
        (
            Look {
                logo: Some("https://example.com/logo.png".into()),
                ..branded()
            },
            "inline PNG",
        ),
        (
            Look {
                logo: Some("data:image/png;base64,R0lGODlhAQABAAAAACw=".into()),
                ..branded()
            },
            "not a PNG",
        ),
        (
            Look {
                logo: Some(format!(
                    "{PNG_1X1}{}",
                    "A".repeat(costream_mixer::looks::MAX_LOGO_URI_LEN)
                )),
                ..branded()
            },
            "at most",
        ),
    ];
    for (look, want) in cases {
        let err = room.handle(now, Input::SetLook { look }).unwrap_err();
        assert!(matches!(err, RoomError::InvalidLook(_)), "{err:?}");
        assert!(err.to_string().contains(want), "{err} lacks {want:?}");
    }
    assert!(drain(&mut room).is_empty());
    assert_eq!(room.settings().look, Look::default());
}

fn reservations(effects: &[Effect]) -> Vec<Effect> {
    effects
        .iter()
        .filter(|e| {
            matches!(
                e,
                Effect::Reserve { .. } | Effect::Resize { .. } | Effect::Release
            )
        })
        .cloned()
        .collect()
}

#[test]
fn going_live_reserves_capacity_first_and_a_refusal_keeps_the_room_offline() {
    let now = Instant::now();
    let mut room = RoomState::new(settings(1));
    join(&mut room, now, "a", &[vp8("v")]);
    drain(&mut room);
    room.handle(now, Input::GoLive).unwrap();
    let video = VideoSpec::default();
    assert_eq!(drain(&mut room), [Effect::Reserve { video, inputs: 1 }]);
    // Asking again while the answer is pending reserves nothing more.
    room.handle(now, Input::GoLive).unwrap();
    assert!(drain(&mut room).is_empty());
    room.handle(
        now,
        Input::Refused {
            reason: "over capacity".into(),
        },
    )
    .unwrap();
    assert!(drain(&mut room).is_empty(), "no mixer, nothing to release");
    assert!(matches!(room.broadcast(), Broadcast::Offline));
    // A late or stray admission starts nothing.
    room.handle(now, Input::Admitted).unwrap();
    assert!(drain(&mut room).is_empty());
    // No outputs: refused before any capacity is asked for.
    let mut bare = RoomState::new(settings(0));
    assert_eq!(bare.handle(now, Input::GoLive), Err(RoomError::NoOutputs));
    assert!(drain(&mut bare).is_empty());
}

#[test]
fn the_reservation_follows_the_participants_and_is_released_when_the_broadcast_ends() {
    let now = Instant::now();
    let video = VideoSpec::default();
    let mut room = RoomState::new(settings(1));
    join(&mut room, now, "a", &[vp8("v")]);
    room.handle(now, Input::GoLive).unwrap();
    room.handle(now, Input::Admitted).unwrap();
    let fx = drain(&mut room);
    assert_eq!(
        reservations(&fx),
        [Effect::Reserve { video, inputs: 1 }],
        "{fx:?}"
    );
    assert!(matches!(fx[1], Effect::SpawnMixer { epoch: 1 }), "{fx:?}");
    join(&mut room, now, "b", &[]);
    assert_eq!(
        reservations(&drain(&mut room)),
        [Effect::Resize { video, inputs: 2 }]
    );
    // A crash and restart keeps the reservation.
    room.handle(
        now,
        Input::MixerExited {
            epoch: 1,
            reason: "exit status 139".into(),
            worker_lost: false,
        },
    )
    .unwrap();
    assert!(reservations(&drain(&mut room)).is_empty());
    room.handle(now, Input::StopLive).unwrap();
    assert_eq!(reservations(&drain(&mut room)), [Effect::Release]);
    // Offline, participants coming and going charge nothing.
    room.handle(
        now,
        Input::Leave {
            participant_id: "b".into(),
        },
    )
    .unwrap();
    assert!(reservations(&drain(&mut room)).is_empty());
}

#[test]
fn a_broadcast_that_fails_releases_its_capacity() {
    let now = Instant::now();
    let mut room = RoomState::new(settings(1));
    go_live(&mut room, now);
    drain(&mut room);
    room.handle(
        now,
        Input::Mixer {
            epoch: 1,
            event: Event::Fatal {
                reason: "no element x264enc".into(),
            },
        },
    )
    .unwrap();
    assert_eq!(reservations(&drain(&mut room)), [Effect::Release]);
}
