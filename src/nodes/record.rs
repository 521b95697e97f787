//! What Redis holds about a fleet's serve nodes, and the decisions made from it. Pure.
//!
//! - `costream:node:{id}`: a [`NodeRecord`] rewritten every second with a short TTL (a node
//!   whose record expired is gone), listed in the set `costream:nodes`.
//! - `costream:owner:{room}`: the node that owns the room (its WebRTC sessions, its room actor),
//!   renewed every second with a short TTL. LiveKit keeps the same room → node map in Redis.

use serde::{Deserialize, Serialize};

pub fn node_key(node_id: &str) -> String {
    format!("costream:node:{node_id}")
}

pub const NODES_KEY: &str = "costream:nodes";

pub fn owner_key(room_id: &str) -> String {
    format!("costream:owner:{room_id}")
}

/// One serve node as the others see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node_id: String,
    /// Where the other nodes forward requests for its rooms.
    pub url: String,
    pub version: String,
    /// Rooms it owns.
    pub rooms: usize,
    /// Participants in its rooms, and its WebRTC peer connections (publishers and viewers):
    /// what a new room is placed by.
    pub participants: usize,
    pub peer_connections: usize,
    /// Stopping: takes no new room.
    #[serde(default)]
    pub draining: bool,
}

impl NodeRecord {
    /// How busy the node is: peer connections weigh most (each is encryption and forwarding),
    /// then participants, then rooms (a room with nobody in it costs little).
    fn load(&self) -> usize {
        self.peer_connections * 4 + self.participants * 2 + self.rooms
    }
}

/// The node a new room goes to: the least loaded of those not draining (ties: `me` first, then
/// by id, so every node decides the same). `None`: no node is known (Redis away), create here.
pub fn least_loaded<'a>(nodes: &'a [NodeRecord], me: &str) -> Option<&'a NodeRecord> {
    nodes
        .iter()
        .filter(|n| !n.draining)
        .min_by_key(|n| (n.load(), n.node_id != me, n.node_id.clone()))
}

/// The room a request is about, from its path: the API's and pages' `/…/{room}` paths, WHIP,
/// WHEP and the built-in origin's files. `None`: not about one room (create, pool, assets…).
pub fn room_of_path(path: &str) -> Option<&str> {
    let mut parts = path.trim_start_matches('/').split('/');
    let room = match (parts.next()?, parts.next()) {
        ("api", Some("v1")) => match parts.next()? {
            "rooms" => parts.next()?,
            _ => return None,
        },
        ("whip" | "whep", Some(room)) => room,
        // `/live/{room}.flv` and `/live/{room}/{file}`.
        ("live", Some(file)) => file.strip_suffix(".flv").unwrap_or(file),
        _ => return None,
    };
    crate::fleet::record::validate_id("room id", room)
        .is_ok()
        .then_some(room)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any path a client makes up: no panic, and a room only when it is a valid room id
        /// found where the routes put one.
        #[test]
        fn any_path_names_a_valid_room_or_none(path in ".{0,200}") {
            if let Some(room) = room_of_path(&path) {
                prop_assert!(crate::fleet::record::validate_id("room id", room).is_ok());
                prop_assert!(path.contains(room));
            }
        }
    }

    fn node(id: &str, rooms: usize, participants: usize, peers: usize) -> NodeRecord {
        NodeRecord {
            node_id: id.into(),
            url: format!("http://{id}:8080"),
            version: "0".into(),
            rooms,
            participants,
            peer_connections: peers,
            draining: false,
        }
    }

    #[test]
    fn new_rooms_go_to_the_least_loaded_node_and_ties_stay_here() {
        let nodes = [node("a", 2, 3, 6), node("b", 3, 1, 1), node("c", 0, 0, 0)];
        assert_eq!(least_loaded(&nodes, "a").unwrap().node_id, "c");
        let tied = [node("a", 1, 0, 0), node("b", 1, 0, 0)];
        assert_eq!(least_loaded(&tied, "b").unwrap().node_id, "b");
        assert_eq!(least_loaded(&tied, "z").unwrap().node_id, "a");
        let mut draining = node("c", 0, 0, 0);
        draining.draining = true;
        let nodes = [node("a", 2, 3, 6), node("b", 3, 1, 1), draining];
        assert_eq!(least_loaded(&nodes, "a").unwrap().node_id, "b");
        assert!(least_loaded(&[], "a").is_none());
    }

    #[test]
    fn requests_name_their_room() {
        for (path, room) in [
            ("/api/v1/rooms/R1", Some("R1")),
            ("/api/v1/rooms/R1/live", Some("R1")),
            ("/api/v1/rooms/R1/requests/q/events", Some("R1")),
            ("/api/v1/rooms", None),
            ("/api/v1/rooms/", None),
            ("/api/v1/pool", None),
            ("/whip/R1", Some("R1")),
            ("/whip/R1/p1", Some("R1")),
            ("/whep/R1/p1/s1", Some("R1")),
            ("/live/R1.flv", Some("R1")),
            ("/live/R1/index.m3u8", Some("R1")),
            ("/host/R1", None),
            ("/assets/app.js", None),
            ("/whip/..%2f", None),
            ("/api/v1/rooms/a b", None),
            ("", None),
        ] {
            assert_eq!(room_of_path(path), room, "{path}");
        }
    }
}
