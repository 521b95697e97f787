//! What the fleet keeps in Redis, and the names it keeps it under. Pure: no IO here.
//!
//! - `costream:worker:{id}`: a [`WorkerRecord`] (JSON) with a short TTL, rewritten by every
//!   heartbeat of the worker. A worker whose key expired is gone.
//! - `costream:workers`: the set of worker ids, so serve finds the records without `SCAN`;
//!   members whose record expired are pruned by whoever notices.
//! - `costream:lease:{room}`: the room's placement, `{worker}/{epoch}` ([`Lease`]), set by the
//!   serve that places the room and kept alive by the worker running it.
//! - `costream:epoch:{room}`: the counter (`INCR`) that numbers placements: the fencing token.

use serde::{Deserialize, Serialize};

const PREFIX: &str = "costream";

pub fn worker_key(worker_id: &str) -> String {
    format!("{PREFIX}:worker:{worker_id}")
}

pub fn workers_set_key() -> String {
    format!("{PREFIX}:workers")
}

pub fn lease_key(room_id: &str) -> String {
    format!("{PREFIX}:lease:{room_id}")
}

pub fn epoch_key(room_id: &str) -> String {
    format!("{PREFIX}:epoch:{room_id}")
}

/// Whether a worker takes new rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    Serving,
    /// SIGTERM received: no new rooms; live ones stream on until they end or move.
    Draining,
}

/// A worker as it describes itself in Redis (and in `GET /api/v1/pool`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub worker_id: String,
    /// Where its mixers receive RTP (`--advertise-ip`).
    pub advertise_ip: std::net::IpAddr,
    /// Where serve connects to run a room's mixer there.
    pub control_addr: std::net::SocketAddr,
    /// Build of the worker (and of the mixers it starts).
    pub version: String,
    /// The serve ↔ worker protocol it speaks ([`super::wire::PROTOCOL`]).
    pub protocol: u32,
    /// Millicores admission may hand out on this worker.
    pub capacity: u64,
    /// Millicores held by its live rooms.
    pub used: u64,
    pub free: u64,
    /// Idle mixer processes ready to take a room.
    pub warm: usize,
    pub state: WorkerState,
    /// Rooms it runs now, with their placement epoch.
    pub rooms: Vec<WorkerRoom>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRoom {
    pub room_id: String,
    pub epoch: u64,
    /// Millicores it holds.
    pub cost: u64,
    /// Its serve was lost; the mixer still pushes, waiting for a serve to take it over.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub orphaned: bool,
}

impl WorkerRecord {
    /// Whether serve may place `room_id` here.
    pub fn hosts(&self, room_id: &str) -> bool {
        self.rooms.iter().any(|r| r.room_id == room_id)
    }
}

/// A room's placement: the worker that runs its mixer and the epoch of that placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub worker_id: String,
    pub epoch: u64,
}

impl Lease {
    /// The value stored under [`lease_key`].
    pub fn encode(&self) -> String {
        format!("{}/{}", self.worker_id, self.epoch)
    }

    pub fn decode(value: &str) -> Option<Lease> {
        let (worker_id, epoch) = value.rsplit_once('/')?;
        if worker_id.is_empty() {
            return None;
        }
        Some(Lease {
            worker_id: worker_id.to_string(),
            epoch: epoch.parse().ok()?,
        })
    }
}

/// Worker ids become Redis keys and log fields: keep them short and plain.
pub fn validate_worker_id(id: &str) -> Result<(), String> {
    validate_id("worker id", id)
}

/// Ids that become Redis keys and log fields (workers, rooms): 1-64 plain characters.
/// This machine's host name (a pod's name on Kubernetes) as far as it can be part of an id
/// (see [`validate_id`]), or `fallback` without one.
pub fn host_name_or(fallback: &str) -> String {
    let host: String = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(48)
        .collect();
    if host.is_empty() {
        fallback.to_string()
    } else {
        host
    }
}

pub fn validate_id(what: &str, id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {id:?} must be 1-64 characters of letters, digits, '-', '_' or '.'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_round_trips_and_rejects_garbage() {
        let lease = Lease {
            worker_id: "w-1.example".into(),
            epoch: 42,
        };
        assert_eq!(lease.encode(), "w-1.example/42");
        assert_eq!(Lease::decode(&lease.encode()), Some(lease));
        for bad in ["", "w1", "/3", "w1/", "w1/x", "w1/-1"] {
            assert_eq!(Lease::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn worker_ids_are_plain() {
        assert!(validate_worker_id("worker-7_a.b").is_ok());
        for bad in ["", "a b", "w:1", "w/1", &"x".repeat(65)] {
            assert!(validate_worker_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn record_is_json_with_lowercase_state() {
        let record = WorkerRecord {
            worker_id: "w1".into(),
            advertise_ip: "127.0.0.2".parse().unwrap(),
            control_addr: "127.0.0.2:7700".parse().unwrap(),
            version: "0.1.0".into(),
            protocol: 1,
            capacity: 1800,
            used: 600,
            free: 1200,
            warm: 1,
            state: WorkerState::Draining,
            rooms: vec![WorkerRoom {
                room_id: "r1".into(),
                epoch: 3,
                cost: 600,
                orphaned: true,
            }],
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains(r#""state":"draining""#), "{json}");
        assert_eq!(serde_json::from_str::<WorkerRecord>(&json).unwrap(), record);
        assert!(record.hosts("r1") && !record.hosts("r2"));
    }
}
