//! The room's look, live and across a replacement.

use super::*;

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
