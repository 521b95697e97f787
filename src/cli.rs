//! Command line: `costream serve | worker | mixer | publish | token | room`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "costream",
    version,
    about = "Real-time multi-party live-stream mixing server"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: CliCommand,
    /// Log lines as text, or as JSON objects (one per line, with the span fields such as room,
    /// participant and request id). Mixers started by this process log the same way.
    #[arg(
        long,
        global = true,
        value_enum,
        env = crate::telemetry::LOG_FORMAT_ENV,
        default_value = "text"
    )]
    pub log_format: crate::telemetry::LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Run the server: API, WHIP ingest, pages; spawns one mixer process per live room.
    Serve(ServeArgs),
    /// Run mixers for rooms that serve nodes place on this machine (a fleet, through Redis).
    Worker(WorkerArgs),
    /// Run one room's mixer (started by `serve`; speaks JSON lines on stdin/stdout).
    Mixer,
    /// Publish a synthetic test stream (solid color + tone) to a WHIP endpoint.
    Publish(PublishArgs),
    /// Access tokens.
    Token(TokenArgs),
    /// Rooms, from the command line.
    Room(RoomArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML config file (see README); flags and env override it.
    #[arg(long, env = "COSTREAM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Listen address, e.g. 0.0.0.0:8080 (`:0` picks a free port).
    #[arg(long, env = "COSTREAM_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Base URL for links handed out by the API, e.g. https://live.example.com.
    #[arg(long, env = "COSTREAM_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Mixer executable (default: this binary).
    #[arg(long, env = "COSTREAM_MIXER_BINARY")]
    pub mixer_binary: Option<PathBuf>,
    /// RTMP listen address of the built-in origin, e.g. 0.0.0.0:1935 (`:0` picks a free port).
    #[arg(long, env = "COSTREAM_ORIGIN_RTMP_LISTEN")]
    pub origin_rtmp_listen: Option<SocketAddr>,
    /// Run without API keys on a non-loopback address: anyone who reaches it may create rooms
    /// (`[auth] open`).
    #[arg(long, env = "COSTREAM_OPEN")]
    pub open: bool,
    /// Run mixers on a fleet of `costream worker`s coordinated by this Redis, e.g.
    /// redis://10.0.0.5:6379 (`[cluster] redis_url`); serve then runs no mixers itself.
    #[arg(long, env = "COSTREAM_REDIS_URL")]
    pub redis: Option<String>,
    /// Signs placements to the fleet's workers (`[cluster] secret`, at least 32 characters).
    #[arg(
        long = "cluster-secret",
        env = "COSTREAM_CLUSTER_SECRET",
        hide_env_values = true
    )]
    pub cluster_secret: Option<String>,
    /// This serve node's name among a fleet's serve nodes (`[cluster] node_id`; default: made
    /// once and kept in the data directory's `node.id`).
    #[arg(long, env = "COSTREAM_NODE_ID")]
    pub node_id: Option<String>,
    /// Where the other serve nodes reach this one, e.g. http://10.0.0.7:8080 (`[cluster]
    /// node_url`; default: http:// and --listen unless that is a wildcard address).
    #[arg(long, env = "COSTREAM_NODE_URL")]
    pub node_url: Option<String>,
    /// Where rooms are kept so they come back after a restart (`[store] dir`; default
    /// `$XDG_DATA_HOME/costream`, else `~/.local/share/costream`).
    #[arg(long = "data-dir", env = "COSTREAM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep rooms in memory only: they end with the process (`[store] enabled = false`).
    #[arg(long = "no-store", env = "COSTREAM_NO_STORE")]
    pub no_store: bool,
    /// 32 bytes in base64 that encrypt stream keys at rest (`[store] key`).
    #[arg(long = "store-key", env = "COSTREAM_STORE_KEY", hide_env_values = true)]
    pub store_key: Option<String>,
    #[command(flatten)]
    pub key: ApiKeyArgs,
}

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// The fleet's Redis, e.g. redis://10.0.0.5:6379.
    #[arg(long, env = "COSTREAM_REDIS_URL")]
    pub redis: String,
    /// This machine's address as serve reaches it: mixers receive RTP here and serve connects
    /// here to run rooms.
    #[arg(long, env = "COSTREAM_ADVERTISE_IP")]
    pub advertise_ip: std::net::IpAddr,
    /// Control port serve connects to (0: any free port; the registry says which).
    #[arg(long, env = "COSTREAM_WORKER_PORT", default_value_t = 0)]
    pub port: u16,
    /// Cores mixers may use (default: the cores available to this process).
    #[arg(long, env = "COSTREAM_CAPACITY_CORES")]
    pub capacity_cores: Option<f64>,
    /// Share of the cores admission hands out.
    #[arg(long, default_value_t = 0.9)]
    pub max_utilization: f64,
    /// Mixer processes kept warm.
    #[arg(long, env = "COSTREAM_WARM", default_value_t = 1)]
    pub warm: usize,
    /// Name in the registry (default: host name and process id).
    #[arg(long, env = "COSTREAM_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Mixer executable (default: this binary).
    #[arg(long, env = "COSTREAM_MIXER_BINARY")]
    pub mixer_binary: Option<PathBuf>,
    /// After SIGTERM, live rooms stream on this long before the worker stops and they move.
    #[arg(long, default_value_t = 3600)]
    pub drain_timeout_secs: u64,
    /// A mixer whose serve was lost (killed, restarted, upgraded) keeps pushing this long for a
    /// serve to take it over; then it stops.
    #[arg(long, default_value_t = 30)]
    pub orphan_grace_secs: u64,
    /// A room going live is charged for at least this many participants.
    #[arg(long, default_value_t = 4)]
    pub reserve_inputs: u32,
    /// Shared by serve and every worker: signs placements (at least 32 characters). Required
    /// unless the worker listens on loopback.
    #[arg(
        long = "cluster-secret",
        env = "COSTREAM_CLUSTER_SECRET",
        hide_env_values = true
    )]
    pub cluster_secret: Option<String>,
    /// Serve this worker's Prometheus metrics (`GET /metrics`) and `GET /healthz` here, e.g.
    /// 10.0.0.11:9100 (default: no endpoint). It has no authentication and its series name the
    /// rooms this worker runs: bind it to a private address only (this machine's address on
    /// the fleet's network; on Kubernetes 0.0.0.0:9100 inside the pod, which is the pod IP).
    #[arg(long, env = "COSTREAM_WORKER_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

