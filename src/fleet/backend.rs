//! serve's side of the fleet: a [`MixerBackend`] whose mixers run on `costream worker`s.
//!
//! Admission and placement decide from an in-memory view of the worker registry, refreshed from
//! Redis twice a second (as LiveKit's nodes read each other's stats), so going live never waits
//! on Redis and a Redis that is away is noticed as a stale view: new go-lives are then refused
//! with a message saying why, while live rooms keep their direct connections to their workers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use costream_mixer::control::VideoSpec;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::link::{LinkParams, RemoteMixer};
use super::placement::{place, Placement};
use super::record::{WorkerRecord, WorkerState};
use super::store::FleetStore;
use super::wire::PROTOCOL;
use super::WorkerView;
use crate::pool::admission::{expected_inputs, room_cost, RoomLoad};
use crate::pool::{
    cores, LaunchError, MixerBackend, MixerLink, MixerReport, PoolView, Refusal, RoomCost,
};

/// How often the registry is read.
const REFRESH: Duration = Duration::from_millis(500);
/// A view older than this is not trusted for placement (Redis away).
const STALE_AFTER: Duration = Duration::from_secs(3);
/// A worker that failed a room takes no room for this long (its record may outlive it by a TTL).
const SUSPECT_FOR: Duration = Duration::from_secs(15);

/// How serve uses the fleet (from `[cluster]` and `[pool]`).
#[derive(Clone)]
pub struct FleetSettings {
    pub secret: Option<Arc<[u8]>>,
    pub reserve_inputs: u32,
    pub retry_after_secs: u64,
    /// serve keeps its rooms across restarts: its mixers may outlive it (orphans).
    pub resumable: bool,
}

/// Shared handle to the fleet. Cheap to clone.
#[derive(Clone)]
pub struct FleetBackend {
    inner: Arc<Inner>,
}

struct Inner {
    store: FleetStore,
    settings: FleetSettings,
    state: Mutex<FleetState>,
    live_rooms: watch::Sender<usize>,
    /// Links open per room (a move has two for a moment).
    links: Mutex<HashMap<String, usize>>,
}

#[derive(Default)]
struct FleetState {
    workers: Vec<WorkerRecord>,
    refreshed_at: Option<Instant>,
    last_error: Option<String>,
    /// Workers that just failed a room, until when they are avoided.
    suspects: HashMap<String, Instant>,
    /// Admitted rooms of this serve.
    rooms: HashMap<String, RoomPlacement>,
    draining: bool,
}

struct RoomPlacement {
    cost: u64,
    video: VideoSpec,
    inputs: u32,
    /// Where its mixer runs or will run.
    worker_id: String,
}

impl FleetBackend {
    /// A fleet over `store`; the registry refresh runs until the process ends.
    pub fn start(store: FleetStore, settings: FleetSettings) -> Self {
        let backend = Self {
            inner: Arc::new(Inner {
                store,
                settings,
                state: Mutex::new(FleetState::default()),
                live_rooms: watch::Sender::new(0),
                links: Mutex::new(HashMap::new()),
            }),
        };
        tokio::spawn(refresh_forever(Arc::downgrade(&backend.inner)));
        backend
    }

    fn lock(&self) -> MutexGuard<'_, FleetState> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves once the registry has been read (or `within` passed): startup and tests.
    pub async fn wait_for_view(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.lock().refreshed_at.is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Holds `cost` for the admitted room on `worker_id`; returns the cost.
    fn hold(
        &self,
        mut st: MutexGuard<'_, FleetState>,
        room_id: &str,
        cost: u64,
        video: &VideoSpec,
        inputs: u32,
        worker_id: String,
    ) -> u64 {
        let placement = RoomPlacement {
            cost,
            video: *video,
            inputs,
            worker_id,
        };
        st.rooms.insert(room_id.to_string(), placement);
        drop(st);
        self.publish_live_rooms();
        cost
    }

    fn publish_live_rooms(&self) {
        let n = self.lock().rooms.len();
        self.inner.live_rooms.send_replace(n);
    }
}

impl FleetState {
    /// Millicores this serve placed on each worker that its record does not show yet.
    fn pending(&self, except_room: Option<&str>) -> HashMap<String, u64> {
        let mut pending = HashMap::new();
        for (room_id, placement) in &self.rooms {
            if Some(room_id.as_str()) == except_room {
                continue;
            }
            let shown = self
                .workers
                .iter()
                .any(|w| w.worker_id == placement.worker_id && w.hosts(room_id));
            if !shown {
                *pending.entry(placement.worker_id.clone()).or_default() += placement.cost;
            }
        }
        pending
    }

