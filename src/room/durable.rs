//! A room and its durable record (`store`): the record a room saves after each change of its
//! settings, and the rooms brought back from the records at start. Participants are not in it:
//! their WebRTC sessions end with the process that held them, and they join again.

use std::sync::Arc;

use costream_mixer::control::OutputSpec;
use tracing::{info, warn};

use super::guest_list::GuestList;
use super::registry::Rooms;
use super::state::RoomSettings;
use crate::config::Config;
use crate::origin::Origin;
use crate::store::record::RECORD_VERSION;
use crate::store::{Loaded, OutputRecord, RoomRecord, RoomStore, StoreKey};

/// What a room starts with beyond its settings: where it saves itself and what it came back
/// with.
pub struct Durable {
    /// `None`: the room lives in memory only.
    pub store: Option<Arc<RoomStore>>,
    pub guests: GuestList,
    /// The host's last wish was a live broadcast.
    pub live: bool,
    /// Unix seconds.
    pub created_at: u64,
    /// The store holds this room's record already (a restored room): it is not saved again
    /// until it changes, so what could not be restored (an origin output while the origin is
    /// off) stays in the record for a later start.
    pub stored: bool,
    /// The recording that was in progress (its session id): it goes on when the room is live
    /// again.
    pub recording: Option<String>,
}

impl Durable {
    /// A new room (nothing to bring back).
    pub fn new_room(store: Option<Arc<RoomStore>>) -> Self {
        Self {
            store,
            guests: GuestList::default(),
            live: false,
            created_at: crate::access::unix_now(),
            stored: false,
            recording: None,
        }
    }
}

/// The record of room `room_id` as it is now; stream keys sealed with `key`.
pub fn record_of(
    key: &StoreKey,
    room_id: &str,
    settings: &RoomSettings,
    guests: &GuestList,
    live: bool,
    created_at: u64,
) -> RoomRecord {
    RoomRecord {
        version: RECORD_VERSION,
        room_id: room_id.to_string(),
        name: settings.name.clone(),
        video: settings.video,
        outputs: settings
            .outputs
            .iter()
            .map(|output| OutputRecord::seal(key, room_id, output))
            .collect(),
        layout: settings.layout.clone(),
        look: settings.look.clone(),
        banned: guests.banned_in_order(),
        shared_link_revoked: guests.shared_link_revoked(),
        live,
        created_at,
        record: settings.record,
        recording: None,
    }
}

/// Brings every stored room back, with its id (so its links and tokens work again), outputs,
/// layout, look and guest list, live again if the host had it live. A record that cannot be
/// used is skipped with a warning that says why; it stays in the store (a fixed key brings
/// it back on the next start).
pub async fn restore_rooms(
    rooms: &Rooms,
    store: &RoomStore,
    loaded: Vec<Loaded>,
    config: &Config,
    origin: Option<&Origin>,
) {
    let (mut back, mut live) = (0usize, 0usize);
    for (room_id, record) in loaded {
        let record = match record {
            Ok(record) if record.room_id == room_id => record,
            Ok(record) => {
                warn!(room = %room_id, other = %record.room_id, "skipping a stored room whose record names another room");
                continue;
            }
            Err(e) => {
                warn!(room = %room_id, "skipping a stored room: {e}");
                continue;
            }
        };
        let settings = match settings_of(&record, store.key(), config, origin) {
            Ok(settings) => settings,
            Err(e) => {
                warn!(room = %room_id, "skipping a stored room: {e}");
                continue;
            }
        };
        let durable = Durable {
            store: None,
            guests: GuestList::restored(&record.banned, record.shared_link_revoked),
            live: record.live,
            created_at: record.created_at,
            stored: true,
            recording: record.recording.clone(),
        };
        let room = match rooms.restore(&room_id, settings, durable) {
            Ok(room) => room,
            Err(e) => {
                warn!(room = %room_id, "skipping a stored room: {e}");
                continue;
            }
        };
        back += 1;
        if record.live {
            match room.go_live().await {
                Ok(Ok(_)) => live += 1,
                Ok(Err(e)) => {
                    warn!(room = %room_id, "a restored room could not go live again: {e}")
                }
                Err(e) => warn!(room = %room_id, "{e}"),
            }
        }
    }
    if back > 0 {
        info!(rooms = back, live, "rooms restored from the store");
    }
}

