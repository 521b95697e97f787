//! WHIP (RFC 9725): `POST /whip/{room}` with an SDP offer creates a session, `DELETE` on its
//! Location ends it. Trickle ICE (PATCH) is not supported: the answer carries every candidate.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth;
use super::error::{ApiError, ErrorBody};
use super::sdp::{created, ingest_error, read_offer, Offer};
use super::AppState;
use crate::access::Capability;
use crate::room::tokens::Role;

#[derive(Debug, Default, Deserialize)]
pub struct JoinQuery {
    /// Display name of the participant (optional).
    #[serde(default)]
    pub name: Option<String>,
}

#[utoipa::path(
    post,
    path = "/whip/{room_id}",
    tag = "webrtc",
    summary = "Publish (WHIP, RFC 9725)",
    description = "The body is the SDP offer (VP8 or H.264 video, Opus audio); the answer carries every ICE candidate (no trickle).",
    params(("room_id" = String, Path, description = "The room id"), ("name" = Option<String>, Query, description = "Display name (else the token's `name`)")),
    request_body(content = String, content_type = "application/sdp", description = "SDP offer"),
    responses(
        (status = 201, description = "The SDP answer", body = String, content_type = "application/sdp",
            headers(("Location" = String, description = "`/whip/{room_id}/{participant_id}?key=SESSION_KEY`: DELETE it to leave"))),
        (status = 400, description = "`invalid_sdp` (not SDP, too many candidates or media sections), `unsupported_media` (no VP8/H.264/Opus), `unreadable_body`", body = ErrorBody),
        (status = 401, description = "`unauthorized` (missing or wrong token), `link_revoked` (the shared guest link was revoked)", body = ErrorBody),
        (status = 403, description = "`forbidden` (`canPublish` / `canSubscribe` false), `removed` (the host removed this identity)", body = ErrorBody),
        (status = 404, description = "`room_not_found`", body = ErrorBody),
        (status = 408, description = "`body_timeout`", body = ErrorBody),
        (status = 409, description = "`room_full` (`limits.max_participants_per_room`), `already_joined`", body = ErrorBody),
        (status = 410, description = "`room_ended`", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not `application/sdp`", body = ErrorBody),
        (status = 429, description = "`rate_limited` (with `Retry-After`): `limits.sessions_per_minute_per_ip`", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds"))),
        (status = 503, description = "`at_capacity` (`limits.max_peer_connections`), with `Retry-After`", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds"))),
    ),
    security(("bearer" = [])),
)]
pub async fn publish(
    State(app): State<AppState>,
    Path(room_id): Path<String>,
    Query(query): Query<JoinQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let requested_at = std::time::Instant::now();
    let Offer {
        room,
        participant,
        sdp,
    } = read_offer(
        &app,
        &room_id,
        &headers,
        body,
        "a WHIP offer",
        Capability::Publish,
    )
    .await?;
    let (session, answer, events) = app.ingest.accept_offer(&sdp).await.map_err(ingest_error)?;
    // The page's `?name=` wins over the token's `name`: people correct their name when they
    // join.
    let display_name: String = query
        .name
        .filter(|name| !name.trim().is_empty())
        .or(participant.name)
        .unwrap_or_default()
        .chars()
        .take(64)
        .collect();
    let identity = participant.identity.clone();
    let participant_id = room
        .join(
            session,
            events,
            participant.role,
            identity.clone(),
            display_name,
            requested_at,
        )
        .await??;
    // The host may have removed this identity while the offer was being answered: the ban is
    // set before the host lists the sessions to close, so this check closes the gap.
    if room
        .guests
        .lock()
        .expect("guest list lock")
        .is_banned(&identity)
    {
        let _ = room.remove(&participant_id).await;
        return Err(auth::removed_error(&identity));
    }

    // The key in the Location lets this session's creator (and only them, among guests sharing
    // one token) end it; WHIP clients DELETE the Location verbatim.
    let key = room.tokens.session_key(&participant_id);
    Ok(created(
        format!("/whip/{room_id}/{participant_id}?key={key}"),
        answer,
    ))
}

#[derive(Debug, Default, Deserialize)]
pub struct LeaveQuery {
    key: Option<String>,
}

#[utoipa::path(
    delete,
    path = "/whip/{room_id}/{participant_id}",
    tag = "webrtc",
    summary = "Leave (end a WHIP session)",
    description = "DELETE the Location exactly as given: a guest must present its session's `key`; the host token needs none.",
    params(("room_id" = String, Path, description = "The room id"), ("participant_id" = String, Path, description = "A participant id from the room status"), ("key" = Option<String>, Query, description = "The session key from the Location")),
    responses(
        (status = 200, description = "Left"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: a guest without its session's key; `removed`: the host removed this session (a client that lost it must not publish again)", body = ErrorBody),
        (status = 404, description = "`room_not_found`, `participant_not_found`", body = ErrorBody),
        (status = 410, description = "`room_ended`", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn leave(
    State(app): State<AppState>,
    Path((room_id, participant_id)): Path<(String, String)>,
    Query(query): Query<LeaveQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let room = app
        .rooms
        .get(&room_id)
        .ok_or_else(|| ApiError::room_not_found(&room_id))?;
    let role = auth::role(&headers, &room)?;
    let own_session = query
        .key
        .as_deref()
        .is_some_and(|key| room.tokens.session_key_matches(&participant_id, key));
    if role == Role::Guest && !own_session {
        // Participant ids are public, so saying which ones exist reveals nothing.
        if room.session(&participant_id).await?.is_none() {
            return Err(ApiError::participant_not_found(&participant_id));
        }
        return Err(ApiError::forbidden(
            "a guest can only end its own session: DELETE the exact Location URL the WHIP answer gave",
        ));
    }
    // A client whose session vanished asks about it before publishing again: removed by the
    // host is final (a shared-link guest would otherwise come back as a new person).
    let removed = own_session
        && room
            .guests
            .lock()
            .expect("guest list lock")
            .was_session_removed(&participant_id);
    if removed && room.session(&participant_id).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "removed",
            "the host removed this participant from the room; do not publish again",
        ));
    }
    room.leave(&participant_id).await??;
    Ok(StatusCode::OK.into_response())
}

#[utoipa::path(
    patch,
    path = "/whip/{room_id}/{participant_id}",
    tag = "webrtc",
    summary = "Trickle ICE (not supported)",
    params(("room_id" = String, Path, description = "The room id"), ("participant_id" = String, Path, description = "A participant id from the room status")),
    responses(
        (status = 405, description = "`trickle_not_supported`: the answer already carries every candidate", body = ErrorBody),
    ),
)]
pub async fn trickle_not_supported() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "trickle_not_supported",
        "trickle ICE is not supported; the SDP answer already carries every candidate",
    )
}

