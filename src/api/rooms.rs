//! `/api/v1/rooms`: create, inspect, go live, stop, end.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use costream_mixer::control::{LayoutSpec, Look, OutputSpec, VideoSpec};
use costream_mixer::encoding::Preset;
use serde::{Deserialize, Serialize};

use super::auth;
use super::body::{parse_json_or_default, read_limited};
use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::access::Claims;
use crate::config::validate_video;
use crate::origin::ORIGIN_OUTPUT_ID;
use crate::pool::Refusal;
use crate::room::actor::GoLiveError;
use crate::room::state::RoomSettings;
use crate::room::status::RoomStatus;
use crate::room::tokens::Role;
use crate::room::RoomHandle;

/// Body of `POST /api/v1/rooms`; every field is optional.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoom {
    /// At most 200 characters; the default slate title.
    #[serde(default)]
    #[schema(max_length = 200)]
    pub name: Option<String>,
    /// RTMP destinations (at most `limits.max_outputs_per_room`); none: the built-in origin.
    #[serde(default)]
    pub outputs: Vec<OutputRequest>,
    /// A named format (`720p30`, `1080p60`, ...): size, frame rate and a default bitrate.
    /// Fields given in `video` override it.
    #[serde(default)]
    #[schema(example = "720p30")]
    pub preset: Option<String>,
    #[serde(default)]
    pub video: Option<VideoRequest>,
    /// The room's look (as `PUT .../look`).
    #[serde(default)]
    #[schema(value_type = Option<super::openapi::wire::Look>)]
    pub look: Option<Look>,
    /// Shorthand for `look.labels`: name labels on the tiles.
    #[serde(default)]
    pub labels: Option<bool>,
    /// Record every broadcast of the room (`GET …/recordings` lists them).
    #[serde(default)]
    pub record: bool,
}

/// One RTMP or SRT destination (`POST …/outputs`, `outputs` at create).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputRequest {
    /// `rtmp://` or `rtmps://host[:port]/app/streamkey`, or
    /// `srt://host:port?streamid=…&passphrase=…&latency=ms` (MPEG-TS over SRT, caller).
    #[schema(example = "rtmp://live.example.com/app/streamkey")]
    pub url: String,
}

/// Partial override of the server's default output video.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VideoRequest {
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fps: Option<u32>,
    pub bitrate_kbps: Option<u32>,
}

/// The answer to `POST /api/v1/rooms`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedRoom {
    pub room_id: String,
    pub host_token: String,
    pub guest_token: String,
    pub host_url: String,
    pub guest_url: String,
    pub watch_url: String,
    /// WHIP endpoint for publishers (OBS, browsers, `costream publish`).
    pub whip_url: String,
    /// HTTP-FLV of the mix on the built-in origin (rooms created without outputs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flv_url: Option<String>,
    /// HLS / LL-HLS playlist of the mix on the built-in origin (iOS, hls.js); absent with
    /// `origin.hls = false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hls_url: Option<String>,
    /// RTMP play URL of the mix on the built-in origin (ffplay, VLC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtmp_play_url: Option<String>,
}

