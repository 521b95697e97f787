//! One configuration tree. `Config::default()` is the table of defaults; a TOML file, then
//! `COSTREAM_*` environment variables and CLI flags (see `cli.rs`) override it. `validate`
//! runs at startup and names the offending key, so a typo fails loudly instead of being ignored.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use costream_mixer::control::VideoSpec;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub media: MediaConfig,
    pub mixer: MixerConfig,
    pub limits: LimitsConfig,
    pub origin: OriginConfig,
    pub pool: PoolConfig,
    pub auth: AuthConfig,
    pub outputs: OutputsConfig,
    pub rooms: RoomsConfig,
    pub cluster: ClusterConfig,
    pub webhooks: WebhooksConfig,
    pub store: StoreConfig,
}

/// Durable rooms (see `store`): every room's settings in a file under `dir`, back after a
/// restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Off (`--no-store`): rooms live in memory only and end with the process.
    pub enabled: bool,
    /// Data directory (`--data-dir`, `COSTREAM_DATA_DIR`); unset: `$XDG_DATA_HOME/costream`,
    /// else `$HOME/.local/share/costream`.
    pub dir: Option<PathBuf>,
    /// 32 bytes in base64 (`COSTREAM_STORE_KEY`) that encrypt stream keys at rest; unset: a
    /// key made on first start in `<dir>/store.key`.
    pub key: Option<ApiSecret>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: None,
            key: None,
        }
    }
}

impl StoreConfig {
    /// The data directory in effect; `None` when none is configured and neither
    /// `XDG_DATA_HOME` nor `HOME` is set.
    pub fn data_dir(&self) -> Option<PathBuf> {
        self.dir.clone().or_else(crate::store::files::default_dir)
    }
}

/// Signed event notifications to the operator's backend (see `webhooks`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Endpoints every event is POSTed to; none: no webhooks.
    pub urls: Vec<String>,
    /// The API key whose secret signs the events (LiveKit's scheme); default: the first key.
    pub api_key: Option<String>,
    /// Events waiting per endpoint; beyond it new events are dropped (and counted), so a dead
    /// receiver never holds memory or the rooms back.
    pub queue: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            api_key: None,
            queue: 1024,
        }
    }
}

/// The fleet (opt-in): mixers on `costream worker`s coordinated by Redis.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// e.g. `redis://10.0.0.5:6379`; unset: one box, mixers are children of serve.
    pub redis_url: Option<String>,
    /// Signs placements to workers (`COSTREAM_CLUSTER_SECRET`); required unless every worker
    /// listens on loopback.
    pub secret: Option<ApiSecret>,
    /// This serve node's name among the fleet's serve nodes (room ownership is by name): keep
    /// it across restarts of the same node. Default: made once and kept in `<data dir>/node.id`.
    pub node_id: Option<String>,
    /// Where the other serve nodes reach this one (`http://10.0.0.7:8080`; on Kubernetes the
    /// pod IP), to forward requests for the rooms it owns. Default: `http://` + `server.listen`
    /// unless that is a wildcard address.
    pub node_url: Option<String>,
}

/// When unused rooms close (LiveKit's `empty_timeout` and `departure_timeout`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomsConfig {
    /// A room nobody joined closes this long after it was created.
    pub empty_timeout_secs: u64,
    /// A room everyone left (and not live) closes this long after the last one left.
    pub departure_timeout_secs: u64,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        let lifetime = crate::room::registry::DEFAULT_LIFETIME;
        Self {
            empty_timeout_secs: lifetime.empty_timeout.as_secs(),
            departure_timeout_secs: lifetime.departure_timeout.as_secs(),
        }
    }
}

impl RoomsConfig {
    pub fn lifetime(&self) -> crate::room::lifetime::Lifetime {
        crate::room::lifetime::Lifetime {
            empty_timeout: std::time::Duration::from_secs(self.empty_timeout_secs),
            departure_timeout: std::time::Duration::from_secs(self.departure_timeout_secs),
        }
    }
}

/// Where rooms may push (see `access::destinations`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputsConfig {
    /// Hosts allowed whatever they resolve to: `live.example.com`, `*.example.com`, or an
    /// address.
    pub allow: Vec<String>,
    /// Allow destinations on loopback, private and link-local addresses. Unset: allowed only on
    /// an open server listening on loopback (the one-command demo, where only the local user
    /// reaches the API), refused otherwise.
    pub allow_private: Option<bool>,
}

