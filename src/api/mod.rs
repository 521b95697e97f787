//! The HTTP edge: JSON API, WHIP, pages. `router(state)` is a pure factory so tests can drive
//! it with `oneshot` without a socket.

mod auth;
mod body;
pub mod error;
mod events;
mod metrics;
mod pages;
mod pool;
mod rate_limit;
mod rooms;
mod sdp;
mod whep;
mod whip;

use std::sync::Arc;

use axum::http::{header, Method};
use axum::routing::{get, post};
use axum::Router;
use costream_ingest::IngestEngine;
use tokio_util::sync::CancellationToken;
use tower_http::cors::CorsLayer;
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
}

pub fn router(state: AppState) -> Router {
    let limits = &state.config.limits;
    let rooms_quota =
        rate_limit::IpLimiter::per_minute("rooms created", limits.room_creations_per_minute_per_ip);
    let sessions_quota = rate_limit::IpLimiter::per_minute(
        "WebRTC sessions opened",
        limits.sessions_per_minute_per_ip,
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
            "/api/v1/rooms/{room_id}/participants/{participant_id}",
            axum::routing::delete(rooms::remove_participant),
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
                .layer(media_cors),
        )
        .fallback(not_found)
        // Spans name the path only: a WHIP session's Location carries its key in the query.
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
                tracing::debug_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path(),
                )
            }),
        )
        .with_state(state)
}

async fn live_flv(
    axum::extract::State(app): axum::extract::State<AppState>,
    axum::extract::Path(file): axum::extract::Path<String>,
) -> Result<axum::response::Response, error::ApiError> {
    let origin = app.origin.as_ref().ok_or_else(|| {
        error::ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "origin_disabled",
            "the built-in origin is disabled on this server (origin.enabled = false)",
        )
    })?;
    crate::origin::http_flv::respond(origin, &file)
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
