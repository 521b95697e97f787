//! Many serve nodes behind one address (a fleet's `cluster.redis_url` with the room store on).
//!
//! Each room is owned by one node: the one holding its WebRTC sessions and its room actor. The
//! owner renews `costream:owner:{room}` every second with a 5 s TTL (LiveKit keeps the same
//! room → node map in Redis). A request that reaches another node is forwarded to the owner
//! ([`forward`]); its event streams are forwarded the same way, so subscribers on any node see
//! the room's events. When an owner dies its keys expire and another node adopts its rooms
//! (within [`OWNER_TTL`] + [`TICK`]): it restores each from the shared store, live again, taking
//! the orphaned mixer over on its worker, and the clients reconnect to it as after a serve
//! restart. A node stopping (SIGTERM) gives its rooms up at once, so the others adopt them
//! within a second: the zero-downtime upgrade. New rooms are created on the least loaded node.
//!
//! Pure: [`record`]. IO: [`store`] (Redis), this module's loop, [`forward`] (HTTP).

pub mod forward;
pub mod record;
pub mod store;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use costream_ingest::IngestEngine;
use tracing::{info, warn};

use crate::config::Config;
use crate::origin::Origin;
use crate::room::Rooms;
use crate::store::{Loaded, RoomRecord, RoomStore};
use record::NodeRecord;
use store::NodeStore;

/// How often a node republishes itself, renews its rooms and looks for rooms to adopt.
pub const TICK: Duration = Duration::from_secs(1);
/// A node (and its rooms' ownership) not renewed for this long is gone.
pub const OWNER_TTL: Duration = Duration::from_secs(5);

/// Where a request for a room goes.
#[derive(Debug, PartialEq)]
pub enum Route {
    /// This node has it (or nobody does: the handlers answer).
    Here,
    /// Its owner, at this URL.
    Owner { node_id: String, url: String },
    /// It cannot be reached now; the reason says why (answered `503` with `Retry-After`).
    Unavailable(String),
}

/// A node that could not renew its rooms for this long, while other nodes exist, lets go of
/// them: by [`OWNER_TTL`] another node may adopt them, and a room must never run on two.
pub const FENCE_AFTER: Duration = Duration::from_secs(3);

/// This serve node among the others.
pub struct Nodes {
    node_id: String,
    url: String,
    store: NodeStore,
    rooms: Arc<Rooms>,
    room_store: Arc<RoomStore>,
    config: Arc<Config>,
    origin: Option<Origin>,
    ingest: IngestEngine,
    /// An open fleet's signing key, kept in Redis (written again after Redis restarts empty).
    signing_key: Option<(String, String)>,
    /// Every node as last read (every [`TICK`]); empty while Redis is away.
    view: Mutex<Vec<NodeRecord>>,
    /// Rooms this node owns (renewed every tick).
    owned: Mutex<HashSet<String>>,
    /// Other nodes were in the registry at the last successful read.
    others_seen: AtomicBool,
    /// When this node's rooms were last renewed (the time the call was made).
    renewed_at: Mutex<std::time::Instant>,
    draining: AtomicBool,
    /// Set when the node left: its loops end.
    stopped: AtomicBool,
    /// Rooms found unowned by the last scan: adopted if still unowned at the next one (a room
    /// just created elsewhere is in the store a moment before its owner key).
    unowned: Mutex<HashSet<String>>,
    /// One adoption (or renewal bookkeeping) at a time.
    adopting: tokio::sync::Mutex<()>,
    pub(crate) http: reqwest::Client,
}

/// What [`Nodes::new`] needs.
pub struct NodeParams {
    pub store: NodeStore,
    pub rooms: Arc<Rooms>,
    pub room_store: Arc<RoomStore>,
    pub config: Arc<Config>,
    pub origin: Option<Origin>,
    pub ingest: IngestEngine,
    /// The shared signing key of an open fleet (see `NodeStore::shared_signing_key`).
    pub signing_key: Option<(String, String)>,
}

/// How an adoption went.
#[derive(Debug, PartialEq)]
enum Adoption {
    /// The room runs here now.
    Here,
    /// There is no such room, or another node owns it.
    NotOurs,
    /// It exists, unowned, and could not be restored here; why.
    Failed(String),
}

