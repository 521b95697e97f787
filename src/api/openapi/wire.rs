//! Schemas of wire shapes whose Rust types live outside `api`: the mixer crate's control types
//! (video, layout, look, audio, output state) and the room and pool views. The API serializes
//! those types directly, so these mirrors describe them for the document only; `tests.rs` checks
//! real responses against them, so a field added to a view without a line here fails a test.

#![allow(dead_code)] // Never built: these types exist for their `ToSchema` impls.

use serde::Serialize;
use utoipa::ToSchema;

/// Output video of a room's mix (`[mixer.video]` defaults, a `preset`, or `video` at create).
#[derive(Serialize, ToSchema)]
#[schema(as = VideoSpec)]
pub struct VideoSpec {
    /// Canvas width in pixels (even).
    pub width: u32,
    /// Canvas height in pixels (even).
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// H.264 target bitrate in kbit/s.
    pub bitrate_kbps: u32,
}

/// How the canvas is divided: the body of `PUT /api/v1/rooms/{id}/layout`. Without `pin` the
/// featured participant is the active speaker, else the first to join.
#[derive(Serialize, ToSchema)]
#[schema(as = Layout)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Layout {
    /// Everyone the same size, in join order (the default).
    Grid,
    /// The featured participant large above a strip of the others.
    Speaker {
        /// Participant id to feature.
        pin: Option<String>,
    },
    /// The featured participant full-frame, the others small bottom-right.
    Pip {
        /// Participant id to feature.
        pin: Option<String>,
    },
    /// Explicit rectangles, fractions 0–1 of the canvas; unlisted participants are hidden.
    Custom {
        /// At most 64 tiles, one per participant.
        tiles: Vec<CustomTile>,
    },
}

/// One participant's rectangle in a custom layout.
#[derive(Serialize, ToSchema)]
#[schema(as = CustomTile)]
#[serde(deny_unknown_fields)]
pub struct CustomTile {
    pub participant_id: String,
    /// Left edge, a fraction of the canvas width.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub x: f64,
    /// Top edge, a fraction of the canvas height.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub y: f64,
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub width: f64,
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub height: f64,
    /// Higher is drawn on top (default 0).
    #[serde(default)]
    pub z: u32,
}

/// A room's whole look: the body of `PUT /api/v1/rooms/{id}/look` and `look` at create.
/// Omitted fields take their defaults.
#[derive(Serialize, ToSchema)]
#[schema(as = Look)]
#[serde(deny_unknown_fields)]
pub struct Look {
    /// Display names over each tile's bottom-left corner (default `false`).
    #[serde(default)]
    pub labels: bool,
    /// Canvas colour, `#RRGGBB` (default `#000000`; anything else: `400` `invalid_look`).
    #[serde(default)]
    #[schema(example = "#1e2a38")]
    pub background: String,
    /// An inline PNG, `data:image/png;base64,…`, at most 262144 characters; shown top-right.
    #[serde(default)]
    #[schema(max_length = 262144)]
    pub logo: Option<String>,
    /// First line of the "starting soon" slate (default: the room name).
    #[serde(default)]
    pub title: String,
}

/// A participant's level in the program.
#[derive(Serialize, ToSchema)]
#[schema(as = AudioMix)]
pub struct AudioMix {
    /// Linear gain, 0–4 (1 = as sent).
    pub gain: f64,
    pub muted: bool,
}

/// State of one RTMP output.
#[derive(Serialize, ToSchema)]
#[schema(as = OutputState)]
#[serde(rename_all = "lowercase")]
pub enum OutputState {
    Idle,
    Connecting,
    Live,
    Reconnecting,
    Failed,
}

/// `GET /api/v1/rooms/{id}` (and `status` events). Without the host token, outputs carry only
/// `output_id` and `state` and the mixer only `state`.
#[derive(Serialize, ToSchema)]
#[schema(as = RoomStatus)]
pub struct RoomStatus {
    pub room_id: String,
    pub name: String,
    pub broadcast: Broadcast,
    /// Seconds since the room went live (absent when not live).
    pub live_seconds: Option<f64>,
    /// Cores the pool reserved for the room while live.
    pub cost: Option<f64>,
    pub video: VideoSpec,
    pub layout: Layout,
    pub look: LookStatus,
    /// The participant the mixer hears speaking, while live.
    pub active_speaker: Option<String>,
    pub participants: Vec<ParticipantStatus>,
    pub mixer: MixerStatus,
    pub outputs: Vec<OutputStatus>,
    pub lifetime: RoomLifetime,
    /// Present when the room pushes to the built-in origin.
    pub origin: Option<OriginStatus>,
    /// The program's quality figures, while live (README "Quality figures").
    pub quality: Option<crate::room::quality::ProgramQualityView>,
    /// Viewers asking to join: whether they may (anyone), the cap and who waits (host only).
    pub join_requests: Option<JoinRequestsStatus>,
    /// The recording in progress (`POST …/recordings`).
    pub recording: Option<crate::room::RecordingStatus>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = JoinRequestsStatus)]
pub struct JoinRequestsStatus {
    pub enabled: bool,
    /// Host only.
    pub max_guests: Option<u32>,
    /// Host only; oldest first.
    pub pending: Option<Vec<crate::room::join_requests::PendingRequest>>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Broadcast)]
#[serde(rename_all = "lowercase")]
pub enum Broadcast {
    Offline,
    Live,
    Failed,
}

