//! Capacity reserved for the broadcast, followed and released.

use super::*;

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
