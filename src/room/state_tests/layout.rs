//! Layouts, the active speaker and per-participant audio, live and across a replacement.

use super::*;

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