impl Nodes {
    pub fn new(params: NodeParams) -> anyhow::Result<Arc<Self>> {
        let config = &params.config;
        let node_id = node_id(config, params.room_store.dir())?;
        let url = match &config.cluster.node_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None if config.server.listen.ip().is_unspecified() => {
                warn!(listen = %config.server.listen,
                    "cluster.node_url is not set and serve listens on a wildcard address: the other serve nodes cannot forward requests for this node's rooms (set it to this node's address)");
                format!("http://{}", config.server.listen)
            }
            None => format!("http://{}", config.server.listen),
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Arc::new(Self {
            node_id,
            url,
            store: params.store,
            rooms: params.rooms,
            room_store: params.room_store,
            config: params.config,
            origin: params.origin,
            ingest: params.ingest,
            signing_key: params.signing_key,
            view: Mutex::new(Vec::new()),
            owned: Mutex::new(HashSet::new()),
            others_seen: AtomicBool::new(false),
            renewed_at: Mutex::new(std::time::Instant::now()),
            draining: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            unowned: Mutex::new(HashSet::new()),
            adopting: tokio::sync::Mutex::new(()),
            http,
        }))
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Of the rooms read from the store at start, those this node may restore: nobody else's
    /// (a restart of this node takes its own back at once; another node's stay with it).
    pub async fn claim_at_start(&self, loaded: Vec<Loaded>) -> anyhow::Result<Vec<Loaded>> {
        let ids: Vec<String> = loaded.iter().map(|(id, _)| id.clone()).collect();
        let taken = self.store.renew(&ids, &self.node_id, OWNER_TTL).await?;
        let (mine, others): (Vec<Loaded>, Vec<Loaded>) =
            loaded.into_iter().partition(|(id, _)| !taken.contains(id));
        for (id, _) in &others {
            self.room_store.disown(id);
        }
        self.lock_owned()
            .extend(mine.iter().map(|(id, _)| id.clone()));
        info!(node = %self.node_id, url = %self.url, rooms = mine.len(), others = others.len(),
            "serve node: restoring the rooms nobody else owns");
        Ok(mine)
    }