    fn suspects(&mut self, now: Instant) -> Vec<String> {
        self.suspects.retain(|_, until| *until > now);
        self.suspects.keys().cloned().collect()
    }

    fn fresh(&self, now: Instant) -> Result<(), String> {
        match self.refreshed_at {
            Some(at) if now.duration_since(at) <= STALE_AFTER => Ok(()),
            _ => Err(self
                .last_error
                .clone()
                .unwrap_or_else(|| "no answer from Redis yet".into())),
        }
    }
}

/// The worker (and placement epoch) where `room_id`'s mixer is orphaned, if one is.
fn orphan_of(workers: &[WorkerRecord], room_id: &str) -> Option<(String, u64)> {
    workers
        .iter()
        .filter(|w| w.protocol == PROTOCOL)
        .find_map(|w| {
            w.rooms
                .iter()
                .find(|r| r.room_id == room_id && r.orphaned)
                .map(|r| (w.worker_id.clone(), r.epoch))
        })
}

fn cost_of_room(video: &VideoSpec, inputs: u32, reserve_inputs: u32) -> u64 {
    room_cost(&RoomLoad::new(
        video,
        expected_inputs(inputs, reserve_inputs),
    ))
}

impl MixerBackend for FleetBackend {
    fn admit(&self, room_id: &str, video: &VideoSpec, inputs: u32) -> Result<u64, Refusal> {
        let settings = &self.inner.settings;
        let retry_after_secs = settings.retry_after_secs;
        let cost = cost_of_room(video, inputs, settings.reserve_inputs);
        let now = Instant::now();
        let mut st = self.lock();
        if st.draining {
            return Err(Refusal::Draining);
        }
        if let Err(reason) = st.fresh(now) {
            warn!(room = %room_id, %reason, "go-live refused: the fleet's registry is unreachable");
            return Err(Refusal::CoordinatorAway {
                reason,
                retry_after_secs: 5,
            });
        }
        // The previous serve's mixer still runs (orphaned) and is charged on its worker: the
        // room goes back there without being charged twice.
        if let Some((worker_id, _)) = orphan_of(&st.workers, room_id) {
            info!(room = %room_id, worker = %worker_id, "admitted onto the worker where its mixer is orphaned");
            return Ok(self.hold(st, room_id, cost, video, inputs, worker_id));
        }
        let avoid = st.suspects(now);
        let placement = place(
            &st.workers,
            &st.pending(Some(room_id)),
            cost,
            &avoid,
            PROTOCOL,
        );
        info!(room = %room_id, cost_millicores = cost, ?placement, workers = st.workers.len(),
            "fleet admission decision");
        match placement {
            Placement::On { worker_id, .. } => {
                Ok(self.hold(st, room_id, cost, video, inputs, worker_id))
            }
            Placement::NoFit(no_fit) => Err(Refusal::FleetFull {
                cost,
                best_free: no_fit.best_free,
                candidates: no_fit.candidates,
                known: no_fit.known,
                retry_after_secs,
            }),
        }
    }

    fn resize(&self, room_id: &str, video: &VideoSpec, inputs: u32) {
        let reserve = self.inner.settings.reserve_inputs;
        if let Some(placement) = self.lock().rooms.get_mut(room_id) {
            placement.cost = cost_of_room(video, inputs, reserve);
            placement.inputs = inputs;
        }
    }

