//! All rooms of this server, by id.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::actor::{RoomHandle, RoomRuntime};
use super::state::RoomSettings;
use super::tokens::{random_id, RoomTokens};
use crate::access::Access;

#[derive(Debug, thiserror::Error)]
#[error("this server already has {max} rooms; end one or raise limits.max_rooms")]
pub struct TooManyRooms {
    max: usize,
}

pub struct Rooms {
    rooms: RwLock<HashMap<String, Arc<RoomHandle>>>,
    runtime: RoomRuntime,
    max_rooms: usize,
    /// Mints each room's tokens and checks the ones presented to it.
    access: Arc<Access>,
}

impl Rooms {
    pub fn new(runtime: RoomRuntime, max_rooms: usize, access: Arc<Access>) -> Self {
        Self {
            rooms: RwLock::new(HashMap::new()),
            runtime,
            max_rooms,
            access,
        }
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
        let mut rooms = self.rooms.write().expect("rooms lock");
        if rooms.len() >= self.max_rooms {
            return Err(TooManyRooms {
                max: self.max_rooms,
            });
        }
        let id = random_id(9);
        let settings = settings(&id);
        let room = Arc::new(RoomHandle::spawn(
            id.clone(),
            RoomTokens::new(&id, self.access.clone()),
            settings,
            self.runtime.clone(),
        ));
        rooms.insert(id, room.clone());
        Ok(room)
    }

    /// The mixer pool every room of this server draws from.
    pub fn pool(&self) -> &crate::pool::MixerPool {
        &self.runtime.pool
    }

    pub fn get(&self, id: &str) -> Option<Arc<RoomHandle>> {
        self.rooms.read().expect("rooms lock").get(id).cloned()
    }

    /// Removes and ends a room.
    pub fn end(&self, id: &str) -> bool {
        let removed = self.rooms.write().expect("rooms lock").remove(id);
        match removed {
            Some(room) => {
                room.end();
                true
            }
            None => false,
        }
    }

    /// Ends every room (server shutdown).
    pub fn end_all(&self) {
        let rooms: Vec<_> = self.rooms.write().expect("rooms lock").drain().collect();
        for (_, room) in rooms {
            room.end();
        }
    }
}