/// Every OPTIONS answer on the WHIP and WHEP routes as [`options`] gives it: `204` with
/// `Accept-Post`. tower-http's CORS layer answers each OPTIONS itself (as a preflight, `200`,
/// no `Accept-Post`) before the route's handler could, so this runs outside it and keeps the
/// CORS headers it set.
pub async fn options_as_whip(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let is_options = request.method() == axum::http::Method::OPTIONS;
    let mut response = next.run(request).await;
    if is_options && response.status() == StatusCode::OK {
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        headers.insert(
            "accept-post",
            axum::http::HeaderValue::from_static("application/sdp"),
        );
        headers.insert(
            header::ALLOW,
            axum::http::HeaderValue::from_static("OPTIONS, POST"),
        );
    }
    response
}

/// CORS preflight and WHIP capability discovery.
#[utoipa::path(
    options,
    path = "/whip/{room_id}",
    tag = "webrtc",
    summary = "WHIP capability discovery and CORS preflight",
    params(("room_id" = String, Path, description = "The room id")),
    responses(
        (status = 204, description = "`Accept-Post: application/sdp`",
            headers(("Accept-Post" = String), ("Allow" = String))),
    ),
)]
pub async fn options() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            ("accept-post", "application/sdp"),
            (header::ALLOW.as_str(), "OPTIONS, POST"),
        ],
    )
        .into_response()
}