/// API keys and access tokens (see `access`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// API key -> secret. With any key the server is *keyed*: creating rooms and the pool view
    /// need an operator token signed by one of them. `COSTREAM_API_KEY` + `COSTREAM_API_SECRET`
    /// add one.
    pub keys: BTreeMap<String, ApiSecret>,
    /// Run without keys on a non-loopback address anyway (anyone reaching it may create
    /// rooms). Without keys and without this, serve only listens on loopback.
    pub open: bool,
    /// Lifetime of the host and guest tokens the API hands out.
    pub token_ttl_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            keys: BTreeMap::new(),
            open: false,
            token_ttl_secs: 24 * 3600,
        }
    }
}

/// Shortest API secret accepted: HS256 wants at least as many bytes of key as its output (32),
/// as LiveKit requires too.
pub const MIN_SECRET_CHARS: usize = 32;

/// An API secret: never shown by `Debug` (configs get logged).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApiSecret(String);

impl ApiSecret {
    pub fn new(secret: &str) -> Self {
        Self(secret.to_string())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The mixer pool: warm processes and admission by cost (see `pool::admission`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Mixer processes kept started and initialized, waiting for a room to go live.
    pub warm: usize,
    /// Cores mixers may use; unset means the cores available to this process.
    pub capacity_cores: Option<f64>,
    /// Share of `capacity_cores` admission hands out; the rest is headroom for serve itself.
    pub max_utilization: f64,
    /// A room going live is charged for at least this many participants, so guests joining
    /// later are already paid for.
    pub reserve_inputs: u32,
    /// `Retry-After` of a go-live refused for capacity.
    pub retry_after_secs: u64,
    /// With `cluster.redis_url`: serve also runs a worker of the fleet on this machine (its
    /// mixers count as that worker's capacity), for small fleets.
    pub local: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            warm: 1,
            capacity_cores: None,
            max_utilization: 0.9,
            reserve_inputs: 4,
            retry_after_secs: 30,
            local: false,
        }
    }
}

impl PoolConfig {
    /// `capacity_cores`, or the cores this process may run on.
    pub fn cores(&self) -> f64 {
        self.capacity_cores
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP API, WHIP endpoint and pages listen on.
    pub listen: SocketAddr,
    /// Base URL put into the links the API hands out (host_url, guest_url, watch_url, WHIP
    /// Location). Empty means "http://<listen>".
    pub public_url: String,
    /// After SIGTERM, live rooms may keep streaming this long before serve stops them.
    pub drain_timeout_secs: u64,
    /// Web origins (`https://app.example.com`) whose pages may call the API and event streams
    /// cross-origin. WHIP, WHEP and HTTP-FLV take any origin.
    pub cors_origins: Vec<String>,
    /// Reverse proxies in front of serve (`["10.0.0.0/8", "127.0.0.1"]`: networks or
    /// addresses). A request whose TCP peer is one of them counts, for the per-client rate
    /// limits, as coming from the right-most `X-Forwarded-For` address that is not itself a
    /// trusted proxy; from any other peer the header is ignored (anyone can write it). Empty
    /// (the default): trust none. The cap on open connections per address
    /// (`limits.connections_per_ip`) still counts TCP peers, i.e. the proxy.
    pub trusted_proxies: Vec<String>,
}

impl ServerConfig {
    /// `trusted_proxies` parsed. `validate` refuses a list with an entry that does not parse;
    /// unvalidated, such a list trusts none.
    pub fn trusted_proxies(&self) -> crate::client_addr::TrustedProxies {
        crate::client_addr::TrustedProxies::parse(&self.trusted_proxies).unwrap_or_default()
    }

    /// `cors_origins` as header values (validated at startup).
    pub fn cors_origin_values(&self) -> Vec<axum::http::HeaderValue> {
        self.cors_origins
            .iter()
            .filter_map(|o| axum::http::HeaderValue::from_str(o.trim_end_matches('/')).ok())
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Inclusive UDP port range for WebRTC (ICE); unset means ephemeral ports.
    pub udp_port_min: Option<u16>,
    pub udp_port_max: Option<u16>,
    /// Extra addresses to advertise as ICE candidates (servers behind 1:1 NAT).
    pub public_ips: Vec<String>,
    /// A peer silent (no media, RTCP or STUN) this long is "disconnected"...
    pub ice_disconnected_timeout_ms: u64,
    /// ...and is dropped (out of the mix and the room) after this much more silence.
    pub ice_failed_timeout_ms: u64,
    /// Interval of our STUN consent checks; the peer's answers keep a quiet peer alive.
    pub ice_keepalive_ms: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        let ice = costream_ingest::IceTimeouts::default();
        Self {
            udp_port_min: None,
            udp_port_max: None,
            public_ips: Vec::new(),
            ice_disconnected_timeout_ms: ice.disconnected.as_millis() as u64,
            ice_failed_timeout_ms: ice.failed.as_millis() as u64,
            ice_keepalive_ms: ice.keepalive.as_millis() as u64,
        }
    }
}

impl MediaConfig {
    pub fn ice_timeouts(&self) -> costream_ingest::IceTimeouts {
        costream_ingest::IceTimeouts {
            disconnected: std::time::Duration::from_millis(self.ice_disconnected_timeout_ms),
            failed: std::time::Duration::from_millis(self.ice_failed_timeout_ms),
            keepalive: std::time::Duration::from_millis(self.ice_keepalive_ms),
        }
    }

