//! The HTTP edge: JSON API, WHIP, pages. `router(state)` is a pure factory so tests can drive
//! it with `oneshot` without a socket.

mod auth;
pub(crate) mod body;
pub mod error;
mod events;
mod guests;
mod join_requests;
pub(crate) mod metrics;
pub(crate) mod openapi;
mod pages;
mod pool;
mod rate_limit;
mod recordings;
pub(crate) mod rooms;
pub(crate) mod sdp;
mod whep;
mod whip;

use std::sync::Arc;

use axum::http::{header, Method};
use axum::routing::{get, post};
use axum::Router;
use costream_ingest::IngestEngine;
use tokio_util::sync::CancellationToken;
use tower_http::cors::CorsLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::origin::Origin;
use crate::room::Rooms;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub rooms: Arc<Rooms>,
    pub ingest: IngestEngine,
    /// The built-in origin; `None` when disabled (`origin.enabled = false`).
    pub origin: Option<Origin>,
    /// Cancelled when the server starts shutting down: endless responses (event streams) end
    /// so the HTTP server can drain.
    pub shutdown: CancellationToken,
    /// This node among a fleet's serve nodes (`None`: the only one).
    pub nodes: Option<Arc<crate::nodes::Nodes>>,
}

pub fn router(state: AppState) -> Router {
    let limits = &state.config.limits;
    let rooms_quota =
        rate_limit::IpLimiter::per_minute("rooms created", limits.room_creations_per_minute_per_ip);
    let sessions_quota = rate_limit::IpLimiter::per_minute(
        "WebRTC sessions opened",
        limits.sessions_per_minute_per_ip,
    );
    let invites_quota =
        rate_limit::IpLimiter::per_minute("invites created", limits.invites_per_minute_per_ip);
    let join_requests_quota = rate_limit::IpLimiter::per_minute(
        "requests to join",
        limits.join_requests_per_minute_per_ip,
    );
    let limited = |quota: &rate_limit::IpLimiter| {
        axum::middleware::from_fn_with_state(quota.clone(), rate_limit::limit)
    };

    // WHIP/WHEP clients and players on other sites authenticate with bearer tokens (or, for
    // HTTP-FLV, need none), not cookies, so any origin may call them; Location must be readable
    // for DELETE. PATCH is not offered: trickle ICE is not supported, and clients that see it
    // allowed try it. Everything else (the API, event streams) answers cross-origin requests
    // only from `[server] cors_origins`: a web page elsewhere cannot drive a costream on its
    // visitor's network.
    let methods = [
        Method::GET,
        Method::POST,
        Method::DELETE,
        Method::PUT,
        Method::OPTIONS,
    ];
    let media_cors = CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods(methods.clone())
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::LOCATION]);
    let api_cors = CorsLayer::new()
        .allow_origin(tower_http::cors::AllowOrigin::list(
            state.config.server.cors_origin_values(),
        ))
        .allow_methods(methods)
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::LOCATION]);
    Router::new()
        .route("/", get(pages::index))
        .route("/host/{room_id}", get(pages::host))
        .route("/join/{room_id}", get(pages::join))
        .route("/watch/{room_id}", get(pages::watch))
        .route("/assets/{*path}", get(pages::asset))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(pool::readyz))
        .route("/metrics", get(metrics::render))
        .route("/api/v1/pool", get(pool::view))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route(
            "/api/v1/rooms",
            post(rooms::create).layer(limited(&rooms_quota)),
        )
        .route(
            "/api/v1/rooms/{room_id}",
            get(rooms::get).delete(rooms::end),
        )
        .route(
            "/api/v1/rooms/{room_id}/live",
            post(rooms::go_live).delete(rooms::stop_live),
        )
        .route("/api/v1/rooms/{room_id}/events", get(events::stream_events))
        .route("/api/v1/rooms/{room_id}/links", get(rooms::links))
        .route(
            "/api/v1/rooms/{room_id}/links/guest",
            axum::routing::delete(guests::revoke_shared_link),
        )
        .route(
            "/api/v1/rooms/{room_id}/invites",
            post(guests::create_invite).layer(limited(&invites_quota)),
        )
        .route(
            "/api/v1/rooms/{room_id}/participants/{participant_id}",
            axum::routing::delete(guests::remove_participant),
        )
        .route(
            "/api/v1/rooms/{room_id}/layout",
            axum::routing::put(rooms::set_layout),
        )
        .route(
            "/api/v1/rooms/{room_id}/look",
            axum::routing::put(rooms::set_look),
        )
        .route(
            "/api/v1/rooms/{room_id}/participants/{participant_id}/audio",
            axum::routing::put(rooms::set_audio),
        )
        .route(
            "/api/v1/rooms/{room_id}/requests",
            post(join_requests::ask)
                .layer(limited(&join_requests_quota))
                .get(join_requests::list)
                .put(join_requests::set_settings),
        )
        .route(
            "/api/v1/rooms/{room_id}/requests/{request_id}",
            axum::routing::delete(join_requests::withdraw),
        )
        .route(
            "/api/v1/rooms/{room_id}/requests/{request_id}/events",
            get(join_requests::follow),
        )
        .route(
            "/api/v1/rooms/{room_id}/requests/{request_id}/accept",
            post(join_requests::accept),
        )
        .route(
            "/api/v1/rooms/{room_id}/requests/{request_id}/decline",
            post(join_requests::decline),
        )
        .route(
            "/api/v1/rooms/{room_id}/recordings",
            post(recordings::start).get(recordings::list),
        )
        // A static segment wins over the parameter: `active` is never a recording id.
        .route(
            "/api/v1/rooms/{room_id}/recordings/active",
            axum::routing::delete(recordings::stop),
        )
        .route(
            "/api/v1/rooms/{room_id}/recordings/{recording_id}",
            get(recordings::download).delete(recordings::delete),
        )
        .route(
            "/api/v1/rooms/{room_id}/recordings/{recording_id}/link",
            post(recordings::link),
        )
        .route("/api/v1/rooms/{room_id}/outputs", post(rooms::add_output))
        .route(
            "/api/v1/rooms/{room_id}/outputs/{output_id}",
            axum::routing::delete(rooms::remove_output),
        )
        .layer(api_cors)
        .merge(
            Router::new()
                .route(
                    "/whip/{room_id}",
                    post(whip::publish)
                        .layer(limited(&sessions_quota))
                        .options(whip::options),
                )
                .route(
                    "/whip/{room_id}/{participant_id}",
                    axum::routing::delete(whip::leave)
                        .patch(whip::trickle_not_supported)
                        .options(whip::options),
                )
                // SFU return path (WHEP-style); OPTIONS and PATCH behave as for WHIP.
                .route(
                    "/whep/{room_id}/{participant_id}",
                    post(whep::subscribe)
                        .layer(limited(&sessions_quota))
                        .options(whip::options),
                )
                .route(
                    "/whep/{room_id}/{participant_id}/{subscription_id}",
                    axum::routing::delete(whep::unsubscribe)
                        .patch(whip::trickle_not_supported)
                        .options(whip::options),
                )
                // HTTP-FLV. axum matches whole segments, so `{file}` is `<room>.flv`.
                .route("/live/{file}", get(live_flv))
                .route("/live/{room_id}/{file}", get(live_hls))
                .layer(media_cors)
                .layer(axum::middleware::from_fn(whip::options_as_whip)),
        )
        // A route layer: it runs after routing, when the route template is known. Unknown
        // paths (the fallback) are not counted: their paths are whatever clients made up.
        .route_layer(axum::middleware::from_fn(metrics::track))
        .fallback(not_found)
        // A room another serve node owns is served there, whatever the path (and new rooms go
        // to the least loaded node): before any limit or handler of this node.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::nodes::forward::forward,
        ))
        // Every answer carries its request's `x-request-id` (the client's, or a new UUID), and
        // every log line written while handling it names the id: a user's error report leads
        // to the server's lines.
        .layer(PropagateRequestIdLayer::x_request_id())
        // Spans name the path only: a WHIP session's Location carries its key in the query.
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
                let request_id = request
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .map(|id| id.chars().take(64).collect::<String>())
                    .unwrap_or_default();
                tracing::info_span!(
                    "request",
                    request_id = %request_id,
                    method = %request.method(),
                    path = %request.uri().path(),
                )
            }),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// `GET /live/{room_id}.flv`.
