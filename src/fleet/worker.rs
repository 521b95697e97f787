//! `costream worker`: runs mixers for rooms that serve nodes place on this machine.
//!
//! The same pool as serve's (warm mixers, admission by cost, crash-safe children), plus: a
//! record in Redis refreshed every second with a short TTL (a worker that stops refreshing is
//! gone), a TCP port where serve opens rooms ([`super::session`]), and a drain on SIGTERM (no
//! new rooms; live ones stream on until they end or `--drain-timeout-secs`). Opt-in, its own
//! Prometheus series on `--metrics-listen` ([`super::worker_metrics`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{info, warn};

use super::record::{validate_worker_id, WorkerRecord, WorkerRoom, WorkerState};
use super::session::Lines;
use super::store::{redact_url, FleetStore};
use super::wire;
use crate::pool::{Capacity, MixerEnv, MixerPool, PoolSettings, Spawner};

/// How often the record is rewritten, and how long it lives unrefreshed.
const HEARTBEAT: Duration = Duration::from_secs(1);
const RECORD_TTL: Duration = Duration::from_secs(5);
/// A mixer whose worker says nothing for this long stops by itself (the worker was frozen or
/// cut off; the room has been moved).
const MIXER_WATCHDOG: Duration = Duration::from_secs(3);
/// Connections not yet authenticated (each has 5 s to open a room): a flood of idle
/// connections takes at most these slots, never the rooms already placed.
const MAX_UNAUTHENTICATED: usize = 32;
/// After the drain deadline, how long serve has to move the rooms (its own limits for a
/// handover add up to about 14 s) before this worker exits anyway.
const MOVE_WAIT: Duration = Duration::from_secs(20);

/// What `costream worker` is started with (see `cli::WorkerArgs`).
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub redis_url: String,
    pub advertise_ip: IpAddr,
    /// Where serve connects; port 0 picks one (the record says which).
    pub listen: SocketAddr,
    pub worker_id: String,
    pub capacity_cores: f64,
    pub max_utilization: f64,
    pub warm: usize,
    pub reserve_inputs: u32,
    pub binary: PathBuf,
    pub secret: Option<Arc<[u8]>>,
    pub drain_timeout: Duration,
    /// How long a mixer whose serve was lost waits for a serve to take it over.
    pub orphan_grace: Duration,
    /// Where to serve `GET /metrics` and `GET /healthz` (none: no endpoint).
    pub metrics_listen: Option<SocketAddr>,
}

/// One placement in the worker's ledger.
struct Placement {
    room_id: String,
    epoch: u64,
    /// The mixer's process, once one is attached (for its `/proc` figures in the metrics).
    mixer_pid: Option<u32>,
    /// Its serve was lost: waiting for a serve to take it over.
    orphaned: bool,
}

/// Shared by the worker's tasks.
pub struct WorkerCtx {
    pub id: String,
    pub version: String,
    pub advertise_ip: IpAddr,
    pub control_addr: SocketAddr,
    pub pool: MixerPool,
    pub store: FleetStore,
    pub secret: Option<Arc<[u8]>>,
    pub orphan_grace: Duration,
    draining: AtomicBool,
    /// Live placements by ledger key (`room@epoch`).
    rooms: Mutex<HashMap<String, Placement>>,
    live: watch::Sender<usize>,
    /// Set at the drain deadline: every placement asks serve to move its room.
    moving: watch::Sender<bool>,
    /// Orphaned placements by ledger key: where a serve's `Resume` hands its connection.
    orphans: Mutex<HashMap<String, mpsc::Sender<Lines>>>,
}

impl WorkerCtx {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Becomes true when this worker's rooms must move (its drain deadline came).
    pub fn move_requests(&self) -> watch::Receiver<bool> {
        self.moving.subscribe()
    }

    /// Records a placement; false when it is already open here (a replayed opening).
    pub fn room_started(&self, key: &str, room_id: &str, epoch: u64) -> bool {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        if rooms.contains_key(key) {
            return false;
        }
        let placement = Placement {
            room_id: room_id.to_string(),
            epoch,
            mixer_pid: None,
            orphaned: false,
        };
        rooms.insert(key.to_string(), placement);
        self.live.send_replace(rooms.len());
        true
    }

    /// Whether placement `key` runs here.
    pub fn hosts(&self, key: &str) -> bool {
        self.rooms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(key)
    }