    fn lock_owned(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.owned.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A room was created here: this node owns it.
    pub async fn created(&self, room_id: &str) {
        self.lock_owned().insert(room_id.to_string());
        self.room_store.own(room_id);
        if let Err(e) = self.store.claim(room_id, &self.node_id, OWNER_TTL).await {
            warn!(room = %room_id, "cannot record this node as the room's owner yet (renewed every second): {e}");
        }
    }

    /// Runs the node's two loops (keeping its rooms; adopting others') until it leaves.
    pub fn start(self: &Arc<Self>) {
        let nodes = self.clone();
        tokio::spawn(async move {
            nodes
                .every_tick("keeping this node's rooms", |n| Box::pin(n.keep_rooms()))
                .await
        });
        let nodes = self.clone();
        tokio::spawn(async move {
            nodes
                .every_tick("adopting rooms of nodes that are gone", |n| {
                    Box::pin(n.adopt_orphans())
                })
                .await
        });
    }

    async fn every_tick(
        self: Arc<Self>,
        what: &str,
        step: impl for<'a> Fn(
            &'a Self,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send + 'a>,
        >,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut redis_ok = true;
        while !self.stopped.load(Ordering::Relaxed) {
            tick.tick().await;
            match step(&self).await {
                Ok(()) if !redis_ok => {
                    info!("serve nodes, {what}: Redis answers again");
                    redis_ok = true;
                }
                Ok(()) => {}
                Err(e) if redis_ok => {
                    warn!("serve nodes, {what}: {e}");
                    redis_ok = false;
                }
                Err(_) => {}
            }
        }
    }

    /// One tick of keeping this node's rooms: publish the node, renew its rooms, let go of
    /// ended ones (after their deletion is written) and of those another node owns now.
    async fn keep_rooms(&self) -> anyhow::Result<()> {
        // The whole tick under the lock: not while an adoption is between its claim and its
        // restore, and never after `leave` gave the rooms up.
        let _bookkeeping = self.adopting.lock().await;
        if self.stopped.load(Ordering::Relaxed) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let result = self.renew_rooms().await;
        if result.is_ok() {
            *self.renewed_at.lock().unwrap_or_else(|e| e.into_inner()) = started;
        } else {
            self.fence_if_stale();
            // New rooms are created here while Redis is away (placement needs a fresh view).
            self.view.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        result
    }

    async fn renew_rooms(&self) -> anyhow::Result<()> {
        let (local, released) = {
            let local = self.rooms.ids();
            let mut owned = self.lock_owned();
            let gone: Vec<String> = owned
                .iter()
                .filter(|id| !local.contains(id))
                .cloned()
                .collect();
            for id in &gone {
                owned.remove(id);
            }
            owned.extend(local.iter().cloned());
            (local, gone)
        };
        // Renewal first: nothing below may delay it past the TTL.
        for room in self.store.renew(&local, &self.node_id, OWNER_TTL).await? {
            // Another node adopted it (this one was cut off from Redis for longer than the
            // TTL): it runs there now. Leave it without stopping its mixer.
            warn!(%room, "another serve node owns this room now: letting go of it here");
            self.let_go(&room);
        }
        self.store
            .publish_node(&self.record(local.len()), OWNER_TTL)
            .await?;
        if !released.is_empty() {
            // An ended room's deletion is written before anyone may adopt it.
            self.room_store.flushed().await;
            for room in &released {
                if let Err(e) = self.store.release(room, &self.node_id).await {
                    warn!(%room, "cannot give the room up (its key expires by itself): {e}");
                }
            }
        }
        if let Some((key, secret)) = &self.signing_key {
            // Redis runs without persistence: put the shared key back after a restart.
            self.store
                .keep_signing_key(self.room_store.key(), key, secret)
                .await?;
        }
        let view = self.store.nodes().await?;
        self.others_seen.store(
            view.iter().any(|n| n.node_id != self.node_id),
            Ordering::Relaxed,
        );
        *self.view.lock().unwrap_or_else(|e| e.into_inner()) = view;
        Ok(())
    }

    /// Leaves a room to another node: out of this process, its mixer left running, its record
    /// no longer written from here.
    fn let_go(&self, room: &str) {
        self.lock_owned().remove(room);
        self.rooms.detach(room);
        self.room_store.disown(room);
    }

    /// Cut off from Redis while other nodes exist: let go of every room before they may adopt
    /// them. Alone, the rooms go on (nobody else would take them).
    fn fence_if_stale(&self) {
        let stale = self
            .renewed_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
            >= FENCE_AFTER;
        // As last read from Redis (the view is cleared while Redis is away; this is not).
        let others = self.others_seen.load(Ordering::Relaxed);
        if !(stale && others) {
            return;
        }
        let rooms = self.rooms.ids();
        if !rooms.is_empty() {
            warn!(rooms = rooms.len(), "cut off from Redis while other serve nodes exist: letting go of every room before they adopt them (their mixers keep pushing)");
        }
        for room in rooms {
            // Not disowned: if Redis comes back empty, this node's last records are all there is.
            self.lock_owned().remove(&room);
            self.rooms.detach(&room);
        }
    }

    fn record(&self, rooms: usize) -> NodeRecord {
        let participants = self
            .rooms
            .all()
            .iter()
            .map(|room| room.latest_status().participants.len())
            .sum();
        NodeRecord {
            node_id: self.node_id.clone(),
            url: self.url.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            rooms,
            participants,
            peer_connections: self.ingest.peer_connections().open(),
            draining: self.draining(),
        }
    }

    /// Adopts every stored room that nobody owned at two scans in a row.
    async fn adopt_orphans(&self) -> anyhow::Result<()> {
        if self.draining() {
            return Ok(());
        }
        let local = self.rooms.ids();
        let stored: Vec<String> = self
            .store
            .stored_room_ids()
            .await?
            .into_iter()
            .filter(|id| !local.contains(id))
            .collect();
        let owners = self.store.owners(&stored).await?;
        let unowned: HashSet<String> = stored
            .into_iter()
            .zip(owners)
            .filter(|(_, owner)| owner.is_none())
            .map(|(room, _)| room)
            .collect();
        let seen_before = std::mem::replace(
            &mut *self.unowned.lock().unwrap_or_else(|e| e.into_inner()),
            unowned.clone(),
        );
        for room in unowned.intersection(&seen_before) {
            if let Adoption::Failed(reason) = self.adopt(room).await {
                warn!(%room, %reason, "cannot adopt the room");
            }
        }
        Ok(())
    }

    /// Takes `room_id` over if it is stored and nobody owns it: claims it and restores it from
    /// the store (live again if it was).
    async fn adopt(&self, room_id: &str) -> Adoption {
        let _one_at_a_time = self.adopting.lock().await;
        if self.rooms.get(room_id).is_some() {
            return Adoption::Here;
        }
        if self.draining() {
            // Stopping: the rooms go to the other nodes, not back to this one.
            return Adoption::NotOurs;
        }
        // Made-up ids (anyone can ask for /whip/anything) cost one read, and claim nothing.
        match self.store.stored_room(room_id).await {
            Ok(Some(_)) => {}
            Ok(None) => return Adoption::NotOurs,
            Err(e) => return Adoption::Failed(format!("cannot read the room: {e}")),
        }
        match self.store.claim(room_id, &self.node_id, OWNER_TTL).await {
            Ok(true) => {}
            Ok(false) => return Adoption::NotOurs,
            Err(e) => return Adoption::Failed(format!("cannot claim the room: {e}")),
        }
        // Read again now that it is ours: it may have ended just before the claim.
        let bytes = match self.store.stored_room(room_id).await {
            Ok(Some(bytes)) => bytes,
            other => {
                let _ = self.store.release(room_id, &self.node_id).await;
                return match other {
                    Err(e) => Adoption::Failed(format!("cannot read the room: {e}")),
                    _ => Adoption::NotOurs,
                };
            }
        };
        let key = self.room_store.key();
        let record = RoomRecord::decode(&bytes).and_then(|r| r.check_key(key).map(|()| r));
        self.lock_owned().insert(room_id.to_string());
        self.room_store.own(room_id);
        info!(room = %room_id, "adopting a room whose serve node is gone");
        crate::room::durable::restore_rooms(
            &self.rooms,
            &self.room_store,
            vec![(room_id.to_string(), record)],
            &self.config,
            self.origin.as_ref(),
        )
        .await;
        if self.rooms.get(room_id).is_some() {
            return Adoption::Here;
        }
        self.lock_owned().remove(room_id);
        let _ = self.store.release(room_id, &self.node_id).await;
        Adoption::Failed("the stored room could not be restored here (see the log)".into())
    }

    /// Where a request for `room_id` goes; adopts a room nobody owns on the way.
    pub async fn route(&self, room_id: &str) -> Route {
        if self.rooms.get(room_id).is_some() {
            return Route::Here;
        }
        let mut owner = match self.store.owner(room_id).await {
            Ok(owner) => owner,
            Err(e) => {
                return Route::Unavailable(format!(
                    "the serve nodes' registry (Redis) is unreachable: {e}"
                ))
            }
        };
        if owner.is_none() {
            // Unowned: a room of a node that just died, or no room at all (the handlers answer).
            match self.adopt(room_id).await {
                Adoption::Here => return Route::Here,
                Adoption::Failed(reason) => return Route::Unavailable(reason),
                // Another node claimed it meanwhile, or there is no such room.
                Adoption::NotOurs => owner = self.store.owner(room_id).await.ok().flatten(),
            }
        }
        let Some(owner) = owner.filter(|o| *o != self.node_id) else {
            return Route::Here;
        };
        let url = self
            .view
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|n| n.node_id == owner)
            .map(|n| n.url.clone());
        match url {
            Some(url) => Route::Owner {
                node_id: owner,
                url,
            },
            None => Route::Unavailable(format!(
                "the room's serve node {owner} is gone; another node adopts the room within {} s",
                OWNER_TTL.as_secs() + TICK.as_secs()
            )),
        }
    }

    /// Where a new room goes: another node's URL when it is less loaded than this one.
    pub fn placement(&self) -> Option<(String, String)> {
        let view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        let best = record::least_loaded(&view, &self.node_id)?;
        (best.node_id != self.node_id && !self.draining())
            .then(|| (best.node_id.clone(), best.url.clone()))
    }

    /// SIGTERM: take no new room (the others stop placing here).
    pub async fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        let _ = self
            .store
            .publish_node(&self.record(self.rooms.ids().len()), OWNER_TTL)
            .await;
    }