    fn validate_ice(&self) -> Result<(), ConfigError> {
        let check = |key: &'static str, value: u64, range: std::ops::RangeInclusive<u64>| {
            if range.contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    key,
                    message: format!(
                        "{value} must be {}..={} milliseconds",
                        range.start(),
                        range.end()
                    ),
                })
            }
        };
        check(
            "media.ice_disconnected_timeout_ms",
            self.ice_disconnected_timeout_ms,
            500..=60_000,
        )?;
        check(
            "media.ice_failed_timeout_ms",
            self.ice_failed_timeout_ms,
            100..=120_000,
        )?;
        check(
            "media.ice_keepalive_ms",
            self.ice_keepalive_ms,
            100..=10_000,
        )?;
        if self.ice_keepalive_ms >= self.ice_disconnected_timeout_ms {
            return Err(ConfigError::Invalid {
                key: "media.ice_keepalive_ms",
                message: format!(
                    "{} must be shorter than media.ice_disconnected_timeout_ms ({}), or a healthy but quiet peer looks disconnected",
                    self.ice_keepalive_ms, self.ice_disconnected_timeout_ms
                ),
            });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MixerConfig {
    /// Mixer executable; empty means this very binary (`<self> mixer`).
    pub binary: String,
    /// Output video of a room that does not choose its own.
    pub video: VideoSpec,
    /// How long a stopping mixer may take to flush before it is killed.
    pub stop_grace_ms: u64,
    /// Where mixers started by serve receive RTP (serve forwards there).
    pub rtp_bind: std::net::IpAddr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest accepted request body (SDP offers, JSON).
    pub max_body_bytes: usize,
    /// Most rooms that may exist at once.
    pub max_rooms: usize,
    /// Most participants (WHIP sessions) in one room.
    pub max_participants_per_room: usize,
    /// Most outputs per room.
    pub max_outputs_per_room: usize,
    /// A request's head must arrive within this long, or the connection is closed (slowloris;
    /// also ends idle keep-alive connections).
    pub header_read_timeout_secs: u64,
    /// Open HTTP connections one client address may hold; more are closed at once.
    pub connections_per_ip: usize,
    /// Rooms one client address may create a minute (in bursts of up to a third); `429` beyond.
    pub room_creations_per_minute_per_ip: u32,
    /// WHIP and WHEP sessions one client address may open a minute (bursts of a third).
    pub sessions_per_minute_per_ip: u32,
    /// Personal invites (`POST …/invites`) one client address may create a minute.
    pub invites_per_minute_per_ip: u32,
    /// Requests to join (`POST …/requests`, viewers without a token) one client address may
    /// make a minute.
    pub join_requests_per_minute_per_ip: u32,
    /// Event streams (`GET …/events`) open at once per room; `503` beyond.
    pub event_streams_per_room: usize,
    /// WebRTC peer connections (WHIP sessions + WHEP subscriptions) open at once on this
    /// server; `503` beyond. With a `[media]` UDP port range, also at most its size.
    pub max_peer_connections: usize,
    /// WHEP subscriptions open at once in one room; `503` beyond.
    pub max_subscriptions_per_room: usize,
}

/// The built-in origin: RTMP ingest from this server's mixers, HTTP-FLV and RTMP to viewers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OriginConfig {
    /// Rooms created without outputs push to the origin; off means such rooms cannot go live.
    pub enabled: bool,
    /// RTMP listen address (port 0 picks a free port).
    pub rtmp_listen: SocketAddr,
    /// Base of the RTMP play URLs handed to viewers, e.g. `rtmp://live.example.com`; empty
    /// means `rtmp://<rtmp_listen>` (with 127.0.0.1 for an unspecified address).
    pub public_rtmp_url: String,
    /// Tags queued per viewer before a slow viewer starts missing some (until a keyframe).
    pub viewer_queue: usize,
    /// Most viewers of one stream (HTTP-FLV and RTMP together).
    pub max_viewers_per_stream: usize,
    /// Bound of a stream's GOP cache in bytes.
    pub gop_cache_max_bytes: usize,
    /// Most RTMP connections at once (publishers, players, and clients that have done neither
    /// yet). Beyond it a new connection is closed at once.
    pub max_connections: usize,
    /// Of `max_connections`, the places kept for publishers: players and clients that have not
    /// published share the rest, so they can never lock the mixers out. Each live room
    /// publishing to the origin holds one; beyond it, a publish with a valid key is refused.
    /// While the shared part is full, new connections wait in the free publisher places and
    /// the oldest that has not published is closed to make room (see `origin::slots`).
    pub publisher_slots: usize,
    /// HLS and LL-HLS of every origin stream at `/live/{room}/index.m3u8` (in memory).
    pub hls: bool,
    /// Longest LL-HLS part in milliseconds (`PART-TARGET`); shorter is lower latency and more
    /// requests.
    pub hls_part_ms: u32,
    /// Finished segments (about 2 s each) listed in the playlist and kept in memory.
    pub hls_segments: usize,
}