    fn release(&self, room_id: &str) {
        if self.lock().rooms.remove(room_id).is_some() {
            info!(room = %room_id, "room released its fleet placement");
        }
        self.publish_live_rooms();
    }

    fn cost_of(&self, room_id: &str) -> Option<f64> {
        self.lock().rooms.get(room_id).map(|p| cores(p.cost))
    }

    fn launch(
        &self,
        room_id: &str,
        epoch: u64,
        reports: mpsc::Sender<MixerReport>,
    ) -> Result<Box<dyn MixerLink>, LaunchError> {
        let now = Instant::now();
        let mut st = self.lock();
        if let Err(reason) = st.fresh(now) {
            return Err(LaunchError::NoWorker(format!(
                "the fleet's registry (Redis) is unreachable: {reason}"
            )));
        }
        let avoid = st.suspects(now);
        let pending = st.pending(Some(room_id));
        let Some(placement) = st.rooms.get(room_id) else {
            return Err(LaunchError::NoWorker(
                "the room holds no fleet placement (not admitted)".into(),
            ));
        };
        let (cost, video, inputs, current) = (
            placement.cost,
            placement.video,
            placement.inputs,
            placement.worker_id.clone(),
        );
        // The previous serve's mixer, still pushing on a worker: take it over (the CDN sees no
        // change). Draining or not: the mixer runs there now.
        let orphan = orphan_of(&st.workers, room_id);
        // A restart after its worker failed, or a move off a draining worker, goes elsewhere:
        // re-placed on the current view.
        let current_serving = st
            .workers
            .iter()
            .any(|w| w.worker_id == current && w.state == WorkerState::Serving);
        let resume = orphan.as_ref().map(|(_, epoch)| *epoch);
        let worker_id = if let Some((orphan_worker, epoch)) = orphan {
            info!(room = %room_id, worker = %orphan_worker, epoch, "the room's mixer is orphaned on a worker: taking it over");
            orphan_worker
        } else if avoid.contains(&current) || !current_serving {
            match place(&st.workers, &pending, cost, &avoid, PROTOCOL) {
                Placement::On { worker_id, .. } => worker_id,
                Placement::NoFit(no_fit) => {
                    return Err(LaunchError::NoWorker(format!(
                        "no worker can take the room now ({:.2} cores needed, {:.2} free at most on {} of {} workers)",
                        cores(no_fit.cost), cores(no_fit.best_free), no_fit.candidates, no_fit.known
                    )));
                }
            }
        } else {
            current
        };
        let worker = st
            .workers
            .iter()
            .find(|w| w.worker_id == worker_id)
            .cloned()
            .expect("placed on a worker of the view");
        if let Some(placement) = st.rooms.get_mut(room_id) {
            placement.worker_id = worker_id.clone();
        }
        // A worker just lost is not asked for the room's old placement.
        let workers = st
            .workers
            .iter()
            .filter(|w| !avoid.contains(&w.worker_id))
            .cloned()
            .collect();
        drop(st);
        let take_over_leased = {
            let mut links = self.inner.links.lock().unwrap_or_else(|e| e.into_inner());
            let open = links.entry(room_id.to_string()).or_default();
            *open += 1;
            *open == 1
        };
        let failures = Arc::downgrade(&self.inner);
        let placed = Arc::downgrade(&self.inner);
        let ended = Arc::downgrade(&self.inner);
        let link = RemoteMixer::start(LinkParams {
            store: self.inner.store.clone(),
            secret: self.inner.settings.secret.clone(),
            room_id: room_id.to_string(),
            room_epoch: epoch,
            worker,
            video,
            inputs,
            reports,
            on_worker_lost: Arc::new(move |room_id: &str, worker_id: &str| {
                if let Some(inner) = failures.upgrade() {
                    let mut st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
                    warn!(room = %room_id, worker = %worker_id, "worker lost for a room; avoiding it for new placements for {SUSPECT_FOR:?}");
                    st.suspects
                        .insert(worker_id.to_string(), Instant::now() + SUSPECT_FOR);
                }
            }),
            resume,
            resumable: self.inner.settings.resumable,
            take_over_leased,
            workers,
            on_placed: Arc::new(move |room_id: &str, worker_id: &str| {
                if let Some(inner) = placed.upgrade() {
                    let mut st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(placement) = st.rooms.get_mut(room_id) {
                        placement.worker_id = worker_id.to_string();
                    }
                }
            }),
            on_ended: Arc::new(move |room_id: &str| {
                if let Some(inner) = ended.upgrade() {
                    let mut links = inner.links.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(open) = links.get_mut(room_id) {
                        *open = open.saturating_sub(1);
                        if *open == 0 {
                            links.remove(room_id);
                        }
                    }
                }
            }),
        });
        Ok(Box::new(link))
    }