/// `POST /api/v1/rooms`.
#[utoipa::path(
    post,
    path = "/api/v1/rooms",
    tag = "rooms",
    summary = "Create a room",
    request_body(content = Option<CreateRoom>, content_type = "application/json",
        description = "Optional: an empty body creates a room with the server's defaults, pushing to the built-in origin."),
    responses(
        (status = 201, description = "The room, with its host and guest tokens", body = CreatedRoom,
            headers(("Location" = String, description = "`/api/v1/rooms/{room_id}`"))),
        (status = 400, description = "`invalid_json` (unknown field or wrong type; the message names it), `invalid_output` (bad or refused destination), `too_many_outputs`, `invalid_preset`, `invalid_video`, `invalid_name`, `invalid_look`, `unreadable_body`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: a keyed server needs an operator token", body = ErrorBody),
        (status = 403, description = "`forbidden`: the token lacks the `roomCreate` grant", body = ErrorBody),
        (status = 408, description = "`body_timeout`", body = ErrorBody),
        (status = 413, description = "`body_too_large`: over `limits.max_body_bytes`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: a body that is not `application/json`", body = ErrorBody),
        (status = 429, description = "`rate_limited` (with `Retry-After`): `limits.room_creations_per_minute_per_ip`", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds"))),
        (status = 503, description = "`draining` (after SIGTERM) or `too_many_rooms` (`limits.max_rooms`)", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub async fn create(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    auth::require_operator(&headers, app.rooms.access(), Claims::require_create)?;
    if app.rooms.pool().is_draining() {
        return Err(ApiError::refused(&crate::pool::Refusal::Draining));
    }
    let bytes = read_limited(&headers, body, app.config.limits.max_body_bytes).await?;
    let request: CreateRoom = parse_json_or_default(&headers, &bytes)?;
    let mut settings = room_settings(&app.config, request)?;
    for (i, output) in settings.outputs.iter().enumerate() {
        check_destination(&app, &output.url).await.map_err(|msg| {
            ApiError::bad_request("invalid_output", format!("outputs[{i}].url: {msg}"))
        })?;
    }
    // A room that names no outputs pushes to the built-in origin, under its own id.
    let origin = app.origin.as_ref().filter(|_| settings.outputs.is_empty());
    let room = app.rooms.create_with(|id| {
        if let Some(origin) = origin {
            settings.outputs.push(OutputSpec {
                output_id: ORIGIN_OUTPUT_ID.to_string(),
                url: origin.register(id),
                // On loopback by design: the destination policy is for users' URLs.
                internal: true,
            });
        }
        settings
    });
    let room = room.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_rooms",
            e.to_string(),
        )
    })?;
    let id = &room.id;
    if let Some(nodes) = &app.nodes {
        // Owned before anyone hears of it: no other node adopts it as an orphan.
        nodes.created(id).await;
    }
    let links = room_links(&app, &room, origin.is_some());
    let created = CreatedRoom {
        room_id: id.clone(),
        host_token: room.tokens.host.expose().to_string(),
        guest_token: room.tokens.guest.expose().to_string(),
        host_url: links.host_url,
        guest_url: links.guest_url.unwrap_or_default(),
        watch_url: links.watch_url,
        whip_url: links.whip_url,
        flv_url: links.flv_url,
        hls_url: links.hls_url,
        rtmp_play_url: links.rtmp_play_url,
    };
    tracing::info!(room = %id, "room created");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/v1/rooms/{id}"))],
        Json(created),
    )
        .into_response())
}

/// What a create request asks for, checked against the server's limits (pure; the fuzz harness
/// runs it too).
pub(crate) fn room_settings(
    config: &crate::config::Config,
    request: CreateRoom,
) -> Result<RoomSettings, ApiError> {
    let limits = &config.limits;
    if request.outputs.len() > limits.max_outputs_per_room {
        return Err(ApiError::bad_request(
            "too_many_outputs",
            format!(
                "at most {} outputs per room (got {})",
                limits.max_outputs_per_room,
                request.outputs.len()
            ),
        ));
    }
    let outputs = request
        .outputs
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            validate_output_url(&o.url).map_err(|msg| {
                ApiError::bad_request("invalid_output", format!("outputs[{i}].url: {msg}"))
            })?;
            Ok(OutputSpec::new(format!("out{i}"), o.url))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let base = match request.preset.as_deref() {
        Some(name) => Preset::parse(name)
            .map_err(|e| ApiError::bad_request("invalid_preset", format!("preset: {e}")))?
            .video(),
        None => config.mixer.video,
    };
    let video = merge_video(base, request.video.unwrap_or_default());
    validate_video(&video, "video")
        .map_err(|e| ApiError::bad_request("invalid_video", e.to_string()))?;
    let name = request.name.unwrap_or_default();
    if name.chars().count() > 200 {
        return Err(ApiError::bad_request(
            "invalid_name",
            "name must be at most 200 characters",
        ));
    }
    let mut look = request.look.unwrap_or_default();
    if let Some(labels) = request.labels {
        look.labels = labels;
    }
    look.validate()
        .map_err(|e| ApiError::bad_request("invalid_look", e))?;
    Ok(RoomSettings {
        name,
        video,
        outputs,
        destinations: config.destination_policy(),
        max_participants: limits.max_participants_per_room,
        max_outputs: limits.max_outputs_per_room,
        max_subscriptions: limits.max_subscriptions_per_room,
        layout: LayoutSpec::default(),
        look,
        record: request.record,
    })
}