impl Default for OriginConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            rtmp_listen: SocketAddr::from(([127, 0, 0, 1], 1935)),
            public_rtmp_url: String::new(),
            viewer_queue: 512,
            max_viewers_per_stream: 1000,
            gop_cache_max_bytes: 16 * 1024 * 1024,
            max_connections: 2048,
            publisher_slots: 256,
            hls: true,
            hls_part_ms: 500,
            hls_segments: 6,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: String::new(),
            drain_timeout_secs: 300,
            cors_origins: Vec::new(),
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for MixerConfig {
    fn default() -> Self {
        Self {
            binary: String::new(),
            video: VideoSpec::default(),
            stop_grace_ms: 3000,
            rtp_bind: costream_mixer::control::DEFAULT_RTP_BIND,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            max_rooms: 1000,
            max_participants_per_room: 16,
            max_outputs_per_room: 8,
            header_read_timeout_secs: 10,
            connections_per_ip: 256,
            room_creations_per_minute_per_ip: 60,
            sessions_per_minute_per_ip: 600,
            invites_per_minute_per_ip: 120,
            join_requests_per_minute_per_ip: 10,
            event_streams_per_room: 64,
            max_peer_connections: 1000,
            max_subscriptions_per_room: 64,
        }
    }
}

/// A configuration problem, naming the key a person has to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