/// An API key and its secret, from flags or the environment.
#[derive(Debug, Clone, Args)]
pub struct ApiKeyArgs {
    /// API key (`iss` of the tokens it signs).
    #[arg(long, env = "COSTREAM_API_KEY", requires = "api_secret")]
    pub api_key: Option<String>,
    /// Its secret (at least 32 characters).
    #[arg(long, env = "COSTREAM_API_SECRET", hide_env_values = true)]
    pub api_secret: Option<String>,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint an access token (JWT, HS256) with the API key and secret; prints it.
    Create(TokenCreateArgs),
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    #[command(flatten)]
    pub key: ApiKeyArgs,
    /// The room the token joins (omit with --room-create).
    #[arg(long, required_unless_present = "room_create")]
    pub room: Option<String>,
    /// The participant's identity (`sub`).
    #[arg(long, default_value = "")]
    pub identity: String,
    /// Display name.
    #[arg(long)]
    pub name: Option<String>,
    /// Host powers (`roomAdmin`): go live, remove guests, change the program.
    #[arg(long)]
    pub host: bool,
    /// A room creation token (`roomCreate`) instead: for `POST /api/v1/rooms`, or a start-page
    /// link `https://SERVER/#token=TOKEN`.
    #[arg(long, conflicts_with_all = ["room", "host"])]
    pub room_create: bool,
    /// Lifetime, e.g. 6h, 30m, 2d.
    #[arg(long, default_value = "6h", value_parser = humantime::parse_duration)]
    pub ttl: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct RoomArgs {
    #[command(subcommand)]
    pub command: RoomCommand,
}

#[derive(Debug, Subcommand)]
pub enum RoomCommand {
    /// Create a room on a server (with a roomCreate token minted from the API key); prints the
    /// answer (room id, tokens, links) as JSON.
    Create(RoomCreateArgs),
}

#[derive(Debug, Args)]
pub struct RoomCreateArgs {
    #[command(flatten)]
    pub key: ApiKeyArgs,
    /// The server's base URL.
    #[arg(long, env = "COSTREAM_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Room name.
    #[arg(long)]
    pub name: Option<String>,
    /// Output quality preset, e.g. 720p30.
    #[arg(long)]
    pub preset: Option<String>,
    /// Push the mix here (rtmp:// or rtmps://; repeat for several); default: the built-in
    /// origin.
    #[arg(long = "output")]
    pub outputs: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// WHIP endpoint, e.g. http://127.0.0.1:8080/whip/<room_id>.
    #[arg(long)]
    pub whip: String,
    /// Host or guest token of the room.
    #[arg(long, env = "COSTREAM_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Display name shown for this participant.
    #[arg(long, default_value = "synthetic")]
    pub name: String,
    /// Solid color of the video: a name (red, green, blue, yellow, magenta, cyan, white) or RRGGBB hex.
    #[arg(long, default_value = "red")]
    pub color: String,
    /// Tone frequency in Hz (0 for silence).
    #[arg(long, default_value_t = 440.0)]
    pub tone: f32,
    /// Video codec: vp8 or h264.
    #[arg(long, default_value = "vp8")]
    pub codec: String,
    #[arg(long, default_value_t = 640)]
    pub width: u32,
    #[arg(long, default_value_t = 360)]
    pub height: u32,
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// Stop after this many seconds (default: until Ctrl-C / SIGTERM).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Publish audio only.
    #[arg(long)]
    pub no_video: bool,
    /// Picture: solid (the --color), smpte, ball or snow.
    #[arg(long, default_value = "solid")]
    pub pattern: String,
    /// Scroll the picture this many pixels per frame (motion for benchmarks).
    #[arg(long, default_value_t = 0)]
    pub scroll: i32,
    /// Burn the wall-clock capture time into the top of every frame (a block barcode the
    /// latency benchmark reads back at the RTMP server; see mixer/src/timecode.rs).
    #[arg(long)]
    pub timecode: bool,
    /// Encode only the first N seconds, then send them again and again without encoding: a
    /// stand-in for a remote sender that costs this machine almost no CPU (benchmarks of
    /// many rooms). A keyframe request restarts the loop at its first (key) frame.
    #[arg(long, conflicts_with = "timecode")]
    pub replay_secs: Option<f64>,
    /// Exit with an error when the session is lost instead of reconnecting. By default a lost
    /// session (the server restarted or became unreachable: no answer to ICE checks for 2 s) is
    /// published again with the same token and media, retrying every 0.2–1 s while the server
    /// is down and stopping when it answers 400, 401, 403, 404 or 410 (token or room gone).
    #[arg(long)]
    pub no_reconnect: bool,
}
