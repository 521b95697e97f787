//! `costream serve`: load config, bind, build the app, run until SIGTERM / Ctrl-C.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use costream_ingest::{IngestConfig, IngestEngine};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{router, AppState};
use crate::cli::ServeArgs;
use crate::config::{Config, OriginConfig};
use crate::fleet::{FleetBackend, FleetSettings, FleetStore};
use crate::origin::gop::CacheLimits;
use crate::origin::hub::HubLimits;
use crate::origin::{Origin, OriginSettings};
use crate::pool::{Capacity, MixerBackend, MixerEnv, MixerPool, PoolSettings, Spawner};
use crate::room::{RoomRuntime, Rooms};

pub fn load_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_toml_file(path)?,
        None => Config::default(),
    };
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(url) = &args.public_url {
        config.server.public_url = url.clone();
    }
    if let Some(binary) = &args.mixer_binary {
        config.mixer.binary = binary.display().to_string();
    }
    if let Some(listen) = args.origin_rtmp_listen {
        config.origin.rtmp_listen = listen;
    }
    if args.open {
        config.auth.open = true;
    }
    if let Some(url) = &args.redis {
        config.cluster.redis_url = Some(url.clone());
    }
    if let Some(secret) = &args.cluster_secret {
        config.cluster.secret = Some(crate::config::ApiSecret::new(secret));
    }
    if let Some(id) = &args.node_id {
        config.cluster.node_id = Some(id.clone());
    }
    if let Some(url) = &args.node_url {
        config.cluster.node_url = Some(url.clone());
    }
    if let Some(dir) = &args.data_dir {
        config.store.dir = Some(dir.clone());
    }
    if args.no_store {
        config.store.enabled = false;
    }
    if let Some(key) = &args.store_key {
        config.store.key = Some(crate::config::ApiSecret::new(key));
    }
    match (&args.key.api_key, &args.key.api_secret) {
        (Some(key), Some(secret)) => {
            config
                .auth
                .keys
                .insert(key.clone(), crate::config::ApiSecret::new(secret));
        }
        (None, Some(_)) => anyhow::bail!(
            "COSTREAM_API_SECRET (--api-secret) is set without COSTREAM_API_KEY (--api-key): \
             give both, or neither"
        ),
        _ => {}
    }
    config.validate()?;
    Ok(config)
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = load_config(&args)?;
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.listen)", config.server.listen))?;
    // With port 0 the links handed out must name the port actually bound.
    config.server.listen = listener.local_addr()?;

    let ingest = IngestEngine::new(IngestConfig {
        udp_ports: config.media.udp_port_min.zip(config.media.udp_port_max),
        public_ips: config.media.public_ips.clone(),
        include_loopback: true,
        ice: config.media.ice_timeouts(),
        max_peer_connections: Some(max_peer_connections(&config)),
    })
    .context("cannot set up WebRTC")?;
    let pool = mixer_backend(&config, &args).await?;
    let (store, stored_rooms) = open_store(&config)?;
    // A fleet's serve nodes (rooms stored in Redis) share the rooms, and one connection serves
    // this node's part in that.
    let node_store = match (&store, &config.cluster.redis_url) {
        (Some(_), Some(url)) => Some(crate::nodes::store::NodeStore::connect(url)?),
        _ => None,
    };
    // Their made-up signing key (an open server's) is shared in Redis: a link works on any node.
    let shared_signing_key = match (&store, &node_store) {
        (Some(store), Some(nodes)) if config.auth.keys.is_empty() => Some(
            nodes
                .shared_signing_key(store.key(), crate::access::Access::made_up_key)
                .await
                .context("the serve nodes' shared signing key in Redis")?,
        ),
        _ => None,
    };
    let access = Arc::new(
        match (&store, &shared_signing_key, config.auth.keys.is_empty()) {
            (_, Some((key, secret)), _) => crate::access::Access::from_config_with_local_key(
                &config.auth,
                key.clone(),
                secret.clone(),
            ),
            // An open server's made-up signing key is kept with the rooms: their links outlive a
            // restart.
            (Some(store), None, true) => {
                let (key, secret) =
                    crate::store::files::load_or_create_signing_key(store.dir(), || {
                        crate::access::Access::made_up_key()
                    })?;
                crate::access::Access::from_config_with_local_key(&config.auth, key, secret)
            }
            _ => crate::access::Access::from_config(&config.auth),
        },
    );
    let webhooks = crate::webhooks::Webhooks::start(&config.webhooks, access.clone());
    if webhooks.is_some() {
        tracing::info!(urls = config.webhooks.urls.len(), "webhooks on");
    }
    let rooms = Arc::new(
        Rooms::new(
            RoomRuntime {
                pool: pool.clone(),
                stop_grace: Duration::from_millis(config.mixer.stop_grace_ms),
                recordings: recordings_dir(&config)
                    .map(|dir| Arc::new(crate::recordings::Catalog::new(dir))),
            },
            config.limits.max_rooms,
            access,
        )
        .with_lifetime(config.rooms.lifetime())
        .with_webhooks(webhooks)
        .with_store(store.clone()),
    );
    tokio::spawn(close_unused_rooms(rooms.clone()));
    if config.auth.keys.is_empty() {
        tracing::warn!(
            listen = %config.server.listen,
            "no API keys: running open (anyone who reaches this address may create rooms)"
        );
    }
    let drain_timeout = Duration::from_secs(config.server.drain_timeout_secs);
    // On a fleet with stored rooms the mixers outlive serve: the next serve (a restart, an
    // upgrade) takes them over, so a stop neither waits for rooms to end nor stops a mixer.
    let mixers_outlive_serve = config.cluster.redis_url.is_some() && store.is_some();
    let origin_cancel = CancellationToken::new();
    let origin = start_origin(&mut config.origin, origin_cancel.clone()).await?;
    let config = Arc::new(config);
    // A fleet's serve nodes share the rooms in Redis: each restores only those nobody else owns.
    let nodes = match (node_store, &store) {
        (Some(node_store), Some(store)) => {
            Some(crate::nodes::Nodes::new(crate::nodes::NodeParams {
                store: node_store,
                rooms: rooms.clone(),
                room_store: store.clone(),
                config: config.clone(),
                origin: origin.clone(),
                ingest: ingest.clone(),
                signing_key: shared_signing_key.clone(),
            })?)
        }
        _ => None,
    };
    if let Some(store) = &store {
        let stored_rooms = match &nodes {
            Some(nodes) => nodes
                .claim_at_start(stored_rooms)
                .await
                .context("claiming this serve node's rooms in Redis")?,
            None => stored_rooms,
        };
        crate::room::durable::restore_rooms(&rooms, store, stored_rooms, &config, origin.as_ref())
            .await;
    }
    if let Some(nodes) = &nodes {
        nodes.start();
    }
    let public_url = config.public_url();
    let http_shutdown = CancellationToken::new();
    let connection_limits = crate::http_server::ConnectionLimits {
        header_read_timeout: Duration::from_secs(config.limits.header_read_timeout_secs),
        max_per_ip: config.limits.connections_per_ip,
        trusted_proxies: std::sync::Arc::new(config.server.trusted_proxies()),
    };
    let app = router(AppState {
        config,
        rooms: rooms.clone(),
        ingest,
        origin: origin.clone(),
        shutdown: http_shutdown.clone(),
        nodes: nodes.clone(),
    });

    tracing::info!("costream listening on {public_url}");
    // Scripts (and the tests) read the bound address from this stdout line.
    println!("costream listening on {public_url}");
    let shutdown = {
        let (origin, origin_cancel) = (origin.clone(), origin_cancel.clone());
        let pool = pool.clone();
        let nodes = nodes.clone();
        let rooms = rooms.clone();
        async move {
            drain(pool.as_ref(), drain_timeout, mixers_outlive_serve).await;
            if let Some(nodes) = &nodes {
                nodes.start_draining().await;
            }
            if mixers_outlive_serve {
                // Let go of the rooms now, before the HTTP server winds down: their mixers
                // keep pushing and their clients reconnect, to the next serve or (with other
                // serve nodes) to whichever node adopts them, at once.
                tracing::info!("stopping: rooms are stored and their mixers keep pushing on the workers for the next serve");
                rooms.detach_all();
                if let Some(nodes) = &nodes {
                    nodes.leave().await;
                }
            }
            // Event streams are endless too: end them so the HTTP server can finish.
            http_shutdown.cancel();
            // Graceful shutdown waits for open responses; HTTP-FLV bodies are endless
            // until their stream goes away, so end every stream (and RTMP session) first.
            origin_cancel.cancel();
            if let Some(origin) = origin {
                origin.unregister_all();
            }
        }
    };
    crate::http_server::serve(listener, app, connection_limits, shutdown, HTTP_GRACE)
        .await
        .context("HTTP server failed")?;
    if mixers_outlive_serve {
        // Detached at the signal (above); a room adopted back meanwhile is detached too.
        rooms.detach_all();
    } else {
        tracing::info!("shutting down: ending every room");
        rooms.end_all();
    }
    // Records stay (the rooms come back at the next start); what was still pending is written.
    rooms.store_flushed().await;
    pool.shutdown();
    origin_cancel.cancel();
    // Give room actors a moment to tell their mixers to flush; anything left is killed when the
    // runtime drops the child handles (kill_on_drop), and every mixer has PR_SET_PDEATHSIG, so
    // no mixer outlives serve even if serve is killed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