impl Config {
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    pub fn from_toml_str(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The destination rules for outputs (`[outputs]`, with the default explained there).
    pub fn destination_policy(&self) -> crate::access::destinations::DestinationPolicy {
        // A loopback listener behind a reverse proxy (public_url elsewhere) is not the demo.
        let public_url_local = self.server.public_url.is_empty()
            || url::Url::parse(&self.server.public_url)
                .is_ok_and(|u| matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]")));
        let demo =
            self.auth.keys.is_empty() && self.server.listen.ip().is_loopback() && public_url_local;
        crate::access::destinations::DestinationPolicy {
            allow_private: self.outputs.allow_private.unwrap_or(demo),
            allow_hosts: self.outputs.allow.clone(),
        }
    }

    /// The base URL for links handed to users.
    pub fn public_url(&self) -> String {
        if self.server.public_url.is_empty() {
            format!("http://{}", self.server.listen)
        } else {
            self.server.public_url.trim_end_matches('/').to_string()
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_video(&self.mixer.video, "mixer.video")?;
        match (self.media.udp_port_min, self.media.udp_port_max) {
            (Some(min), Some(max)) if min > max || min == 0 => {
                return Err(ConfigError::Invalid {
                    key: "media.udp_port_min",
                    message: format!("range {min}..={max} is empty or starts at 0"),
                })
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "media.udp_port_max",
                    message: "set both udp_port_min and udp_port_max, or neither".into(),
                })
            }
            _ => {}
        }
        self.media.validate_ice()?;
        if let Some(key) = self.store.key.as_ref().filter(|_| self.store.enabled) {
            crate::store::StoreKey::from_base64(key.expose(), "store.key").map_err(|e| {
                ConfigError::Invalid {
                    key: "store.key",
                    message: e.to_string(),
                }
            })?;
        }
        if self.store.enabled && self.store.data_dir().is_none() {
            return Err(ConfigError::Invalid {
                key: "store.dir",
                message: "neither XDG_DATA_HOME nor HOME is set: give a data directory \
                          (--data-dir, COSTREAM_DATA_DIR) or turn the store off (--no-store)"
                    .into(),
            });
        }
        if !self.server.public_url.is_empty() {
            let ok = url::Url::parse(&self.server.public_url)
                .map(|u| matches!(u.scheme(), "http" | "https"))
                .unwrap_or(false);
            if !ok {
                return Err(ConfigError::Invalid {
                    key: "server.public_url",
                    message: format!(
                        "{:?} is not an http(s) URL such as https://live.example.com",
                        self.server.public_url
                    ),
                });
            }
        }
        for origin in &self.server.cors_origins {
            let ok = url::Url::parse(origin)
                .map(|u| {
                    matches!(u.scheme(), "http" | "https")
                        && u.host().is_some()
                        && u.path() == "/"
                        && u.query().is_none()
                })
                .unwrap_or(false);
            if !ok {
                return Err(ConfigError::Invalid {
                    key: "server.cors_origins",
                    message: format!(
                        "{origin:?} is not a web origin such as https://app.example.com"
                    ),
                });
            }
        }
        if let Err(e) = crate::client_addr::TrustedProxies::parse(&self.server.trusted_proxies) {
            return Err(ConfigError::Invalid {
                key: "server.trusted_proxies",
                message: e.to_string(),
            });
        }
        self.validate_origin()?;
        self.validate_pool()?;
        self.validate_auth()?;
        self.validate_cluster()?;
        self.validate_webhooks()?;
        for (key, value) in [
            ("rooms.empty_timeout_secs", self.rooms.empty_timeout_secs),
            (
                "rooms.departure_timeout_secs",
                self.rooms.departure_timeout_secs,
            ),
        ] {
            if !(1..=7 * 24 * 3600).contains(&value) {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!("{value} must be 1 to 604800 seconds (a week)"),
                });
            }
        }
        for (key, value) in [
            (
                "limits.header_read_timeout_secs",
                self.limits.header_read_timeout_secs,
            ),
            (
                "limits.connections_per_ip",
                self.limits.connections_per_ip as u64,
            ),
            (
                "limits.room_creations_per_minute_per_ip",
                u64::from(self.limits.room_creations_per_minute_per_ip),
            ),
            (
                "limits.sessions_per_minute_per_ip",
                u64::from(self.limits.sessions_per_minute_per_ip),
            ),
            (
                "limits.invites_per_minute_per_ip",
                u64::from(self.limits.invites_per_minute_per_ip),
            ),
            (
                "limits.join_requests_per_minute_per_ip",
                u64::from(self.limits.join_requests_per_minute_per_ip),
            ),
            (
                "limits.event_streams_per_room",
                self.limits.event_streams_per_room as u64,
            ),
            (
                "limits.max_peer_connections",
                self.limits.max_peer_connections as u64,
            ),
            (
                "limits.max_subscriptions_per_room",
                self.limits.max_subscriptions_per_room as u64,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be at least 1".into(),
                });
            }
        }
        if self.limits.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid {
                key: "limits.max_body_bytes",
                message: "must be at least 1024 (an SDP offer is several KiB)".into(),
            });
        }
        Ok(())
    }
}

