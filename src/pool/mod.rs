//! The mixer pool: mixer processes exist only for live rooms, plus a few warm ones that have
//! already initialized GStreamer so going live skips the cold start. Admission by cost
//! ([`admission`]) decides which rooms may go live; drain and rolling upgrades happen here too.
//!
//! Nothing here polls: refills are tasks that end when their mixer is warm, and a warm mixer
//! sleeps in a blocking read until it gets `Start`. An idle serve costs no CPU.

pub mod admission;
mod backend;
#[cfg(test)]
pub mod fake;
mod process;
mod spawner;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use costream_mixer::control::VideoSpec;
use serde::Serialize;
use tokio::sync::watch;
use tracing::{info, warn};

use admission::{expected_inputs, Ledger, RoomLoad};
pub use admission::{Capacity, Decision};
pub use backend::{LaunchError, MixerBackend, MixerInfo, MixerLink};
pub use process::{MixerChild, MixerProcess, MixerReport};
pub use spawner::{MixerEnv, SpawnError, Spawner};

/// A warm mixer that has not said `Hello` by then is broken; drop it.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// How the pool is set up (from `[pool]` and `[mixer]` in the config).
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub binary: PathBuf,
    /// Warm mixers kept ready.
    pub warm: usize,
    pub capacity: Capacity,
    /// Inputs a room going live is charged for at least ([`expected_inputs`]).
    pub reserve_inputs: u32,
    /// `Retry-After` seconds suggested to a room refused for capacity.
    pub retry_after_secs: u64,
}

/// Why a room may not go live now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not enough free capacity for this room's cost (millicores).
    Full {
        cost: u64,
        free: u64,
        capacity: u64,
        retry_after_secs: u64,
    },
    /// SIGTERM received: the server is draining.
    Draining,
    /// No worker of the fleet has room for this room's cost (millicores).
    FleetFull {
        cost: u64,
        /// Most free on any worker taking rooms.
        best_free: u64,
        /// Workers taking rooms / known.
        candidates: usize,
        known: usize,
        retry_after_secs: u64,
    },
    /// The fleet's coordinator (Redis) cannot be reached, so no placement can be made.
    CoordinatorAway {
        reason: String,
        retry_after_secs: u64,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Full {
                cost,
                free,
                capacity,
                ..
            } => write!(
                f,
                "this server is at capacity: going live needs {:.2} cores of mixing and only \
                 {:.2} of {:.2} are free (rooms already live keep their share); retry later, \
                 use another server, or ask for a smaller video (width, height, fps)",
                cores(*cost),
                cores(*free),
                cores(*capacity)
            ),
            Refusal::Draining => write!(
                f,
                "this server is shutting down and admits no new rooms or broadcasts; use another server"
            ),
            Refusal::FleetFull {
                cost,
                best_free,
                candidates,
                known,
                ..
            } => write!(
                f,
                "no mixer worker can take this room: going live needs {:.2} cores and the most \
                 free on any of the {candidates} workers taking rooms is {:.2} ({known} workers \
                 registered); retry later, add workers, or ask for a smaller video",
                cores(*cost),
                cores(*best_free)
            ),
            Refusal::CoordinatorAway { reason, .. } => write!(
                f,
                "the mixer fleet's coordinator (Redis) is unreachable, so no room can go live \
                 now ({reason}); rooms already live keep streaming; retry in a few seconds"
            ),
        }
    }
}

impl std::error::Error for Refusal {}