fn merge_video(defaults: VideoSpec, request: VideoRequest) -> VideoSpec {
    VideoSpec {
        width: request.width.unwrap_or(defaults.width),
        height: request.height.unwrap_or(defaults.height),
        fps: request.fps.unwrap_or(defaults.fps),
        bitrate_kbps: request.bitrate_kbps.unwrap_or(defaults.bitrate_kbps),
    }
}

/// How long resolving an output's host may take before the request goes on without it.
const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Resolves an (already validated) output URL's host and applies the server's destination
/// policy (`access::destinations`). Where private destinations are refused, a host that does
/// not resolve is refused too: it could resolve to anything by the time the mixer connects.
async fn check_destination(app: &AppState, raw: &str) -> Result<(), String> {
    use std::net::IpAddr;
    let policy = app.config.destination_policy();
    if policy.allow_private {
        return Ok(());
    }
    let url = url::Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
    let default_port = if url.scheme() == "rtmps" { 443 } else { 1935 };
    let port = url.port().unwrap_or(default_port);
    let (name, addresses): (String, Vec<IpAddr>) = match url.host() {
        Some(url::Host::Ipv4(ip)) => (ip.to_string(), vec![ip.into()]),
        Some(url::Host::Ipv6(ip)) => (ip.to_string(), vec![ip.into()]),
        Some(url::Host::Domain(domain)) => {
            let resolved =
                tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((domain, port)))
                    .await;
            let addresses: Vec<IpAddr> = match resolved {
                Ok(Ok(found)) => found.map(|a| a.ip()).collect(),
                _ => Vec::new(),
            };
            if addresses.is_empty() && !policy.host_allowed(domain) {
                return Err(format!(
                    "the host does not resolve (within {} s); give a name that resolves or an address",
                    RESOLVE_TIMEOUT.as_secs()
                ));
            }
            (domain.to_string(), addresses)
        }
        None => return Err("the URL has no host".into()),
    };
    policy.check(&name, &addresses)
}