impl Config {
    fn validate_webhooks(&self) -> Result<(), ConfigError> {
        let hooks = &self.webhooks;
        for url in &hooks.urls {
            let ok = url::Url::parse(url)
                .map(|u| u.scheme() == "http" && u.host().is_some())
                .unwrap_or(false);
            if !ok {
                return Err(ConfigError::Invalid {
                    key: "webhooks.urls",
                    message: format!("{url:?} is not an http:// or https:// URL"),
                });
            }
        }
        if let Some(key) = &hooks.api_key {
            if !self.auth.keys.contains_key(key) {
                return Err(ConfigError::Invalid {
                    key: "webhooks.api_key",
                    message: format!("{key:?} is not one of auth.keys"),
                });
            }
        }
        if !(1..=1_000_000).contains(&hooks.queue) {
            return Err(ConfigError::Invalid {
                key: "webhooks.queue",
                message: "must be 1 to 1000000 events".into(),
            });
        }
        Ok(())
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        if self.pool.local && self.cluster.redis_url.is_none() {
            return Err(ConfigError::Invalid {
                key: "pool.local",
                message: "makes serve a worker of a fleet: it needs cluster.redis_url (without a \
                          fleet serve runs its own mixers anyway)"
                    .into(),
            });
        }
        if let Some(url) = &self.cluster.redis_url {
            let ok = url::Url::parse(url)
                .map(|u| matches!(u.scheme(), "redis" | "rediss"))
                .unwrap_or(false);
            if !ok {
                return Err(ConfigError::Invalid {
                    key: "cluster.redis_url",
                    message: "must be a redis:// URL such as redis://10.0.0.5:6379".into(),
                });
            }
        }
        if let Some(secret) = &self.cluster.secret {
            if secret.expose().chars().count() < MIN_SECRET_CHARS {
                return Err(ConfigError::Invalid {
                    key: "cluster.secret",
                    message: format!("must be at least {MIN_SECRET_CHARS} characters"),
                });
            }
        }
        if let Some(id) = &self.cluster.node_id {
            crate::fleet::record::validate_id("node id", id).map_err(|message| {
                ConfigError::Invalid {
                    key: "cluster.node_id",
                    message,
                }
            })?;
        }
        if let Some(url) = &self.cluster.node_url {
            let ok = url::Url::parse(url)
                .map(|u| u.scheme() == "http" && u.host().is_some())
                .unwrap_or(false);
            if !ok {
                return Err(ConfigError::Invalid {
                    key: "cluster.node_url",
                    message: "must be an http:// URL the other serve nodes reach on their private network, such as http://10.0.0.7:8080 (https is not supported between nodes)".into(),
                });
            }
        }
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        let auth = &self.auth;
        for (key, secret) in &auth.keys {
            if key.trim().is_empty() || key.len() > 128 {
                return Err(ConfigError::Invalid {
                    key: "auth.keys",
                    message: "an API key must be 1 to 128 characters".into(),
                });
            }
            let chars = secret.expose().chars().count();
            if chars < MIN_SECRET_CHARS {
                return Err(ConfigError::Invalid {
                    key: "auth.keys",
                    message: format!(
                        "the secret of API key {key:?} has {chars} characters; use at least \
                         {MIN_SECRET_CHARS} (e.g. `openssl rand -base64 32`)"
                    ),
                });
            }
        }
        if !(60..=30 * 24 * 3600).contains(&auth.token_ttl_secs) {
            return Err(ConfigError::Invalid {
                key: "auth.token_ttl_secs",
                message: format!(
                    "{} must be 60 (a minute) to 2592000 (30 days)",
                    auth.token_ttl_secs
                ),
            });
        }
        let listen = self.server.listen;
        if auth.keys.is_empty() && !auth.open && !listen.ip().is_loopback() {
            return Err(ConfigError::Invalid {
                key: "auth.keys",
                message: format!(
                    "serve would listen on {listen}, reachable from other machines, without API \
                     keys: anyone could create rooms and push them anywhere. Set an API key and \
                     secret ([auth] keys = {{ KEY = \"SECRET\" }}, or COSTREAM_API_KEY and \
                     COSTREAM_API_SECRET), or run open on purpose with --open ([auth] open = true)"
                ),
            });
        }
        Ok(())
    }

    fn validate_pool(&self) -> Result<(), ConfigError> {
        let pool = &self.pool;
        if let Some(cores) = pool.capacity_cores {
            if !(cores > 0.0 && cores <= 4096.0) {
                return Err(ConfigError::Invalid {
                    key: "pool.capacity_cores",
                    message: format!("{cores} must be more than 0 (e.g. 8 or 0.5)"),
                });
            }
        }
        if !(pool.max_utilization > 0.0 && pool.max_utilization <= 1.0) {
            return Err(ConfigError::Invalid {
                key: "pool.max_utilization",
                message: format!("{} must be in (0, 1], e.g. 0.9", pool.max_utilization),
            });
        }
        if pool.warm > 64 {
            return Err(ConfigError::Invalid {
                key: "pool.warm",
                message: format!("{} warm mixers is too many; at most 64", pool.warm),
            });
        }
        Ok(())
    }