/// `GET /api/v1/pool`.
#[derive(Debug, Clone, Serialize)]
pub struct PoolView {
    /// Cores mixers may use: `capacity_cores × max_utilization`.
    pub capacity: f64,
    pub capacity_cores: f64,
    pub max_utilization: f64,
    /// Cores reserved by live rooms.
    pub used: f64,
    pub free: f64,
    /// Idle mixer processes ready to take a room.
    pub warm_mixers: usize,
    /// Target size of the warm pool.
    pub warm_target: usize,
    /// OS process ids of the warm mixers.
    pub warm_pids: Vec<u32>,
    /// The mixer executable new rooms get.
    pub mixer_binary: String,
    /// True after SIGTERM: nothing new is admitted.
    pub draining: bool,
    pub rooms: Vec<RoomCost>,
    /// The fleet's workers (absent on a server that mixes on its own machine only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<Vec<crate::fleet::WorkerView>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoomCost {
    pub room_id: String,
    /// Cores reserved for this room.
    pub cost: f64,
}

/// Millicores as cores, for views and messages.
pub fn cores(millicores: u64) -> f64 {
    millicores as f64 / 1000.0
}

/// Shared handle to the pool. Cheap to clone.
#[derive(Clone)]
pub struct MixerPool {
    inner: Arc<Inner>,
}

struct Inner {
    spawner: Spawner,
    state: Mutex<PoolState>,
    /// Number of rooms holding a reservation (drain waits for 0).
    live_rooms: watch::Sender<usize>,
}

struct PoolState {
    binary: PathBuf,
    /// Bumped when the binary changes: refills of an older binary are thrown away.
    generation: u64,
    warm: VecDeque<MixerChild>,
    /// Refills under way.
    warming: usize,
    target: usize,
    ledger: Ledger,
    capacity: Capacity,
    reserve_inputs: u32,
    retry_after_secs: u64,
    draining: bool,
}