/// The room store (`[store]`), and every record in it; `None` when turned off.
fn open_store(
    config: &Config,
) -> anyhow::Result<(
    Option<Arc<crate::store::RoomStore>>,
    Vec<crate::store::Loaded>,
)> {
    if !config.store.enabled {
        tracing::info!("no store (--no-store): rooms end with this process");
        return Ok((None, Vec::new()));
    }
    let dir = config
        .store
        .data_dir()
        .context("no data directory: set --data-dir or turn the store off (--no-store)")?;
    let key = config.store.key.as_ref().map(|k| k.expose());
    if let Some(url) = &config.cluster.redis_url {
        // A fleet's serve nodes keep rooms where every node reaches them.
        crate::store::files::prepare_dir(&dir)?;
        let node_id = crate::nodes::node_id(config, &dir)?;
        let (store, loaded) = crate::store::RoomStore::open_redis(url, &dir, key, &node_id).context(
            "room store in Redis (cluster.redis_url; the key is [store] key, or store.key in --data-dir)",
        )?;
        let redis = crate::fleet::store::redact_url(url);
        tracing::info!(%redis, rooms = loaded.len(), "room store open in Redis");
        return Ok((Some(store), loaded));
    }
    let (store, loaded) = crate::store::RoomStore::open(&dir, key).context(
        "room store ([store] dir, --data-dir; another directory, or --no-store to run without one)",
    )?;
    tracing::info!(dir = %dir.display(), rooms = loaded.len(), "room store open");
    Ok((Some(store), loaded))
}