    fn view(&self) -> PoolView {
        let st = self.lock();
        let serving = |w: &&WorkerRecord| w.protocol == PROTOCOL;
        let capacity: u64 = st.workers.iter().filter(serving).map(|w| w.capacity).sum();
        let used: u64 = st.workers.iter().filter(serving).map(|w| w.used).sum();
        let free: u64 = st.workers.iter().filter(serving).map(|w| w.free).sum();
        PoolView {
            capacity: cores(capacity),
            capacity_cores: cores(capacity),
            max_utilization: 1.0,
            used: cores(used),
            free: cores(free),
            warm_mixers: st.workers.iter().map(|w| w.warm).sum(),
            warm_target: 0,
            warm_pids: Vec::new(),
            mixer_binary: String::new(),
            draining: st.draining,
            rooms: st
                .rooms
                .iter()
                .map(|(room_id, p)| RoomCost {
                    room_id: room_id.clone(),
                    cost: cores(p.cost),
                })
                .collect(),
            workers: Some(st.workers.iter().map(WorkerView::of).collect()),
        }
    }

    fn start_draining(&self) {
        self.lock().draining = true;
    }

    fn is_draining(&self) -> bool {
        self.lock().draining
    }

    fn live_rooms(&self) -> watch::Receiver<usize> {
        self.inner.live_rooms.subscribe()
    }

    fn shutdown(&self) {}
}

/// Reads the registry every [`REFRESH`] while the fleet exists.
async fn refresh_forever(inner: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut known: Vec<String> = Vec::new();
    let mut redis_was_ok = true;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let read = inner.store.workers().await;
        let mut st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
        match read {
            Ok((workers, unreadable)) => {
                if !redis_was_ok {
                    info!("fleet registry readable again (Redis is back)");
                    redis_was_ok = true;
                }
                let ids: Vec<String> = workers.iter().map(|w| w.worker_id.clone()).collect();
                for w in &workers {
                    if !known.contains(&w.worker_id) {
                        if w.protocol == PROTOCOL {
                            info!(worker = %w.worker_id, address = %w.advertise_ip, version = %w.version,
                                capacity_cores = cores(w.capacity), "worker joined the fleet");
                        } else {
                            warn!(worker = %w.worker_id, worker_protocol = w.protocol, serve_protocol = PROTOCOL,
                                version = %w.version,
                                "worker speaks another protocol version: no room is placed on it (upgrade it or this serve)");
                        }
                    }
                }
                for gone in known.iter().filter(|id| !ids.contains(id)) {
                    warn!(worker = %gone, "worker left the fleet (record expired or removed)");
                }
                for id in unreadable {
                    warn!(worker = %id, "unreadable worker record (another version?); ignored");
                }
                known = ids;
                st.workers = workers;
                st.refreshed_at = Some(Instant::now());
                st.last_error = None;
            }
            Err(e) => {
                if redis_was_ok {
                    warn!("cannot read the fleet registry: {e}; live rooms keep streaming, new go-lives wait for Redis");
                    redis_was_ok = false;
                }
                st.last_error = Some(e.to_string());
            }
        }
    }
}