impl MixerPool {
    /// A pool; warm mixers start once [`MixerPool::refill`] is called inside a runtime.
    pub fn new(settings: PoolSettings, spawner: Spawner) -> Self {
        let state = PoolState {
            binary: settings.binary,
            generation: 0,
            warm: VecDeque::new(),
            warming: 0,
            target: settings.warm,
            ledger: Ledger::new(settings.capacity.millicores()),
            capacity: settings.capacity,
            reserve_inputs: settings.reserve_inputs,
            retry_after_secs: settings.retry_after_secs,
            draining: false,
        };
        Self {
            inner: Arc::new(Inner {
                spawner,
                state: Mutex::new(state),
                live_rooms: watch::Sender::new(0),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A mixer process for a room: a warm one if there is one (then the pool refills in the
    /// background), else a cold one started now.
    pub fn take(&self) -> Result<MixerChild, SpawnError> {
        let (warm, binary) = {
            let mut st = self.lock();
            let mut found = None;
            while let Some(mut child) = st.warm.pop_front() {
                if child.is_alive() {
                    found = Some(child);
                    break;
                }
                warn!(pid = ?child.pid(), "a warm mixer died while idle; discarding it");
            }
            (found, st.binary.clone())
        };
        self.refill();
        match warm {
            Some(child) => Ok(child),
            None => MixerChild::spawn(&self.inner.spawner, &binary),
        }
    }

    /// Starts warm mixers until the pool (ready + warming) reaches its target.
    pub fn refill(&self) {
        let mut st = self.lock();
        while st.warm.len() + st.warming < st.target {
            st.warming += 1;
            let (binary, generation) = (st.binary.clone(), st.generation);
            let pool = self.clone();
            tokio::spawn(async move { pool.warm_one(binary, generation).await });
        }
    }

    async fn warm_one(&self, binary: PathBuf, generation: u64) {
        let spawner = self.inner.spawner.clone();
        let spawned = {
            let binary = binary.clone();
            // The fork runs on the spawner thread; this only waits for it.
            tokio::task::spawn_blocking(move || MixerChild::spawn(&spawner, &binary)).await
        };
        let warmed = match spawned {
            Ok(Ok(mut child)) => {
                match tokio::time::timeout(WARM_UP_TIMEOUT, child.warm_up()).await {
                    Ok(Ok(())) => Ok(child),
                    Ok(Err(reason)) => Err(reason),
                    Err(_) => Err(format!("no hello within {WARM_UP_TIMEOUT:?}")),
                }
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let mut st = self.lock();
        st.warming -= 1;
        match warmed {
            Ok(child) if st.generation == generation && st.warm.len() < st.target => {
                info!(pid = ?child.pid(), binary = %binary.display(), "warm mixer ready");
                st.warm.push_back(child);
            }
            // Superseded by a new binary or the pool shrank: dropping kills it.
            Ok(_) => {}
            // Not retried: a broken binary must not become a fork loop. Rooms still start
            // (cold) and say why if the binary cannot run.
            Err(reason) => warn!(binary = %binary.display(), %reason, "warm mixer failed"),
        }
    }

    /// Points new rooms (and warm mixers) at another mixer executable. Rooms already live keep
    /// the process they run on; warm mixers of the old binary are stopped and replaced.
    pub fn set_binary(&self, binary: PathBuf) {
        let old: Vec<MixerChild> = {
            let mut st = self.lock();
            if st.binary == binary {
                return;
            }
            info!(old = %st.binary.display(), new = %binary.display(), "mixer binary changed");
            st.binary = binary;
            st.generation += 1;
            st.warm.drain(..).collect()
        };
        // Dropping closes their stdin and kills them (kill_on_drop).
        drop(old);
        self.refill();
    }

    pub fn binary(&self) -> PathBuf {
        self.lock().binary.clone()
    }

    /// Admission: whether `room_id` may go live with `video` and `inputs` participants now; if
    /// so its cost is reserved until [`MixerPool::release`]. Logs the decision with its inputs.
    pub fn admit(&self, room_id: &str, video: &VideoSpec, inputs: u32) -> Result<u64, Refusal> {
        let mut st = self.lock();
        if st.draining {
            return Err(Refusal::Draining);
        }
        let load = RoomLoad::new(video, expected_inputs(inputs, st.reserve_inputs));
        let decision = st.ledger.admit(room_id, load);
        info!(
            room = %room_id, admitted = decision.admitted, cost_millicores = decision.cost,
            used_before = decision.used_before, capacity = decision.capacity,
            width = load.width, height = load.height, fps = load.fps,
            bitrate_kbps = load.bitrate_kbps, inputs = load.inputs, participants = inputs,
            "admission decision"
        );
        let rooms = st.ledger.rooms().count();
        drop(st);
        self.inner.live_rooms.send_replace(rooms);
        if decision.admitted {
            Ok(decision.cost)
        } else {
            Err(Refusal::Full {
                cost: decision.cost,
                free: decision.capacity.saturating_sub(decision.used_before),
                capacity: decision.capacity,
                retry_after_secs: self.lock().retry_after_secs,
            })
        }
    }

    /// Re-charges a live room whose participants changed (never refused; see `Ledger::resize`).
    pub fn resize(&self, room_id: &str, video: &VideoSpec, inputs: u32) -> Option<u64> {
        let mut st = self.lock();
        let load = RoomLoad::new(video, expected_inputs(inputs, st.reserve_inputs));
        let before = st.ledger.cost_of(room_id)?;
        let cost = st.ledger.resize(room_id, load)?;
        if cost != before {
            info!(room = %room_id, inputs = load.inputs, cost_millicores = cost,
                used = st.ledger.used(), capacity = st.ledger.capacity(), "room re-charged");
        }
        Some(cost)
    }

    pub fn release(&self, room_id: &str) {
        let mut st = self.lock();
        if let Some(cost) = st.ledger.release(room_id) {
            info!(room = %room_id, cost_millicores = cost, used = st.ledger.used(), "room released its capacity");
        }
        let rooms = st.ledger.rooms().count();
        drop(st);
        self.inner.live_rooms.send_replace(rooms);
    }

    /// (capacity, used, free) in millicores: a fleet worker's record.
    pub fn millicores(&self) -> (u64, u64, u64) {
        let st = self.lock();
        (st.ledger.capacity(), st.ledger.used(), st.ledger.free())
    }

    /// Millicores reserved by `room_id`, while it is live.
    pub fn millicores_of(&self, room_id: &str) -> Option<u64> {
        self.lock().ledger.cost_of(room_id)
    }

    /// Idle mixers ready now.
    pub fn warm_count(&self) -> usize {
        self.lock().warm.len()
    }

    /// Cores reserved by `room_id`, while it is live.
    pub fn cost_of(&self, room_id: &str) -> Option<f64> {
        self.lock().ledger.cost_of(room_id).map(cores)
    }

    /// Stops admitting (SIGTERM): `/readyz` says 503, creating rooms and going live too.
    pub fn start_draining(&self) {
        self.lock().draining = true;
    }

    pub fn is_draining(&self) -> bool {
        self.lock().draining
    }

    /// Resolves once no room is live.
    pub async fn wait_idle(&self) {
        let mut rx = self.inner.live_rooms.subscribe();
        let _ = rx.wait_for(|&n| n == 0).await;
    }

    /// Kills the warm mixers and keeps the pool empty (shutdown).
    pub fn shutdown(&self) {
        let old: Vec<MixerChild> = {
            let mut st = self.lock();
            st.target = 0;
            st.generation += 1;
            st.warm.drain(..).collect()
        };
        drop(old);
    }

    pub fn view(&self) -> PoolView {
        let st = self.lock();
        PoolView {
            capacity: cores(st.ledger.capacity()),
            capacity_cores: st.capacity.cores,
            max_utilization: st.capacity.max_utilization,
            used: cores(st.ledger.used()),
            free: cores(st.ledger.free()),
            warm_mixers: st.warm.len(),
            warm_target: st.target,
            warm_pids: st.warm.iter().filter_map(MixerChild::pid).collect(),
            mixer_binary: st.binary.display().to_string(),
            draining: st.draining,
            rooms: room_costs(&st.ledger),
            workers: None,
        }
    }
}

/// The rooms a ledger charges, for [`PoolView::rooms`].
fn room_costs(ledger: &Ledger) -> Vec<RoomCost> {
    ledger
        .rooms()
        .map(|(room_id, cost)| RoomCost {
            room_id: room_id.to_string(),
            cost: cores(cost),
        })
        .collect()
}

impl MixerBackend for MixerPool {
    fn admit(&self, room_id: &str, video: &VideoSpec, inputs: u32) -> Result<u64, Refusal> {
        MixerPool::admit(self, room_id, video, inputs)
    }

    fn resize(&self, room_id: &str, video: &VideoSpec, inputs: u32) {
        MixerPool::resize(self, room_id, video, inputs);
    }

    fn release(&self, room_id: &str) {
        MixerPool::release(self, room_id);
    }

    fn cost_of(&self, room_id: &str) -> Option<f64> {
        MixerPool::cost_of(self, room_id)
    }

    fn launch(
        &self,
        room_id: &str,
        epoch: u64,
        reports: tokio::sync::mpsc::Sender<MixerReport>,
    ) -> Result<Box<dyn MixerLink>, LaunchError> {
        // A warm process when there is one. A restart after a crash also comes here, so it runs
        // the pool's current binary (after a rolling upgrade: the new one).
        let child = self.take()?;
        Ok(Box::new(child.attach(room_id, epoch, reports)))
    }

    fn view(&self) -> PoolView {
        MixerPool::view(self)
    }

    fn start_draining(&self) {
        MixerPool::start_draining(self);
    }

    fn is_draining(&self) -> bool {
        MixerPool::is_draining(self)
    }

    fn live_rooms(&self) -> watch::Receiver<usize> {
        self.inner.live_rooms.subscribe()
    }

    fn shutdown(&self) {
        MixerPool::shutdown(self);
    }
}