/// Where rooms get their mixers: this machine's pool (the default), or the fleet of workers
/// behind `[cluster] redis_url`.
async fn mixer_backend(config: &Config, args: &ServeArgs) -> anyhow::Result<Arc<dyn MixerBackend>> {
    if let Some(url) = &config.cluster.redis_url {
        let store = FleetStore::connect(url)?;
        let fleet = FleetBackend::start(
            store,
            FleetSettings {
                secret: config
                    .cluster
                    .secret
                    .as_ref()
                    .map(|s| Arc::from(s.expose().as_bytes())),
                reserve_inputs: config.pool.reserve_inputs,
                retry_after_secs: config.pool.retry_after_secs,
                resumable: config.store.enabled,
            },
        );
        if config.pool.local {
            start_local_worker(config, url)?;
        }
        let redis = crate::fleet::store::redact_url(url);
        if fleet.wait_for_view(Duration::from_secs(3)).await {
            tracing::info!(%redis, "mixers run on the fleet's workers (no local mixers)");
        } else {
            tracing::warn!(%redis, "cannot read the fleet registry yet; rooms can go live once Redis answers");
        }
        return Ok(Arc::new(fleet));
    }
    let spawner = Spawner::start(
        tokio::runtime::Handle::current(),
        MixerEnv::local(config.mixer.rtp_bind, recordings_dir(config)),
    )
    .context("cannot start the mixer spawner thread")?;
    let pool = MixerPool::new(
        PoolSettings {
            binary: mixer_binary(config)?,
            warm: config.pool.warm,
            capacity: Capacity {
                cores: config.pool.cores(),
                max_utilization: config.pool.max_utilization,
            },
            reserve_inputs: config.pool.reserve_inputs,
            retry_after_secs: config.pool.retry_after_secs,
        },
        spawner,
    );
    pool.refill();
    tracing::info!(
        capacity_cores = config.pool.cores(),
        max_utilization = config.pool.max_utilization,
        warm = config.pool.warm,
        "mixer pool ready"
    );
    tokio::spawn(reload_on_sighup(args.clone(), pool.clone()));
    Ok(Arc::new(pool))
}