    /// The placement's mixer process is running as `pid`.
    pub fn mixer_attached(&self, key: &str, pid: Option<u32>) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(placement) = rooms.get_mut(key) {
            placement.mixer_pid = pid;
        }
    }

    /// Mixer process ids by (room, epoch), of the placements that have one.
    pub fn mixer_pids(&self) -> HashMap<(String, u64), u32> {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms
            .values()
            .filter_map(|p| Some(((p.room_id.clone(), p.epoch), p.mixer_pid?)))
            .collect()
    }

    pub fn room_ended(&self, key: &str) {
        self.orphans_lock().remove(key);
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms.remove(key);
        self.live.send_replace(rooms.len());
    }

    fn orphans_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::Sender<Lines>>> {
        self.orphans.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The placement lost its serve: a `Resume` may hand it a new connection through `takeover`.
    /// The registry shows it at once, so a serve starting right now finds it.
    pub fn orphaned(self: &Arc<Self>, key: &str, takeover: mpsc::Sender<Lines>) {
        self.orphans_lock().insert(key.to_string(), takeover);
        self.set_orphaned(key, true);
        // Not awaited: the placement's loop keeps the mixer's keepalives going meanwhile.
        let ctx = self.clone();
        tokio::spawn(async move { publish(&ctx).await });
    }

    /// The way to an orphaned placement, taken once (a second `Resume` finds none).
    pub fn take_orphan(&self, key: &str) -> Option<mpsc::Sender<Lines>> {
        self.orphans_lock().remove(key)
    }

    /// A serve took the placement over.
    pub fn adopted(&self, key: &str) {
        self.orphans_lock().remove(key);
        self.set_orphaned(key, false);
    }

    fn set_orphaned(&self, key: &str, orphaned: bool) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(placement) = rooms.get_mut(key) {
            placement.orphaned = orphaned;
        }
    }

    /// This worker as the registry shows it.
    pub fn record(&self) -> WorkerRecord {
        let (capacity, used, free) = self.pool.millicores();
        let rooms = self
            .rooms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(key, placement)| WorkerRoom {
                room_id: placement.room_id.clone(),
                epoch: placement.epoch,
                cost: self.pool.millicores_of(key).unwrap_or(0),
                orphaned: placement.orphaned,
            })
            .collect();
        WorkerRecord {
            worker_id: self.id.clone(),
            advertise_ip: self.advertise_ip,
            control_addr: self.control_addr,
            version: self.version.clone(),
            protocol: wire::PROTOCOL,
            capacity,
            used,
            free,
            warm: self.pool.warm_count(),
            state: if self.is_draining() {
                WorkerState::Draining
            } else {
                WorkerState::Serving
            },
            rooms,
        }
    }
}

/// A default worker id: the host name (a pod's name on Kubernetes) and the process id.
pub fn default_worker_id() -> String {
    format!(
        "{}-{}",
        super::record::host_name_or("worker"),
        std::process::id()
    )
}

/// `costream worker` from its command line.
pub async fn run_cli(args: crate::cli::WorkerArgs) -> anyhow::Result<()> {
    let binary = match &args.mixer_binary {
        Some(binary) => binary.clone(),
        None => std::env::current_exe().context("cannot find this executable to run mixers")?,
    };
    let secret = match &args.cluster_secret {
        Some(s) if s.chars().count() < crate::config::MIN_SECRET_CHARS => anyhow::bail!(
            "COSTREAM_CLUSTER_SECRET (--cluster-secret) must be at least {} characters",
            crate::config::MIN_SECRET_CHARS
        ),
        Some(s) => Some(Arc::from(s.as_bytes())),
        None => None,
    };
    if !(args.max_utilization > 0.0 && args.max_utilization <= 1.0) {
        anyhow::bail!("--max-utilization must be in (0, 1]");
    }
    let capacity_cores = args
        .capacity_cores
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64));
    if !(capacity_cores > 0.0 && capacity_cores.is_finite()) {
        anyhow::bail!("--capacity-cores must be a positive number of cores");
    }
    run(WorkerSettings {
        redis_url: args.redis,
        advertise_ip: args.advertise_ip,
        listen: SocketAddr::new(args.advertise_ip, args.port),
        worker_id: args.worker_id.unwrap_or_else(default_worker_id),
        capacity_cores,
        max_utilization: args.max_utilization,
        warm: args.warm,
        reserve_inputs: args.reserve_inputs,
        binary,
        secret,
        drain_timeout: Duration::from_secs(args.drain_timeout_secs),
        orphan_grace: Duration::from_secs(args.orphan_grace_secs),
        metrics_listen: args.metrics_listen,
    })
    .await
}