/// The look as the status shows it: `has_logo` instead of the image.
#[derive(Serialize, ToSchema)]
#[schema(as = LookStatus)]
pub struct LookStatus {
    pub labels: bool,
    pub background: String,
    pub title: String,
    pub has_logo: bool,
}

#[derive(Serialize, ToSchema)]
#[schema(as = ParticipantStatus)]
pub struct ParticipantStatus {
    pub participant_id: String,
    pub role: Role,
    /// The token's `sub`, or a generated `guest-…` / `anon-…`.
    pub identity: String,
    pub display_name: String,
    pub tracks: Vec<TrackStatus>,
    pub audio: AudioMix,
    /// Active WHEP subscriptions to this participant.
    pub subscribers: u64,
    pub quality: crate::room::quality::ParticipantQualityView,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Role)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Host,
    Guest,
}

#[derive(Serialize, ToSchema)]
#[schema(as = TrackStatus)]
pub struct TrackStatus {
    pub track_id: String,
    pub kind: MediaKind,
    pub codec: Codec,
    /// The mixer receives this track.
    pub in_mix: bool,
}

#[derive(Serialize, ToSchema)]
#[schema(as = MediaKind)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Audio,
    Video,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Codec)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    Vp8,
    H264,
    Opus,
}

/// The room's mixer. Everything but `state` only with the host token.
#[derive(Serialize, ToSchema)]
#[schema(as = MixerStatus)]
pub struct MixerStatus {
    pub state: MixerState,
    pub reason: Option<String>,
    pub frames_out: Option<u64>,
    /// Mixers replaced after a crash or hang during this broadcast.
    pub restarts: Option<u32>,
    pub pid: Option<u32>,
    pub binary: Option<String>,
    pub version: Option<String>,
    /// It came from the warm pool.
    pub warm: Option<bool>,
    /// The fleet worker running it (absent on one box).
    pub worker: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = MixerState)]
#[serde(rename_all = "lowercase")]
pub enum MixerState {
    None,
    Starting,
    Running,
    /// A planned move to another fleet worker: the old mixer is on air until its successor
    /// has the outputs.
    Moving,
    Restarting,
    Failed,
}

/// One output. Everything but `output_id` and `state` only with the host token.
#[derive(Serialize, ToSchema)]
#[schema(as = OutputStatus)]
pub struct OutputStatus {
    pub output_id: String,
    pub state: OutputState,
    /// The destination with its stream key shown as `***`.
    pub url: Option<String>,
    pub reason: Option<String>,
    pub bytes_sent: Option<u64>,
    /// Send rate over the last ~3 s.
    pub bitrate_kbps: Option<u64>,
    /// Time since the output last became `live` (absent otherwise).
    pub live_seconds: Option<f64>,
    /// Drops into `reconnecting` during this broadcast.
    pub reconnects: Option<u32>,
    /// This output pushes to the built-in origin (only on rooms that use it).
    pub origin: Option<bool>,
}

/// When the room closes by itself if nobody comes (back).
#[derive(Serialize, ToSchema)]
#[schema(as = RoomLifetime)]
pub struct RoomLifetime {
    pub empty_timeout_secs: u64,
    pub departure_timeout_secs: u64,
    /// `null` while someone is in the room or it is live.
    #[schema(required = true)]
    pub closes_in_secs: Option<f64>,
}

/// The room's stream on the built-in origin.
#[derive(Serialize, ToSchema)]
#[schema(as = OriginStatus)]
pub struct OriginStatus {
    pub flv_url: String,
    pub rtmp_play_url: String,
    pub live: bool,
    pub viewers: u64,
    /// Tags slow viewers missed.
    pub dropped_tags: u64,
}

/// `GET /api/v1/pool`: capacity in cores, what live rooms reserved, the warm mixers.
#[derive(Serialize, ToSchema)]
#[schema(as = PoolView)]
pub struct PoolView {
    /// Cores mixers may use: `capacity_cores × max_utilization`.
    pub capacity: f64,
    pub capacity_cores: f64,
    pub max_utilization: f64,
    pub used: f64,
    pub free: f64,
    pub warm_mixers: u64,
    pub warm_target: u64,
    pub warm_pids: Vec<u32>,
    pub mixer_binary: String,
    /// After SIGTERM: nothing new is admitted.
    pub draining: bool,
    pub rooms: Vec<RoomCost>,
    /// The fleet's workers (absent on one box).
    pub workers: Option<Vec<WorkerView>>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = RoomCost)]
pub struct RoomCost {
    pub room_id: String,
    /// Cores reserved for the room.
    pub cost: f64,
}

#[derive(Serialize, ToSchema)]
#[schema(as = WorkerView)]
pub struct WorkerView {
    pub worker_id: String,
    pub address: String,
    pub version: String,
    pub protocol: u32,
    pub state: WorkerState,
    pub capacity: f64,
    pub used: f64,
    pub free: f64,
    pub warm_mixers: u64,
    pub rooms: Vec<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = WorkerState)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    Serving,
    Draining,
}

/// One Server-Sent Event of `GET /api/v1/rooms/{id}/events`.
#[derive(Serialize, ToSchema)]
#[schema(as = RoomEvent)]
pub struct RoomEvent {
    pub event: RoomEventName,
    /// JSON: the room status (`status`), `{type, participant_id}` (`removed`), `{}` (`ended`).
    pub data: String,
}

#[derive(Serialize, ToSchema)]
#[schema(as = RoomEventName)]
#[serde(rename_all = "lowercase")]
pub enum RoomEventName {
    Status,
    Removed,
    Ended,
}
