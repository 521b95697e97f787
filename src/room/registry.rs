//! All rooms of this server, by id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::actor::{RoomHandle, RoomRuntime};
use super::durable::Durable;
use super::lifetime::{Lifetime, RoomClock};
use super::state::RoomSettings;
use super::tokens::{random_id, RoomTokens};
use crate::access::Access;

#[derive(Debug, thiserror::Error)]
#[error("this server already has {max} rooms; end one or raise limits.max_rooms")]
pub struct TooManyRooms {
    max: usize,
}

/// Why a stored room was not brought back.
#[derive(Debug, thiserror::Error)]
pub enum NotRestored {
    #[error(transparent)]
    TooMany(#[from] TooManyRooms),
    #[error("a room with this id is open already")]
    Exists,
}

pub struct Rooms {
    rooms: RwLock<HashMap<String, Arc<RoomHandle>>>,
    runtime: RoomRuntime,
    max_rooms: usize,
    /// Mints each room's tokens and checks the ones presented to it.
    access: Arc<Access>,
    /// When unused rooms close.
    lifetime: Lifetime,
    /// Each room's countdown, fed by [`Rooms::sweep`].
    clocks: Mutex<HashMap<String, RoomClock>>,
    /// Where each room's events go (`[webhooks]`), if anywhere.
    webhooks: Option<crate::webhooks::Webhooks>,
    /// Where rooms keep their records (`[store]`), if anywhere.
    store: Option<Arc<crate::store::RoomStore>>,
}

/// Defaults of `[rooms]` (LiveKit's `empty_timeout` and `departure_timeout`).
pub const DEFAULT_LIFETIME: Lifetime = Lifetime {
    empty_timeout: Duration::from_secs(600),
    departure_timeout: Duration::from_secs(300),
};

impl Rooms {
    pub fn new(runtime: RoomRuntime, max_rooms: usize, access: Arc<Access>) -> Self {
        Self {
            rooms: RwLock::new(HashMap::new()),
            runtime,
            max_rooms,
            access,
            lifetime: DEFAULT_LIFETIME,
            clocks: Mutex::new(HashMap::new()),
            webhooks: None,
            store: None,
        }
    }

    /// Rooms save their records here, and the record of an ended room is deleted.
    pub fn with_store(mut self, store: Option<Arc<crate::store::RoomStore>>) -> Self {
        self.store = store;
        self
    }

    /// Resolves once every record change so far is on disk (no store: at once).
    pub async fn store_flushed(&self) {
        if let Some(store) = &self.store {
            store.flushed().await;
        }
    }

    /// With other room timeouts than [`DEFAULT_LIFETIME`].
    pub fn with_lifetime(mut self, lifetime: Lifetime) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Sends every room's events to these webhooks.
    pub fn with_webhooks(mut self, webhooks: Option<crate::webhooks::Webhooks>) -> Self {
        self.webhooks = webhooks;
        self
    }

    pub fn lifetime(&self) -> Lifetime {
        self.lifetime
    }

    /// Looks at every room and ends those whose timeout has run out (nobody joined within
    /// `empty_timeout`, or everyone left more than `departure_timeout` ago and it is not
    /// live). Returns their ids. Called about once a second by serve.
    pub fn sweep(&self, now: Instant) -> Vec<String> {
        let rooms: Vec<(String, Arc<RoomHandle>)> = self
            .rooms
            .read()
            .expect("rooms lock")
            .iter()
            .map(|(id, room)| (id.clone(), room.clone()))
            .collect();
        let mut expired = Vec::new();
        {
            let mut clocks = self.clocks.lock().expect("clocks lock");
            for (id, room) in &rooms {
                // A room ended meanwhile has no clock any more (and gets none back).
                let Some(clock) = clocks.get_mut(id) else {
                    continue;
                };
                if clock
                    .observe(now, room.occupancy(), self.lifetime)
                    .is_some_and(|at| at <= now)
                {
                    expired.push(id.clone());
                }
            }
        }
        for id in &expired {
            self.end(id);
        }
        expired
    }

    /// When room `id` closes if nothing changes (as of the last sweep).
    pub fn closes_at(&self, id: &str) -> Option<Instant> {
        self.clocks
            .lock()
            .expect("clocks lock")
            .get(id)
            .and_then(|clock| clock.closes_at(self.lifetime))
    }