pub async fn run(settings: WorkerSettings) -> anyhow::Result<()> {
    validate_worker_id(&settings.worker_id).map_err(anyhow::Error::msg)?;
    if settings.advertise_ip.is_unspecified() || settings.advertise_ip.is_multicast() {
        anyhow::bail!(
            "--advertise-ip {} is not an address serve can send to: give this machine's address \
             as serve reaches it (on Kubernetes, the pod IP)",
            settings.advertise_ip
        );
    }
    if settings.secret.is_none() && !settings.listen.ip().is_loopback() {
        anyhow::bail!(
            "a worker listening on {} needs the cluster secret: set COSTREAM_CLUSTER_SECRET \
             (the same on serve and every worker, at least 32 characters), or listen on loopback",
            settings.listen
        );
    }
    let store = FleetStore::connect(&settings.redis_url)?;
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", settings.listen))?;
    let metrics_listener = match settings.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot serve metrics on {addr} (--metrics-listen)"))?,
        ),
        None => None,
    };
    let control_addr = listener.local_addr()?;
    let spawner = Spawner::start(
        tokio::runtime::Handle::current(),
        MixerEnv {
            rtp_bind: settings.advertise_ip,
            watchdog: Some(MIXER_WATCHDOG),
            // Recordings are serve's files: a worker's mixers refuse to record (say so).
            recordings_dir: None,
        },
    )
    .context("cannot start the mixer spawner thread")?;
    let pool = MixerPool::new(
        PoolSettings {
            binary: settings.binary.clone(),
            warm: settings.warm,
            capacity: Capacity {
                cores: settings.capacity_cores,
                max_utilization: settings.max_utilization,
            },
            reserve_inputs: settings.reserve_inputs,
            retry_after_secs: 5,
        },
        spawner,
    );
    pool.refill();
    let ctx = Arc::new(WorkerCtx {
        id: settings.worker_id.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        advertise_ip: settings.advertise_ip,
        control_addr,
        pool: pool.clone(),
        store: store.clone(),
        secret: settings.secret.clone(),
        orphan_grace: settings.orphan_grace,
        draining: AtomicBool::new(false),
        rooms: Mutex::new(HashMap::new()),
        live: watch::Sender::new(0),
        moving: watch::Sender::new(false),
        orphans: Mutex::new(HashMap::new()),
    });
    info!(worker = %ctx.id, redis = %redact_url(&settings.redis_url), %control_addr,
        advertise_ip = %settings.advertise_ip, capacity_cores = settings.capacity_cores,
        warm = settings.warm, protocol = wire::PROTOCOL, "worker starting");
    let heartbeat = tokio::spawn(heartbeat_forever(ctx.clone()));
    let metrics = match metrics_listener {
        Some(listener) => {
            info!(addr = %listener.local_addr()?, "serving this worker's metrics at /metrics");
            let serving = super::worker_metrics::serve(ctx.clone(), listener);
            Some(tokio::spawn(serving))
        }
        None => None,
    };
    // Scripts and tests read this line.
    println!("costream worker {} listening on {control_addr}", ctx.id);

    let accept = tokio::spawn(accept_forever(ctx.clone(), listener));
    let mut signals = crate::serve::Signals::new();
    signals.next().await;
    ctx.draining.store(true, Ordering::Relaxed);
    pool.start_draining();
    info!(timeout_secs = settings.drain_timeout.as_secs(),
        "draining: taking no new rooms; live rooms stream on until they end (signal again to stop now)");
    publish(&ctx).await;
    let mut live = ctx.live.subscribe();
    let deadline_reached = tokio::select! {
        _ = live.wait_for(|&n| n == 0) => { info!("drained: no room is live"); false }
        _ = tokio::time::sleep(settings.drain_timeout) => true,
        _ = signals.next() => { warn!("second signal: stopping now"); false }
    };
    if deadline_reached {
        // Make before break: serve starts each room elsewhere and stops its mixer here once
        // the successor has the outputs. Rooms not moved by then move the hard way (we exit).
        warn!(
            rooms = *live.borrow(),
            "drain deadline reached: moving the rooms still live to other workers"
        );
        ctx.moving.send_replace(true);
        tokio::select! {
            _ = live.wait_for(|&n| n == 0) => info!("every room moved"),
            _ = tokio::time::sleep(MOVE_WAIT) => warn!("rooms not moved within {MOVE_WAIT:?}: stopping them"),
            _ = signals.next() => warn!("second signal: stopping now"),
        }
    }
    accept.abort();
    heartbeat.abort();
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    if let Err(e) = store.remove_worker(&ctx.id).await {
        warn!("could not remove this worker's record (it expires by itself): {e}");
    }
    pool.shutdown();
    info!("worker stopped");
    Ok(())
}

async fn accept_forever(ctx: Arc<WorkerCtx>, listener: TcpListener) {
    let slots = Arc::new(Semaphore::new(MAX_UNAUTHENTICATED));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            warn!(%peer, "too many connections opening at once; refusing one");
            continue;
        };
        tokio::spawn(super::session::serve_connection(ctx.clone(), stream, slot));
    }
}

async fn heartbeat_forever(ctx: Arc<WorkerCtx>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ok = true;
    loop {
        tick.tick().await;
        match ctx.store.publish_worker(&ctx.record(), RECORD_TTL).await {
            Ok(()) if !ok => {
                info!("registered again (Redis is back)");
                ok = true;
            }
            Ok(()) => {}
            Err(e) if ok => {
                warn!("cannot refresh this worker's record: {e}; live rooms keep streaming");
                ok = false;
            }
            Err(_) => {}
        }
    }
}

async fn publish(ctx: &WorkerCtx) {
    if let Err(e) = ctx.store.publish_worker(&ctx.record(), RECORD_TTL).await {
        warn!("cannot publish this worker's record: {e}");
    }
}