/// `limits.max_peer_connections`, and no more than the UDP port range holds: a full range
/// answers `503` instead of leaving offers to hang. Each connection gathers on every local
/// address, loopback included: at least two ports.
fn max_peer_connections(config: &Config) -> usize {
    const PORTS_PER_CONNECTION: usize = 2;
    let range = config
        .media
        .udp_port_min
        .zip(config.media.udp_port_max)
        .map(|(min, max)| ((usize::from(max - min) + 1) / PORTS_PER_CONNECTION).max(1));
    range.map_or(config.limits.max_peer_connections, |ports| {
        ports.min(config.limits.max_peer_connections)
    })
}

/// After the drain, requests still being answered get this long to finish.
const HTTP_GRACE: Duration = Duration::from_secs(10);

/// `[pool] local` on a fleet: this process is also one of the fleet's workers, with this
/// machine's `[pool]` capacity, mixers receiving RTP on `[mixer] rtp_bind`.
fn start_local_worker(config: &Config, redis_url: &str) -> anyhow::Result<()> {
    use crate::fleet::worker::{default_worker_id, WorkerSettings};
    let settings = WorkerSettings {
        redis_url: redis_url.to_string(),
        advertise_ip: config.mixer.rtp_bind,
        listen: std::net::SocketAddr::new(config.mixer.rtp_bind, 0),
        worker_id: format!("{}-serve", default_worker_id()),
        capacity_cores: config.pool.cores(),
        max_utilization: config.pool.max_utilization,
        warm: config.pool.warm,
        reserve_inputs: config.pool.reserve_inputs,
        binary: mixer_binary(config)?,
        secret: config
            .cluster
            .secret
            .as_ref()
            .map(|s| Arc::from(s.expose().as_bytes())),
        drain_timeout: Duration::from_secs(config.server.drain_timeout_secs),
        // This worker dies with its serve: nothing of it is left to take over.
        orphan_grace: Duration::ZERO,
        // serve's own /metrics has the fleet's capacity, this worker's included.
        metrics_listen: None,
    };
    tracing::info!(worker = %settings.worker_id, "this serve is also a worker of the fleet (pool.local)");
    tokio::spawn(async move {
        if let Err(e) = crate::fleet::worker::run(settings).await {
            tracing::error!("the local worker stopped: {e:#}");
        }
    });
    Ok(())
}

/// Where this machine's recordings go: `recordings/` under the data directory (whether or not
/// rooms are stored there). No data directory, or mixers on a fleet's workers (whose disks
/// serve cannot serve files from): recording is refused with a reason.
fn recordings_dir(config: &Config) -> Option<std::path::PathBuf> {
    if config.cluster.redis_url.is_some() {
        return None;
    }
    config.store.data_dir().map(|dir| dir.join("recordings"))
}

/// `[mixer] binary`, or this very executable.
fn mixer_binary(config: &Config) -> anyhow::Result<std::path::PathBuf> {
    Ok(if config.mixer.binary.is_empty() {
        std::env::current_exe().context("cannot find this executable to run mixers")?
    } else {
        config.mixer.binary.clone().into()
    })
}

