//! `GET /api/v1/openapi.json`: the API described as OpenAPI 3.1, generated from the handlers'
//! own `#[utoipa::path]` annotations and the request and response types' `ToSchema` derives,
//! so the document changes with the code. Shapes whose Rust types live outside `api` (the
//! mixer's control types, the room and pool views) are described in [`wire`]; the tests check
//! real answers against the document and that every route of the router has an operation.
//!
//! The pages (`/`, `/host/…`, `/join/…`, `/watch/…`) and `/assets/…` are not in the document:
//! they are the web UI, not the API.

pub(crate) mod wire;

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;

use super::error::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "costream",
        description = "Live-stream mixing server. Errors are always JSON `{\"error\": \"<code>\", \"message\": \"<what to do>\"}`; each response lists its codes. Auth is `Authorization: Bearer <JWT>` (LiveKit's claim layout; see the README's *Access*). Beyond what each operation lists, any request may get `429` `rate_limited` where the README says so, and a connection is closed when a request head is too slow or one address holds too many connections.",
    ),
    paths(
        document,
        healthz,
        super::pool::readyz,
        metrics,
        super::pool::view,
        super::rooms::create,
        super::rooms::get,
        super::rooms::end,
        super::rooms::go_live,
        super::rooms::stop_live,
        super::events::stream_events,
        super::rooms::links,
        super::guests::revoke_shared_link,
        super::guests::create_invite,
        super::guests::remove_participant,
        super::join_requests::ask,
        super::join_requests::list,
        super::join_requests::set_settings,
        super::join_requests::accept,
        super::join_requests::decline,
        super::join_requests::withdraw,
        super::join_requests::follow,
        super::rooms::set_layout,
        super::rooms::set_look,
        super::rooms::set_audio,
        super::rooms::add_output,
        super::rooms::remove_output,
        super::recordings::start,
        super::recordings::stop,
        super::recordings::list,
        super::recordings::download,
        super::recordings::link,
        super::recordings::delete,
        super::whip::publish,
        super::whip::options,
        super::whip::leave,
        super::whip::trickle_not_supported,
        whip_session_options,
        super::whep::subscribe,
        whep_options,
        super::whep::unsubscribe,
        whep_trickle_not_supported,
        whep_session_options,
        super::live_flv,
        super::live_hls,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth),
    tags(
        (name = "rooms", description = "Create, inspect, go live, stop, end"),
        (name = "program", description = "What the mix looks and sounds like"),
        (name = "outputs", description = "Where the mix is pushed"),
        (name = "recordings", description = "The program recorded to this machine's disk"),
        (name = "access", description = "Links, invites, removals"),
        (name = "webrtc", description = "WHIP publishing and WHEP subscriptions"),
        (name = "origin", description = "The built-in origin's HTTP-FLV"),
        (name = "server", description = "Health, readiness, capacity"),
    ),
)]
struct ApiDoc;

/// The `bearer` security scheme the operations name: a LiveKit-style access token.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token (HS256 JWT): the room's host or guest token, a personal \
                         invite, or an operator token with `roomCreate` / `roomList`",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document as served.
pub fn openapi() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
    optional_bodies_are_absent_not_null(&mut doc);
    doc
}

/// utoipa writes an optional body (`Option<T>`) as `oneOf: [null, T]`, but these handlers read
/// an optional body as "empty or T", not JSON `null`: the schema becomes `T`, and the body stays
/// optional (`required: false`).
fn optional_bodies_are_absent_not_null(doc: &mut serde_json::Value) {
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for item in paths.values_mut().filter_map(|p| p.as_object_mut()) {
        for operation in item.values_mut() {
            let content = operation
                .get_mut("requestBody")
                .and_then(|body| body.get_mut("content"))
                .and_then(|content| content.as_object_mut());
            let Some(content) = content else {
                continue;
            };
            for media in content.values_mut() {
                let schema = &mut media["schema"];
                let real = match schema["oneOf"].as_array().map(Vec::as_slice) {
                    Some([null, real] | [real, null]) if null["type"] == "null" => real.clone(),
                    _ => continue,
                };
                *schema = real;
            }
        }
    }
}

/// The document, built once.
fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| openapi().to_string())
}

#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "server",
    summary = "This document (OpenAPI 3.1)",
    responses((status = 200, description = "The OpenAPI document", body = Object)),
)]
pub async fn document() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document_json(),
    )
        .into_response()
}

// Operations whose handler is a closure, lives in a module with its own owner (`metrics`), or is
// shared by several routes (one `#[utoipa::path]` per function): described here, on stubs that
// are never called. The route test in `tests.rs` keeps them in step with the router.

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "server",
    summary = "Liveness",
    responses((status = 200, description = "`ok`", body = String, content_type = "text/plain")),
)]
#[allow(dead_code)]
fn healthz() {}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "server",
    summary = "Prometheus capacity gauges",
    description = "`costream_fleet_capacity_cores`, `costream_fleet_used_cores`, `costream_fleet_free_cores`, `costream_fleet_workers`, `costream_rooms_live`.",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain")),
)]
#[allow(dead_code)]
fn metrics() {}

#[utoipa::path(
    options,
    path = "/whip/{room_id}/{participant_id}",
    tag = "webrtc",
    summary = "CORS preflight",
    params(
        ("room_id" = String, Path, description = "The room id"),
        ("participant_id" = String, Path, description = "A participant id"),
    ),
    responses((status = 204, description = "As for `OPTIONS /whip/{room_id}`")),
)]
#[allow(dead_code)]
fn whip_session_options() {}

#[utoipa::path(
    options,
    path = "/whep/{room_id}/{participant_id}",
    tag = "webrtc",
    summary = "WHEP capability discovery and CORS preflight",
    params(
        ("room_id" = String, Path, description = "The room id"),
        ("participant_id" = String, Path, description = "A participant id"),
    ),
    responses((status = 204, description = "`Accept-Post: application/sdp`",
        headers(("Accept-Post" = String), ("Allow" = String)))),
)]
#[allow(dead_code)]
fn whep_options() {}

#[utoipa::path(
    options,
    path = "/whep/{room_id}/{participant_id}/{subscription_id}",
    tag = "webrtc",
    summary = "CORS preflight",
    params(
        ("room_id" = String, Path, description = "The room id"),
        ("participant_id" = String, Path, description = "A participant id"),
        ("subscription_id" = String, Path, description = "A subscription id"),
    ),
    responses((status = 204, description = "As for `OPTIONS /whip/{room_id}`")),
)]
#[allow(dead_code)]
fn whep_session_options() {}

#[utoipa::path(
    patch,
    path = "/whep/{room_id}/{participant_id}/{subscription_id}",
    tag = "webrtc",
    summary = "Trickle ICE (not supported)",
    params(
        ("room_id" = String, Path, description = "The room id"),
        ("participant_id" = String, Path, description = "A participant id"),
        ("subscription_id" = String, Path, description = "A subscription id"),
    ),
    responses((status = 405, description = "`trickle_not_supported`", body = ErrorBody)),
)]
#[allow(dead_code)]
fn whep_trickle_not_supported() {}

#[cfg(test)]
mod tests;