#[utoipa::path(
    get,
    path = "/live/{file}",
    tag = "origin",
    summary = "HTTP-FLV of a room on the built-in origin",
    description = "An endless FLV: metadata, sequence headers, the GOP since the last keyframe, then live; ends when the room ends.",
    params(("file" = String, Path, description = "`{room_id}.flv`")),
    responses(
        (status = 200, description = "The stream", body = String, content_type = "video/x-flv"),
        (status = 404, description = "`stream_not_found`, `stream_not_live`, `origin_disabled`", body = error::ErrorBody),
        (status = 503, description = "`too_many_viewers` (`origin.max_viewers_per_stream`)", body = error::ErrorBody),
    ),
)]
async fn live_flv(
    axum::extract::State(app): axum::extract::State<AppState>,
    axum::extract::Path(file): axum::extract::Path<String>,
) -> Result<axum::response::Response, error::ApiError> {
    let origin = builtin_origin(&app)?;
    crate::origin::http_flv::respond(origin, &file)
}

/// `GET /live/{room_id}/index.m3u8` and the files it names.
#[utoipa::path(
    get,
    path = "/live/{room_id}/{file}",
    tag = "origin",
    summary = "HLS / LL-HLS of a room on the built-in origin",
    description = "`index.m3u8` is an LL-HLS media playlist (RFC 8216bis: parts of at most `origin.hls_part_ms`, blocking reload with `_HLS_msn` / `_HLS_part`, a preload hint); it names `init-N.mp4`, `seg-N.m4s` and `part-N-I.m4s` (CMAF fMP4) in the same directory. Players without LL-HLS use the whole segments. Kept in memory for about `origin.hls_segments` × 2 s.",
    params(
        ("room_id" = String, Path, description = "The room"),
        ("file" = String, Path, description = "`index.m3u8`, `init-N.mp4`, `seg-N.m4s` or `part-N-I.m4s`"),
        ("_HLS_msn" = Option<u64>, Query, description = "Blocking reload: answer once segment N (or its part `_HLS_part`) exists"),
        ("_HLS_part" = Option<u64>, Query, description = "Blocking reload: the part index within `_HLS_msn`"),
    ),
    responses(
        (status = 200, description = "The playlist (`application/vnd.apple.mpegurl`) or media (`video/mp4`)", body = String),
        (status = 400, description = "`bad_hls_query`, `hls_msn_too_far_ahead`", body = error::ErrorBody),
        (status = 404, description = "`stream_not_found`, `stream_not_live` (the publisher has been away 10 s: the broadcast stopped), `hls_file_not_found` (left the window, or never written), `origin_disabled`", body = error::ErrorBody),
        (status = 503, description = "`hls_not_ready`: a blocking reload saw nothing new in three target durations", body = error::ErrorBody),
    ),
)]
async fn live_hls(
    axum::extract::State(app): axum::extract::State<AppState>,
    axum::extract::Path((room_id, file)): axum::extract::Path<(String, String)>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<axum::response::Response, error::ApiError> {
    let origin = builtin_origin(&app)?;
    crate::origin::hls::http::respond(origin, &room_id, &file, query.as_deref()).await
}

/// The built-in origin, or `404 origin_disabled`.
fn builtin_origin(app: &AppState) -> Result<&crate::origin::Origin, error::ApiError> {
    app.origin.as_ref().ok_or_else(|| {
        error::ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "origin_disabled",
            "the built-in origin is disabled on this server (origin.enabled = false)",
        )
    })
}

async fn not_found() -> error::ApiError {
    error::ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see the README for the API",
    )
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_auth;
#[cfg(test)]
mod tests_bounds;
#[cfg(test)]
mod tests_live;