    /// serve is stopping, its rooms detached: stop the loops, write what the rooms saved last,
    /// then give them up at once so other nodes adopt them within a tick, and leave the
    /// registry.
    pub async fn leave(&self) {
        let _bookkeeping = self.adopting.lock().await;
        self.stopped.store(true, Ordering::Relaxed);
        self.room_store.flushed().await;
        let owned: Vec<String> = self.lock_owned().drain().collect();
        for room in &owned {
            if let Err(e) = self.store.release(room, &self.node_id).await {
                warn!(%room, "cannot give the room up (another node adopts it when the key expires): {e}");
            }
        }
        let _ = self.store.remove_node(&self.node_id).await;
        info!(
            rooms = owned.len(),
            "left the serve nodes; the others adopt this node's rooms"
        );
    }
}

/// This serve node's name: `cluster.node_id`, else the one made once and kept in `dir`.
pub fn node_id(config: &Config, dir: &std::path::Path) -> anyhow::Result<String> {
    Ok(match &config.cluster.node_id {
        Some(id) => id.clone(),
        None => crate::store::files::load_or_create_node_id(dir, new_node_id)?,
    })
}

/// The host name (a pod's name on Kubernetes) and a random tail: kept in the data directory.
fn new_node_id() -> String {
    format!(
        "{}-{:08x}",
        crate::fleet::record::host_name_or("serve"),
        rand::random::<u32>()
    )
}