/// Rolling upgrade: SIGHUP re-reads the config (file, env, flags as at startup) and points new
/// rooms at its `[mixer] binary`. Live rooms keep their mixer until they end.
async fn reload_on_sighup(args: ServeArgs, pool: MixerPool) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; mixer binary reload disabled");
        return;
    };
    while hup.recv().await.is_some() {
        match load_config(&args).and_then(|c| mixer_binary(&c)) {
            Ok(binary) => {
                tracing::info!(binary = %binary.display(), "SIGHUP: reloaded the mixer binary setting");
                pool.set_binary(binary);
            }
            Err(e) => tracing::warn!("SIGHUP: config not reloaded: {e:#}"),
        }
    }
}

/// Graceful drain: the first SIGTERM/SIGINT stops admitting (`/readyz` 503, no new rooms or
/// broadcasts); live rooms stream on until none is left, `drain_timeout` passes, or a second
/// signal says "now". When the mixers outlive serve there is nothing to wait for. Returns when
/// serve should stop.
async fn drain(pool: &dyn MixerBackend, drain_timeout: Duration, mixers_outlive_serve: bool) {
    let mut signals = Signals::new();
    signals.next().await;
    pool.start_draining();
    if mixers_outlive_serve {
        tracing::info!(
            "stopping: live rooms stay on air on their workers; the next serve takes them over"
        );
        return;
    }
    tracing::info!(
        timeout_secs = drain_timeout.as_secs(),
        "draining: admitting nothing new; waiting for live rooms to end (signal again to stop now)"
    );
    tokio::select! {
        _ = async {
            let mut live = pool.live_rooms();
            let _ = live.wait_for(|&n| n == 0).await;
        } => tracing::info!("drained: no room is live"),
        _ = tokio::time::sleep(drain_timeout) => {
            tracing::warn!("drain deadline reached; stopping the rooms still live");
        }
        _ = signals.next() => tracing::warn!("second signal: stopping now"),
    }
}

/// SIGTERM and SIGINT, any number of times.
pub(crate) struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    pub(crate) fn new() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Self {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    pub(crate) async fn next(&mut self) {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.term) => {}
            _ = recv(&mut self.int) => {}
        }
    }
}

/// Binds the built-in origin's RTMP listener (when enabled) and records the bound address, so
/// the URLs handed out name the real port when the config asked for port 0.
async fn start_origin(
    config: &mut OriginConfig,
    cancel: CancellationToken,
) -> anyhow::Result<Option<Origin>> {
    if !config.enabled {
        tracing::info!("built-in origin disabled (origin.enabled = false)");
        return Ok(None);
    }
    let settings = OriginSettings {
        rtmp_listen: config.rtmp_listen,
        public_rtmp_url: config.public_rtmp_url.clone(),
        limits: HubLimits {
            cache: CacheLimits {
                max_bytes: config.gop_cache_max_bytes,
                ..CacheLimits::default()
            },
            viewer_queue: config.viewer_queue,
            max_viewers: config.max_viewers_per_stream,
            hls: crate::origin::hls::HlsSettings {
                enabled: config.hls,
                packager: crate::origin::hls::packager::PackagerSettings {
                    part_target_ms: config.hls_part_ms,
                    ..Default::default()
                },
                window: crate::origin::hls::window::WindowLimits {
                    listed_segments: config.hls_segments,
                    ..Default::default()
                },
                ..Default::default()
            },
        },
        connections: crate::origin::slots::SlotLimits {
            max_connections: config.max_connections,
            publisher_slots: config.publisher_slots,
        },
    };
    let origin = Origin::start(settings, cancel).await.with_context(|| {
        format!(
            "cannot listen on {} (origin.rtmp_listen, --origin-rtmp-listen); \
             pick another port or set origin.enabled = false",
            config.rtmp_listen
        )
    })?;
    config.rtmp_listen = origin.rtmp_addr();
    tracing::info!("built-in origin: RTMP on {}", origin.rtmp_addr());
    println!(
        "costream origin rtmp listening on rtmp://{}",
        origin.rtmp_addr()
    );
    Ok(Some(origin))
}

/// Ends rooms nobody uses any more (`[rooms]` timeouts), checking about once a second.
async fn close_unused_rooms(rooms: Arc<Rooms>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for room in rooms.sweep(std::time::Instant::now()) {
            tracing::info!(%room, "room closed: unused (rooms.empty_timeout_secs / departure_timeout_secs)");
        }
    }
}