    fn validate_origin(&self) -> Result<(), ConfigError> {
        let origin = &self.origin;
        if !origin.public_rtmp_url.is_empty() {
            let ok = url::Url::parse(&origin.public_rtmp_url)
                .map(|u| u.scheme() == "rtmp" && u.host_str().is_some_and(|h| !h.is_empty()))
                .unwrap_or(false);
            if !ok {
                return Err(ConfigError::Invalid {
                    key: "origin.public_rtmp_url",
                    message: format!(
                        "{:?} is not an rtmp:// base URL such as rtmp://live.example.com",
                        origin.public_rtmp_url
                    ),
                });
            }
        }
        if !(16..=65536).contains(&origin.viewer_queue) {
            return Err(ConfigError::Invalid {
                key: "origin.viewer_queue",
                message: format!("{} must be 16..=65536 tags", origin.viewer_queue),
            });
        }
        if !(200..=2000).contains(&origin.hls_part_ms) {
            return Err(ConfigError::Invalid {
                key: "origin.hls_part_ms",
                message: format!(
                    "{} must be 200..=2000 ms (a part is a fraction of a 2 s segment)",
                    origin.hls_part_ms
                ),
            });
        }
        if !(3..=30).contains(&origin.hls_segments) {
            return Err(ConfigError::Invalid {
                key: "origin.hls_segments",
                message: format!(
                    "{} must be 3..=30 (players start three segments from the end)",
                    origin.hls_segments
                ),
            });
        }
        if origin.max_viewers_per_stream == 0 {
            return Err(ConfigError::Invalid {
                key: "origin.max_viewers_per_stream",
                message: "must be at least 1".into(),
            });
        }
        if origin.publisher_slots == 0 {
            return Err(ConfigError::Invalid {
                key: "origin.publisher_slots",
                message: "must be at least 1, or no room could publish to the origin".into(),
            });
        }
        if origin.max_connections <= origin.publisher_slots {
            return Err(ConfigError::Invalid {
                key: "origin.max_connections",
                message: format!(
                    "{} must be more than origin.publisher_slots ({}), or no viewer could connect",
                    origin.max_connections, origin.publisher_slots
                ),
            });
        }
        if origin.gop_cache_max_bytes < 64 * 1024 {
            return Err(ConfigError::Invalid {
                key: "origin.gop_cache_max_bytes",
                message: "must be at least 65536 (one GOP is hundreds of KiB)".into(),
            });
        }
        Ok(())
    }
}