/// The settings a stored room comes back with: its own from the record, the server's current
/// limits and destination policy from `config`.
fn settings_of(
    record: &RoomRecord,
    key: &StoreKey,
    config: &Config,
    origin: Option<&Origin>,
) -> Result<RoomSettings, crate::store::StoreError> {
    let mut outputs = Vec::new();
    for (output_id, url) in record.open_outputs(key)? {
        match url {
            Some(url) => outputs.push(OutputSpec::new(output_id, url)),
            // The built-in origin's publish URL is made anew (its key lived in memory).
            None => match origin {
                Some(origin) => outputs.push(OutputSpec {
                    output_id,
                    url: origin.register(&record.room_id),
                    internal: true,
                }),
                None => {
                    warn!(room = %record.room_id, "the built-in origin is off now: its output is dropped")
                }
            },
        }
    }
    let limits = &config.limits;
    Ok(RoomSettings {
        name: record.name.clone(),
        video: record.video,
        outputs,
        destinations: config.destination_policy(),
        max_participants: limits.max_participants_per_room,
        max_outputs: limits.max_outputs_per_room,
        max_subscriptions: limits.max_subscriptions_per_room,
        layout: record.layout.clone(),
        look: record.look.clone(),
        record: record.record,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use costream_mixer::control::{LayoutSpec, Look};

    #[test]
    fn a_room_comes_back_with_its_settings() {
        let key = StoreKey::generate();
        let config = Config::default();
        let mut guests = GuestList::default();
        guests.ban("alice");
        guests.revoke_shared_link();
        let settings = RoomSettings {
            name: "show".into(),
            video: Default::default(),
            outputs: vec![OutputSpec::new("out3", "rtmp://cdn.example/app/KEY")],
            destinations: config.destination_policy(),
            max_participants: 4,
            max_outputs: 4,
            max_subscriptions: 4,
            layout: LayoutSpec::Speaker {
                pin: Some("p".into()),
            },
            look: Look {
                labels: true,
                ..Look::default()
            },
            record: true,
        };
        let record = record_of(&key, "r1", &settings, &guests, true, 7);
        assert!(record.live && record.shared_link_revoked && record.banned == ["alice"]);
        let back = settings_of(&record, &key, &config, None).unwrap();
        assert_eq!(back.name, "show");
        assert_eq!(back.outputs, settings.outputs);
        assert_eq!(back.layout, settings.layout);
        assert_eq!(back.look, settings.look);
        assert!(
            back.record,
            "a room that records every broadcast still does"
        );
        assert!(settings_of(&record, &StoreKey::generate(), &config, None).is_err());
    }

    #[tokio::test]
    async fn stored_rooms_come_back_live_and_unusable_ones_are_skipped() {
        let dir = std::env::temp_dir().join(format!("costream-durable-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (store, _) = RoomStore::open(&dir, None).unwrap();
        let config = Config::default();
        let rooms = Rooms::new(
            crate::room::RoomRuntime {
                pool: Arc::new(crate::pool::fake::FakeMixers::new(1800)),
                stop_grace: std::time::Duration::from_millis(100),
                recordings: None,
            },
            10,
            Arc::new(crate::access::Access::from_config(&config.auth)),
        )
        .with_store(Some(store.clone()));
        let existing = rooms
            .create(settings_of(&record("x", store.key()), store.key(), &config, None).unwrap())
            .unwrap();
        let loaded: Vec<Loaded> = vec![
            ("live1".into(), Ok(record("live1", store.key()))),
            (existing.id.clone(), Ok(record(&existing.id, store.key()))),
            (
                "wrongkey".into(),
                Ok(record("wrongkey", &StoreKey::generate())),
            ),
            ("other".into(), Ok(record("not-other", store.key()))),
        ];
        restore_rooms(&rooms, &store, loaded, &config, None).await;
        assert_eq!(rooms.all().len(), 2, "one restored beside the existing one");
        let back = rooms.get("live1").expect("restored under its id");
        let status = back.status().await.unwrap();
        assert_eq!(status.broadcast, "live");
        assert_eq!(status.name, "show live1");
        let guests = back.guests.lock().unwrap();
        assert!(guests.is_banned("alice") && guests.shared_link_revoked());
        drop(guests);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn record(room_id: &str, key: &StoreKey) -> RoomRecord {
        let mut guests = GuestList::default();
        guests.ban("alice");
        guests.revoke_shared_link();
        let config = Config::default();
        let settings = RoomSettings {
            name: format!("show {room_id}"),
            video: Default::default(),
            outputs: vec![OutputSpec::new("out0", "rtmp://cdn.example/app/KEY")],
            destinations: config.destination_policy(),
            max_participants: 4,
            max_outputs: 4,
            max_subscriptions: 4,
            layout: LayoutSpec::default(),
            look: Look::default(),
            record: false,
        };
        record_of(key, room_id, &settings, &guests, true, 7)
    }
}
