//! The room state machine's tests, by concern; the helpers they share are here (and used by
//! the handover and recording tests too).

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

/// Every effect the room has queued.
pub(crate) fn drain(room: &mut RoomState) -> Vec<Effect> {
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

/// The mixer's answer to `Start`.
pub(crate) fn ready() -> Event {
    Event::Ready {
        version: "test".into(),
        binary: "costream".into(),
    }
}

mod layout;
mod lifecycle;
mod look;
mod outputs;
mod reservations;
mod subscriptions;