    /// The server's API keys (operator checks).
    pub fn access(&self) -> &Access {
        &self.access
    }

    pub fn create(&self, settings: RoomSettings) -> Result<Arc<RoomHandle>, TooManyRooms> {
        self.create_with(|_| settings)
    }

    /// Like [`Rooms::create`], for settings that depend on the new room's id (e.g. the
    /// built-in origin's publish URL names the room).
    pub fn create_with(
        &self,
        settings: impl FnOnce(&str) -> RoomSettings,
    ) -> Result<Arc<RoomHandle>, TooManyRooms> {
        let rooms = self.rooms.write().expect("rooms lock");
        if rooms.len() >= self.max_rooms {
            return Err(TooManyRooms {
                max: self.max_rooms,
            });
        }
        let id = random_id(9);
        let settings = settings(&id);
        let durable = Durable::new_room(self.store.clone());
        Ok(self.open(rooms, id, settings, durable))
    }

    /// Brings back a stored room under its own id (see `durable::restore_rooms`).
    pub fn restore(
        &self,
        id: &str,
        settings: RoomSettings,
        mut durable: Durable,
    ) -> Result<Arc<RoomHandle>, NotRestored> {
        let rooms = self.rooms.write().expect("rooms lock");
        if rooms.contains_key(id) {
            return Err(NotRestored::Exists);
        }
        if rooms.len() >= self.max_rooms {
            return Err(TooManyRooms {
                max: self.max_rooms,
            }
            .into());
        }
        durable.store = self.store.clone();
        Ok(self.open(rooms, id.to_string(), settings, durable))
    }

    fn open(
        &self,
        mut rooms: std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<RoomHandle>>>,
        id: String,
        settings: RoomSettings,
        durable: Durable,
    ) -> Arc<RoomHandle> {
        let room = Arc::new(RoomHandle::spawn(
            id.clone(),
            RoomTokens::new(&id, self.access.clone()),
            settings,
            self.runtime.clone(),
            durable,
        ));
        self.clocks
            .lock()
            .expect("clocks lock")
            .insert(id.clone(), RoomClock::new(Instant::now()));
        rooms.insert(id, room.clone());
        if let Some(webhooks) = &self.webhooks {
            webhooks.follow(&room);
        }
        room
    }

    /// Where every room of this server gets its mixer (this machine's pool or the fleet).
    pub fn pool(&self) -> &dyn crate::pool::MixerBackend {
        self.runtime.pool.as_ref()
    }

    /// Every open room (for scrapes; a snapshot).
    pub fn all(&self) -> Vec<Arc<RoomHandle>> {
        self.rooms
            .read()
            .expect("rooms lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<Arc<RoomHandle>> {
        self.rooms.read().expect("rooms lock").get(id).cloned()
    }

    /// Ids of the rooms in this process.
    pub fn ids(&self) -> Vec<String> {
        self.rooms
            .read()
            .expect("rooms lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Removes a room from this process only, its record kept and its mixer left running:
    /// another serve node owns it now.
    pub fn detach(&self, id: &str) -> bool {
        let removed = self.rooms.write().expect("rooms lock").remove(id);
        self.clocks.lock().expect("clocks lock").remove(id);
        removed.map(|room| room.detach()).is_some()
    }

    /// Removes and ends a room.
    pub fn end(&self, id: &str) -> bool {
        let removed = self.rooms.write().expect("rooms lock").remove(id);
        self.clocks.lock().expect("clocks lock").remove(id);
        if let (Some(store), Some(_)) = (&self.store, &removed) {
            store.forget(id);
        }
        match removed {
            Some(room) => {
                room.end();
                true
            }
            None => false,
        }
    }

    /// Ends every room (server shutdown). Their records stay: they come back at the next start.
    pub fn end_all(&self) {
        let rooms: Vec<_> = self.rooms.write().expect("rooms lock").drain().collect();
        for (_, room) in rooms {
            room.end();
        }
    }

    /// Ends every room in this process only (serve shuts down; the rooms are stored and come
    /// back with the next serve): their mixers are detached, not stopped.
    pub fn detach_all(&self) {
        let rooms: Vec<_> = self.rooms.write().expect("rooms lock").drain().collect();
        for (_, room) in rooms {
            room.detach();
        }
    }
}
