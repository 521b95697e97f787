//! Subscriptions to a participant's media (the SFU return path).

use super::*;

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
