//! The fleet: mixers on many machines, coordinated through Redis.
//!
//! Pure: [`record`] (what Redis holds and its keys), [`placement`] (which worker takes a room),
//! [`wire`] (the serve ↔ worker protocol), [`resume`] (what a placement keeps so its mixer
//! outlives serve). IO: [`store`] (Redis), [`backend`] + [`link`]
//! (serve's side: a `MixerBackend` whose mixers run on workers), [`worker`] + [`session`]
//! (`costream worker`), [`worker_metrics`] (its `/metrics`: the rendering pure, then the HTTP).

pub mod backend;
pub mod link;
pub mod placement;
pub mod record;
pub mod resume;
mod session;
pub mod store;
pub mod wire;
pub mod worker;
pub mod worker_metrics;

use serde::Serialize;

pub use backend::{FleetBackend, FleetSettings};
pub use record::{WorkerRecord, WorkerState};
pub use store::FleetStore;

/// One worker in `GET /api/v1/pool`.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    pub worker_id: String,
    /// Where its mixers receive RTP.
    pub address: String,
    pub version: String,
    pub protocol: u32,
    pub state: WorkerState,
    /// Cores.
    pub capacity: f64,
    pub used: f64,
    pub free: f64,
    pub warm_mixers: usize,
    pub rooms: Vec<String>,
}

impl WorkerView {
    pub fn of(record: &WorkerRecord) -> Self {
        Self {
            worker_id: record.worker_id.clone(),
            address: record.advertise_ip.to_string(),
            version: record.version.clone(),
            protocol: record.protocol,
            state: record.state,
            capacity: crate::pool::cores(record.capacity),
            used: crate::pool::cores(record.used),
            free: crate::pool::cores(record.free),
            warm_mixers: record.warm,
            rooms: record.rooms.iter().map(|r| r.room_id.clone()).collect(),
        }
    }
}