/// Checks an output video spec; `key` names where it came from (config key or JSON field).
pub fn validate_video(video: &VideoSpec, key: &'static str) -> Result<(), ConfigError> {
    let problem = if !(160..=3840).contains(&video.width) || video.width % 2 != 0 {
        Some(format!("width {} must be even and 160..=3840", video.width))
    } else if !(90..=2160).contains(&video.height) || video.height % 2 != 0 {
        Some(format!(
            "height {} must be even and 90..=2160",
            video.height
        ))
    } else if !(1..=60).contains(&video.fps) {
        Some(format!("fps {} must be 1..=60", video.fps))
    } else if !(100..=20_000).contains(&video.bitrate_kbps) {
        Some(format!(
            "bitrate_kbps {} must be 100..=20000",
            video.bitrate_kbps
        ))
    } else {
        None
    };
    match problem {
        Some(message) => Err(ConfigError::Invalid { key, message }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_listen_on_loopback_8080() {
        let config = Config::default();
        config.validate().unwrap();
        assert_eq!(config.public_url(), "http://127.0.0.1:8080");
        assert_eq!(config.mixer.video.width, 1280);
    }

    #[test]
    fn toml_overrides_only_what_it_names() {
        let config = Config::from_toml_str(
            "[server]\npublic_url = \"https://live.example.com/\"\n[mixer.video]\nwidth = 1920\nheight = 1080\nfps = 30\nbitrate_kbps = 4500\n",
        )
        .unwrap();
        assert_eq!(config.public_url(), "https://live.example.com");
        assert_eq!(config.mixer.video.height, 1080);
        assert_eq!(config.limits, LimitsConfig::default());
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = Config::from_toml_str("[server]\nlisten_adress = \"0.0.0.0:80\"\n").unwrap_err();
        assert!(err.contains("listen_adress"), "{err}");
    }

    #[test]
    fn invalid_values_name_their_key() {
        let mut config = Config::default();
        config.mixer.video.width = 1281;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("mixer.video") && err.contains("1281"), "{err}");

        let mut config = Config::default();
        config.media.udp_port_min = Some(50000);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("udp_port_max"), "{err}");
    }

    #[test]
    fn pool_section_defaults_and_validation() {
        let config = Config::default();
        assert_eq!(config.pool.warm, 1);
        assert!(config.pool.cores() >= 1.0);
        assert_eq!(config.server.drain_timeout_secs, 300);
        let config =
            Config::from_toml_str("[pool]\ncapacity_cores = 0.5\nmax_utilization = 1.0\n").unwrap();
        config.validate().unwrap();
        assert_eq!(config.pool.cores(), 0.5);
        let mut config = Config::default();
        config.pool.max_utilization = 1.5;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("pool.max_utilization"), "{err}");
        let mut config = Config::default();
        config.pool.capacity_cores = Some(0.0);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("pool.capacity_cores"), "{err}");
    }

    #[test]
    fn ice_timeouts_default_within_5_s_and_are_validated_by_key() {
        let media = Config::default().media;
        let ice = media.ice_timeouts();
        assert!(ice.disconnected + ice.failed + ice.keepalive <= std::time::Duration::from_secs(4));
        let config = Config::from_toml_str(
            "[media]\nice_disconnected_timeout_ms = 4000\nice_failed_timeout_ms = 8000\n",
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.media.ice_timeouts().failed.as_millis(), 8000);
        assert_eq!(config.media.ice_keepalive_ms, 500);

        let mut config = Config::default();
        config.media.ice_keepalive_ms = 5000;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("media.ice_keepalive_ms"), "{err}");
        let mut config = Config::default();
        config.media.ice_failed_timeout_ms = 0;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("media.ice_failed_timeout_ms"), "{err}");
    }

    #[test]
    fn origin_section_defaults_and_validation() {
        let config = Config::from_toml_str(
            "[origin]\nrtmp_listen = \"0.0.0.0:1936\"\npublic_rtmp_url = \"rtmp://live.example.com\"\n",
        )
        .unwrap();
        config.validate().unwrap();
        assert!(config.origin.enabled);
        assert_eq!(config.origin.rtmp_listen.port(), 1936);
        assert_eq!(Config::default().origin.rtmp_listen.port(), 1935);

        let mut config = Config::default();
        config.origin.public_rtmp_url = "http://live.example.com".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("origin.public_rtmp_url"), "{err}");
        let mut config = Config::default();
        config.origin.viewer_queue = 1;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("origin.viewer_queue"), "{err}");
        assert_eq!(
            (config.origin.max_connections, config.origin.publisher_slots),
            (2048, 256)
        );
        let mut config = Config::default();
        config.origin.max_connections = config.origin.publisher_slots;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("origin.max_connections"), "{err}");
        let mut config = Config::default();
        config.origin.publisher_slots = 0;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("origin.publisher_slots"), "{err}");
        let err = Config::from_toml_str("[origin]\nlisten = \"x\"\n").unwrap_err();
        assert!(err.contains("listen"), "{err}");
    }

    #[test]
    fn trusted_proxies_default_to_none_and_are_validated() {
        assert!(Config::default().server.trusted_proxies().is_empty());
        let config =
            Config::from_toml_str("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\"]\n")
                .unwrap();
        config.validate().unwrap();
        assert!(!config.server.trusted_proxies().is_empty());
        let config =
            Config::from_toml_str("[server]\ntrusted_proxies = [\"proxy.internal\"]\n").unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("server.trusted_proxies") && err.contains("proxy.internal"),
            "{err}"
        );
    }

    #[test]
    fn auth_refuses_running_open_on_a_public_address_and_checks_secrets() {
        let public: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let mut config = Config::default();
        config.server.listen = public;
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("auth.keys") && err.contains("--open") && err.contains("0.0.0.0:8080"),
            "{err}"
        );
        config.auth.open = true;
        config.validate().expect("open on purpose");
        config.auth.open = false;
        config
            .auth
            .keys
            .insert("k".into(), ApiSecret::new(&"s".repeat(MIN_SECRET_CHARS)));
        config.validate().expect("keyed");
        config
            .auth
            .keys
            .insert("short".into(), ApiSecret::new("tooshort"));
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("\"short\"") && err.contains("32"), "{err}");
        assert!(!err.contains("tooshort"), "the secret is not echoed: {err}");
        assert!(!format!("{config:?}").contains(&"s".repeat(MIN_SECRET_CHARS)));
        let ttl = Config::from_toml_str("[auth]\ntoken_ttl_secs = 5\n").unwrap();
        assert!(ttl
            .validate()
            .unwrap_err()
            .to_string()
            .contains("auth.token_ttl_secs"));
        let keys = Config::from_toml_str(&format!(
            "[auth]\nkeys = {{ APIk = \"{}\" }}\n",
            "x".repeat(40)
        ))
        .unwrap();
        assert_eq!(keys.auth.keys["APIk"].expose().len(), 40);
    }
}