/// An RTMP push URL, `rtmp(s)://host[:port]/app/stream-key`, or an SRT one,
/// `srt://host:port?streamid=…&passphrase=…&latency=…` (see `costream_mixer::srt_url`). The
/// message never repeats the URL, since it holds the stream key or passphrase.
pub fn validate_output_url(raw: &str) -> Result<(), String> {
    let url = url::Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "rtmp" | "rtmps" | "srt") {
        return Err(format!(
            "scheme {:?} is not supported; use rtmp://, rtmps:// or srt://",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    // Plain names only: the URL parser keeps `%2E` and non-ASCII in a host as written, while
    // GStreamer's decodes them, so `127%2E0%2E0%2E1` would pass the destination check as a
    // name and connect to 127.0.0.1.
    if let Some(url::Host::Domain(name)) = url.host() {
        let plain = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
        if !name.chars().all(plain) {
            return Err(
                "the host must be a plain name (letters, digits, '-', '.') or an IP address".into(),
            );
        }
    }
    if url.scheme() == "srt" {
        return costream_mixer::srt_url::parse_srt_url(raw)
            .map(|_| ())
            .map_err(|e| e.to_string());
    }
    let segments: Vec<_> = url
        .path_segments()
        .map(|s| s.filter(|p| !p.is_empty()).collect())
        .unwrap_or_default();
    if segments.len() < 2 {
        return Err("expected rtmp://host/<app>/<stream key>".into());
    }
    Ok(())
}

pub(super) async fn find_room(
    app: &AppState,
    room_id: &str,
) -> Result<std::sync::Arc<RoomHandle>, ApiError> {
    app.rooms
        .get(room_id)
        .ok_or_else(|| ApiError::room_not_found(room_id))
}

/// The room, if the request carries its host token (401/403 otherwise).
pub(super) async fn host_room(
    app: &AppState,
    room_id: &str,
    headers: &HeaderMap,
) -> Result<std::sync::Arc<RoomHandle>, ApiError> {
    let room = find_room(app, room_id).await?;
    auth::require_host(headers, &room)?;
    Ok(room)
}

/// `GET /api/v1/rooms/{id}`: the room status; outputs' URLs and reasons and the mixer's
/// details only with the host token.
#[utoipa::path(
    get,
    path = "/api/v1/rooms/{room_id}",
    tag = "rooms",
    summary = "Room status",
    params(("room_id" = String, Path, description = "The room id")),
    responses(
        (status = 200, description = "The room status", body = super::openapi::wire::RoomStatus),
        (status = 404, description = "`room_not_found`", body = ErrorBody),
        (status = 410, description = "`room_ended`: the room ended while answering", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub async fn get(
    State(app): State<AppState>,
    Path(room_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let room = find_room(&app, &room_id).await?;
    let status = room.status().await?;
    // Public view: outputs' URLs and connection errors and the mixer's details only for the
    // host (an output's error would otherwise tell anyone what answers at an address).
    // The built-in origin's play links stay: viewers may know where to watch.
    let is_host = auth::role(&headers, &room).is_ok_and(|r| r == Role::Host);
    let json = status_json(&app, &status);
    let json = if is_host {
        json
    } else {
        super::events::without_operator_details(json)
    };
    Ok(Json(json).into_response())
}

fn status_response(app: &AppState, status: RoomStatus) -> Response {
    Json(status_json(app, &status)).into_response()
}

/// The room status, plus what the built-in origin knows when the room uses it: the origin
/// output is flagged `"origin": true`, and `origin` carries the viewer links and counters.
pub(super) fn status_json(app: &AppState, status: &RoomStatus) -> serde_json::Value {
    let mut json = serde_json::to_value(status).unwrap_or_default();
    // When the room closes if nobody comes (back): `[rooms]` timeouts and the countdown.
    let lifetime = app.rooms.lifetime();
    let closes_in = app.rooms.closes_at(&status.room_id).map(|at| {
        let left = at.saturating_duration_since(std::time::Instant::now());
        (left.as_secs_f64() * 10.0).round() / 10.0
    });
    json["lifetime"] = serde_json::json!({
        "empty_timeout_secs": lifetime.empty_timeout.as_secs(),
        "departure_timeout_secs": lifetime.departure_timeout.as_secs(),
        "closes_in_secs": closes_in,
    });
    let uses_origin = status
        .outputs
        .iter()
        .any(|o| o.output_id == ORIGIN_OUTPUT_ID);
    if let (true, Some(origin)) = (uses_origin, &app.origin) {
        if let Some(outputs) = json["outputs"].as_array_mut() {
            for output in outputs {
                let is_origin = output["output_id"] == ORIGIN_OUTPUT_ID;
                output["origin"] = is_origin.into();
            }
        }
        let id = &status.room_id;
        let stats = origin.stats(id).unwrap_or_default();
        json["origin"] = serde_json::json!({
            "flv_url": format!("{}/live/{id}.flv", app.config.public_url()),
            "hls_url": app.config.origin.hls
                .then(|| format!("{}/live/{id}/index.m3u8", app.config.public_url())),
            "rtmp_play_url": origin.play_url(id),
            "live": stats.live,
            "viewers": stats.viewers,
            "dropped_tags": stats.dropped_tags,
        });
    }
    // Viewers asking to join (names: the host's only; see `events::without_operator_details`).
    if let Some(room) = app.rooms.get(&status.room_id) {
        let mut requests = room.join_requests.lock().expect("join requests lock");
        let settings = requests.settings();
        json["join_requests"] = serde_json::json!({
            "enabled": settings.enabled,
            "max_guests": settings.max_guests,
            "pending": requests.pending_list(std::time::Instant::now()),
        });
    }
    json
}

#[utoipa::path(
    post,
    path = "/api/v1/rooms/{room_id}/live",
    tag = "rooms",
    summary = "Go live",
    description = "Starts the room's mixer and every output (idempotent).",
    params(("room_id" = String, Path, description = "The room id")),
    responses(
        (status = 200, description = "The room status", body = super::openapi::wire::RoomStatus),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the host token", body = ErrorBody),
        (status = 404, description = "`room_not_found`", body = ErrorBody),
        (status = 409, description = "`no_outputs`: nothing to push to", body = ErrorBody),
        (status = 410, description = "`room_ended`", body = ErrorBody),
        (status = 503, description = "`over_capacity` (with `Retry-After`), `draining`, `coordinator_unavailable` (fleet, with `Retry-After`)", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds"))),
    ),
    security(("bearer" = [])),
)]
pub async fn go_live(
    State(app): State<AppState>,
    Path(room_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let room = host_room(&app, &room_id, &headers).await?;
    let status = room.go_live().await?.inspect_err(|e| {
        if matches!(
            e,
            GoLiveError::Refused(Refusal::Full { .. } | Refusal::FleetFull { .. })
        ) {
            super::metrics::count_admission_refusal();
        }
    })?;
    tracing::info!(room = %room_id, "going live");
    Ok(status_response(&app, status))
}

#[utoipa::path(
    delete,
    path = "/api/v1/rooms/{room_id}/live",
    tag = "rooms",
    summary = "Stop mixing and pushing",
    description = "Participants stay.",
    params(("room_id" = String, Path, description = "The room id")),
    responses(
        (status = 200, description = "The room status", body = super::openapi::wire::RoomStatus),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the host token", body = ErrorBody),
        (status = 404, description = "`room_not_found`", body = ErrorBody),
        (status = 410, description = "`room_ended`", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn stop_live(
    State(app): State<AppState>,
    Path(room_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let room = host_room(&app, &room_id, &headers).await?;
    let status = room.stop_live().await?;
    tracing::info!(room = %room_id, "stopped live");
    Ok(status_response(&app, status))
}

/// Every link of a room, for the host (the studio page shows the invite link from here, so
/// the host token alone is enough to run the room from any browser).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RoomLinks {
    pub host_url: String,
    /// The shared guest link; absent once the host revoked it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_url: Option<String>,
    /// The host revoked the shared guest link (`DELETE …/links/guest`): only personal
    /// invites admit guests.
    pub guest_link_revoked: bool,
    pub watch_url: String,
    pub whip_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flv_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hls_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtmp_play_url: Option<String>,
}

fn room_links(app: &AppState, room: &RoomHandle, uses_origin: bool) -> RoomLinks {
    let base = app.config.public_url();
    let id = &room.id;
    let origin = app.origin.as_ref().filter(|_| uses_origin);
    // Freshly minted: the tokens handed out at creation expire (auth.token_ttl_secs), links
    // asked for later must not.
    let (host, guest) = room.tokens.fresh();
    let guest_link_revoked = room
        .guests
        .lock()
        .expect("guest list lock")
        .shared_link_revoked();
    RoomLinks {
        host_url: format!("{base}/host/{id}#token={host}"),
        guest_url: (!guest_link_revoked).then(|| format!("{base}/join/{id}#token={guest}")),
        guest_link_revoked,
        watch_url: format!("{base}/watch/{id}"),
        whip_url: format!("{base}/whip/{id}"),
        flv_url: origin.map(|_| format!("{base}/live/{id}.flv")),
        hls_url: origin
            .filter(|_| app.config.origin.hls)
            .map(|_| format!("{base}/live/{id}/index.m3u8")),
        rtmp_play_url: origin.map(|o| o.play_url(id)),
    }
}

/// `GET /api/v1/rooms/{id}/links` (host).
#[utoipa::path(
    get,
    path = "/api/v1/rooms/{room_id}/links",
    tag = "access",
    summary = "The room's links, with fresh tokens",
    params(("room_id" = String, Path, description = "The room id")),
    responses(
        (status = 200, description = "The links", body = RoomLinks),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the host token", body = ErrorBody),
        (status = 404, description = "`room_not_found`", body = ErrorBody),
        (status = 410, description = "`room_ended`", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn links(
    State(app): State<AppState>,
    Path(room_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let room = host_room(&app, &room_id, &headers).await?;
    Ok(Json(room_links_of(&app, &room).await?).into_response())
}

/// A live room's links (the origin's only while the room pushes to it).
pub(super) async fn room_links_of(
    app: &AppState,
    room: &RoomHandle,
) -> Result<RoomLinks, ApiError> {
    let status = room.status().await?;
    let uses_origin = status
        .outputs
        .iter()
        .any(|o| o.output_id == ORIGIN_OUTPUT_ID);
    Ok(room_links(app, room, uses_origin))
}

/// `PUT /api/v1/rooms/{id}/layout`: switches the mix's layout, live if the room is live.
#[utoipa::path(
    put,
    path = "/api/v1/rooms/{room_id}/layout",
    tag = "program",
    summary = "Set the layout",
    description = "Applied live between two output frames.",
    params(("room_id" = String, Path, description = "The room id")),
    request_body(content = super::openapi::wire::Layout, content_type = "application/json"),
    responses(
        (status = 200, description = "The room status", body = super::openapi::wire::RoomStatus),
        (status = 400, description = "`invalid_layout` (names the field: unknown participant, tile past the canvas, empty body), `invalid_json`, `unreadable_body`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the host token", body = ErrorBody),
        (status = 404, description = "`room_not_found`", body = ErrorBody),
        (status = 408, description = "`body_timeout`", body = ErrorBody),
        (status = 410, description = "`room_ended`", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn set_layout(
    State(app): State<AppState>,
    Path(room_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let room = host_room(&app, &room_id, &headers).await?;
    let bytes = read_limited(&headers, body, app.config.limits.max_body_bytes).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "invalid_layout",
            r#"send a layout, e.g. {"type": "speaker"}; types: grid, speaker, pip, custom"#,
        ));
    }
    let layout: LayoutSpec =
        parse_json_or_default::<Option<LayoutSpec>>(&headers, &bytes)?.unwrap_or_default();
    let status = room.set_layout(layout).await??;
    tracing::info!(room = %room_id, layout = ?status.layout, "layout changed");
    Ok(status_response(&app, status))
}

/// `PUT /api/v1/rooms/{id}/look`: background colour, name labels, logo, slate title; live if
/// the room is live. Fields left out take their defaults (the body is the whole look).
#[utoipa::path(
    put,
    path = "/api/v1/rooms/{room_id}/look",
    tag = "program",
    summary = "Set the room's whole look",
    description = "Omitted fields take their defaults, so `{}` resets it; applied live, kept across mixer restarts.",
    params(("room_id" = String, Path, description = "The room id")),
    request_body(content = Option<super::openapi::wire::Look>, content_type = "application/json"),
    responses(
        (status = 200, description = "The room status", body = super::openapi::wire::RoomStatus),
        (status = 400, description = "`invalid_look` (`look.background` not a colour, `look.logo` not an inline PNG or too large), `invalid_json`, `unreadable_body`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the host token", body = ErrorBody),
        (status = 404, description = "`room_not_found`", body = ErrorBody),
        (status = 408, description = "`body_timeout`", body = ErrorBody),
        (status = 410, description = "`room_ended`", body = ErrorBody),
        (status = 413, description = "`body_too_large`: over 1 MiB (or `limits.max_body_bytes` if larger)", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn set_look(
    State(app): State<AppState>,
    Path(room_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let room = host_room(&app, &room_id, &headers).await?;
    // Room for the largest logo the look accepts, whatever the general body limit, and then
    // some: a logo a few times too big gets a 400 naming `look.logo` and the limit (something
    // to act on), not a bare 413. Far past that it is not a logo, and 413 it is.
    let limit = app
        .config
        .limits
        .max_body_bytes
        .max(4 * costream_mixer::looks::MAX_LOGO_URI_LEN);
    let bytes = read_limited(&headers, body, limit).await?;
    let look: Look = parse_json_or_default::<Option<Look>>(&headers, &bytes)?.unwrap_or_default();
    let status = room.set_look(look).await??;
    tracing::info!(room = %room_id, look = ?status.look, "look changed");
    Ok(status_response(&app, status))
}

/// Body of `PUT /api/v1/rooms/{id}/participants/{pid}/audio`; omitted fields keep their value.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AudioRequest {
    /// Linear gain 0–4 (1 = as sent).
    #[schema(minimum = 0.0, maximum = 4.0)]
    pub gain: Option<f64>,
    pub muted: Option<bool>,
}

/// `PUT /api/v1/rooms/{id}/participants/{pid}/audio`: the host's mixing desk for one participant.
#[utoipa::path(
    put,
    path = "/api/v1/rooms/{room_id}/participants/{participant_id}/audio",
    tag = "program",
    summary = "A participant's gain and mute in the program",
    params(("room_id" = String, Path, description = "The room id"), ("participant_id" = String, Path, description = "A participant id from the room status")),
    request_body(content = Option<AudioRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "The room status", body = super::openapi::wire::RoomStatus),
        (status = 400, description = "`invalid_audio` (gain outside 0–4), `invalid_json`, `unreadable_body`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the host token", body = ErrorBody),
        (status = 404, description = "`room_not_found`, `participant_not_found`", body = ErrorBody),
        (status = 408, description = "`body_timeout`", body = ErrorBody),
        (status = 410, description = "`room_ended`", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn set_audio(
    State(app): State<AppState>,
    Path((room_id, participant_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let room = host_room(&app, &room_id, &headers).await?;
    let bytes = read_limited(&headers, body, app.config.limits.max_body_bytes).await?;
    let request: AudioRequest = parse_json_or_default(&headers, &bytes)?;
    let status = room
        .set_audio(&participant_id, request.gain, request.muted)
        .await??;
    tracing::info!(room = %room_id, participant = %participant_id, gain = ?request.gain, muted = ?request.muted, "participant audio");
    Ok(status_response(&app, status))
}

/// `POST /api/v1/rooms/{id}/outputs`: one more RTMP destination. Offline it is stored for the
/// next go-live; live, the mixer starts pushing to it at once (the other outputs untouched).
#[utoipa::path(
    post,
    path = "/api/v1/rooms/{room_id}/outputs",
    tag = "outputs",
    summary = "Add an RTMP destination",
    description = "Offline it is stored for the next go-live; live, the mixer starts pushing to it at once.",
    params(("room_id" = String, Path, description = "The room id")),
    request_body(content = OutputRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The new output (stream key shown as `***`)", body = super::openapi::wire::OutputStatus,
            headers(("Location" = String, description = "`/api/v1/rooms/{room_id}/outputs/{output_id}`"))),
        (status = 400, description = "`invalid_output` (bad or refused destination, or no body), `invalid_json`, `unreadable_body`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the host token", body = ErrorBody),
        (status = 404, description = "`room_not_found`", body = ErrorBody),
        (status = 408, description = "`body_timeout`", body = ErrorBody),
        (status = 409, description = "`too_many_outputs` (`limits.max_outputs_per_room`), `duplicate_output`", body = ErrorBody),
        (status = 410, description = "`room_ended`", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn add_output(
    State(app): State<AppState>,
    Path(room_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let room = host_room(&app, &room_id, &headers).await?;
    let bytes = read_limited(&headers, body, app.config.limits.max_body_bytes).await?;
    let request: Option<OutputRequest> = parse_json_or_default(&headers, &bytes)?;
    let Some(request) = request else {
        return Err(ApiError::bad_request(
            "invalid_output",
            r#"send {"url": "rtmp://host/app/stream-key"}"#,
        ));
    };
    validate_output_url(&request.url)
        .map_err(|msg| ApiError::bad_request("invalid_output", format!("url: {msg}")))?;
    check_destination(&app, &request.url)
        .await
        .map_err(|msg| ApiError::bad_request("invalid_output", format!("url: {msg}")))?;
    let output = room.add_output(request.url).await??;
    tracing::info!(room = %room_id, output = %output.output_id, url = %output.url, "output added");
    Ok((
        StatusCode::CREATED,
        [(
            header::LOCATION,
            format!("/api/v1/rooms/{room_id}/outputs/{}", output.output_id),
        )],
        Json(output),
    )
        .into_response())
}

/// `DELETE /api/v1/rooms/{id}/outputs/{output_id}`: stop pushing to one destination.
#[utoipa::path(
    delete,
    path = "/api/v1/rooms/{room_id}/outputs/{output_id}",
    tag = "outputs",
    summary = "Stop pushing to one destination",
    params(("room_id" = String, Path, description = "The room id"), ("output_id" = String, Path, description = "`origin` or `out<N>`")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the host token", body = ErrorBody),
        (status = 404, description = "`room_not_found`, `output_not_found`", body = ErrorBody),
        (status = 410, description = "`room_ended`", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn remove_output(
    State(app): State<AppState>,
    Path((room_id, output_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let room = host_room(&app, &room_id, &headers).await?;
    room.remove_output(&output_id).await??;
    tracing::info!(room = %room_id, output = %output_id, "output removed");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(
    delete,
    path = "/api/v1/rooms/{room_id}",
    tag = "rooms",
    summary = "End the room",
    description = "Stops the mixer and disconnects everyone.",
    params(("room_id" = String, Path, description = "The room id")),
    responses(
        (status = 204, description = "Ended"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the host token", body = ErrorBody),
        (status = 404, description = "`room_not_found`", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn end(
    State(app): State<AppState>,
    Path(room_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    host_room(&app, &room_id, &headers).await?;
    app.rooms.end(&room_id);
    // An ended room must not come back after a restart, however soon that happens.
    app.rooms.store_flushed().await;
    if let Some(origin) = &app.origin {
        // Refuses the mixer's last packets and ends every viewer's stream.
        origin.unregister(&room_id);
    }
    tracing::info!(room = %room_id, "room ended by host");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::validate_output_url;

    #[test]
    fn output_urls() {
        assert!(validate_output_url("rtmp://a.example/live/key").is_ok());
        assert!(validate_output_url("rtmps://a.example:443/app/key?x=1").is_ok());
        let err = validate_output_url("http://a.example/live/key").unwrap_err();
        assert!(err.contains("rtmp://"), "{err}");
        assert!(validate_output_url("rtmp://a.example/live").is_err());
        assert!(validate_output_url("rtmp:///live/key").is_err());
        assert!(validate_output_url("srt://a.example:9000?streamid=live/k&latency=200").is_ok());
        let err = validate_output_url("srt://a.example:9000?passphrase=SECRET").unwrap_err();
        assert!(err.contains("10 to 79") && !err.contains("SECRET"), "{err}");
        assert!(
            validate_output_url("srt://a.example?streamid=k").is_err(),
            "no port"
        );
        assert!(validate_output_url("srt://127%2E0%2E0%2E1:9000").is_err());
        let err = validate_output_url("garbage secretkey").unwrap_err();
        assert!(!err.contains("secretkey"), "{err}");
    }
}
