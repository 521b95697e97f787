//! The host's say over who is in the room: personal invites, removal that sticks (the
//! identity is banned from the room), and revoking the shared guest link.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::body::{parse_json_or_default, read_limited};
use super::error::{ApiError, ErrorBody};
use super::rooms::{host_room, room_links_of};
use super::AppState;
use crate::room::guest_list::validate_identity;
use crate::room::tokens::{random_id, Role};

/// Shortest and longest lifetime of a personal invite.
const MIN_INVITE_TTL_SECS: u64 = 60;
const MAX_INVITE_TTL_SECS: u64 = 30 * 24 * 3600;

/// Body of `POST /api/v1/rooms/{id}/invites`; every field is optional.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInvite {
    /// Display name shown on the guest's tile (the guest may change it when joining).
    #[serde(default)]
    pub name: Option<String>,
    /// The guest's identity in the room (the token's `sub`); generated when absent.
    /// 1–128 of letters, digits, `-_.@:`; not `host` or `guest`.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128, example = "alice@example.com")]
    pub identity: Option<String>,
    /// Lifetime of the invite in seconds (default: `[auth] token_ttl_secs`).
    #[serde(default)]
    #[schema(minimum = 60, maximum = 2592000)]
    pub ttl_secs: Option<u64>,
}

/// A personal invite (`POST /api/v1/rooms/{id}/invites`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Invite {
    pub identity: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The guest's access token (a JWT with `roomJoin` for this room).
    pub token: String,
    /// The page link to send to the guest.
    pub join_url: String,
    /// When the invite stops working (Unix seconds).
    pub expires_at: u64,
}

/// `POST /api/v1/rooms/{id}/invites` (host): a personal invite. Inviting an identity the host
/// removed earlier lets it in again.
#[utoipa::path(
    post,
    path = "/api/v1/rooms/{room_id}/invites",
    tag = "access",
    summary = "Create a personal invite",
    params(("room_id" = String, Path, description = "The room id")),
    request_body(content = Option<CreateInvite>, content_type = "application/json"),
    responses(
        (status = 201, description = "The invite", body = Invite),
        (status = 400, description = "`invalid_identity`, `invalid_ttl` (60 s–30 days), `invalid_json`, `unreadable_body`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the host token", body = ErrorBody),
        (status = 404, description = "`room_not_found`", body = ErrorBody),
        (status = 408, description = "`body_timeout`", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 429, description = "`rate_limited` (with `Retry-After`): `limits.invites_per_minute_per_ip`", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds"))),
    ),
    security(("bearer" = [])),
)]
pub async fn create_invite(
    State(app): State<AppState>,
    Path(room_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let room = host_room(&app, &room_id, &headers).await?;
    let bytes = read_limited(&headers, body, app.config.limits.max_body_bytes).await?;
    let request: CreateInvite = parse_json_or_default(&headers, &bytes)?;
    let identity = match request.identity {
        Some(identity) => {
            validate_identity(&identity)
                .map_err(|msg| ApiError::bad_request("invalid_identity", msg))?;
            identity
        }
        None => format!("inv-{}", random_id(6)),
    };
    let name = request
        .name
        .map(|name| name.trim().chars().take(64).collect::<String>())
        .filter(|name| !name.is_empty());
    let ttl_secs = request.ttl_secs.unwrap_or(room.tokens.default_ttl_secs());
    if !(MIN_INVITE_TTL_SECS..=MAX_INVITE_TTL_SECS).contains(&ttl_secs) {
        return Err(ApiError::bad_request(
            "invalid_ttl",
            format!(
                "ttl_secs must be between {MIN_INVITE_TTL_SECS} and {MAX_INVITE_TTL_SECS} \
                 (30 days)"
            ),
        ));
    }
    room.guests
        .lock()
        .expect("guest list lock")
        .unban(&identity);
    room.guests_changed().await?;
    let (token, expires_at) = room.tokens.invite(&identity, name.clone(), ttl_secs);
    let join_url = format!("{}/join/{room_id}#token={token}", app.config.public_url());
    tracing::info!(room = %room_id, identity = %identity, ttl_secs, "personal invite created");
    let invite = Invite {
        identity,
        name,
        token,
        join_url,
        expires_at,
    };
    Ok((StatusCode::CREATED, Json(invite)).into_response())
}

/// `DELETE /api/v1/rooms/{id}/participants/{participant_id}` (host): the participant's
/// sessions close, they are told why, and their identity may not join this room again (until
/// the host invites it anew). The host's own identity is never banned.
#[utoipa::path(
    delete,
    path = "/api/v1/rooms/{room_id}/participants/{participant_id}",
    tag = "access",
    summary = "Remove a participant and ban their identity from the room",
    params(("room_id" = String, Path, description = "The room id"), ("participant_id" = String, Path, description = "A participant id from the room status")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the host token", body = ErrorBody),
        (status = 404, description = "`room_not_found`, `participant_not_found`", body = ErrorBody),
        (status = 410, description = "`room_ended`", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn remove_participant(
    State(app): State<AppState>,
    Path((room_id, participant_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let room = host_room(&app, &room_id, &headers).await?;
    let status = room.status().await?;
    let target = status
        .participants
        .iter()
        .find(|p| p.participant_id == participant_id)
        .ok_or_else(|| ApiError::participant_not_found(&participant_id))?;
    if target.role == Role::Host {
        room.remove(&participant_id).await??;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    // Banned before the sessions are listed: a WHIP join of this identity still in flight
    // either shows up in the list below or sees the ban when it re-checks after joining.
    let identity = target.identity.clone();
    room.guests.lock().expect("guest list lock").ban(&identity);
    room.guests_changed().await?;
    let status = room.status().await?;
    // Every session of that person goes (a second tab publishing too), and what they watch.
    for session in status
        .participants
        .iter()
        .filter(|p| p.role == Role::Guest && p.identity == identity)
    {
        // One that left meanwhile is gone already, which is what was asked.
        let _ = room.remove(&session.participant_id).await?;
        room.guests
            .lock()
            .expect("guest list lock")
            .session_removed(&session.participant_id);
    }
    room.unsubscribe_identity(&identity).await?;
    // A viewer let in by a request: its address may not ask again at once.
    room.join_requests
        .lock()
        .expect("join requests lock")
        .removed(std::time::Instant::now(), &identity);
    tracing::info!(room = %room_id, identity = %identity, "participant removed and banned");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /api/v1/rooms/{id}/links/guest` (host): the shared guest link stops admitting
/// anyone (`401` for new joins); guests already in the room stay, personal invites keep
/// working. Answers the room's links, now without `guest_url`.
#[utoipa::path(
    delete,
    path = "/api/v1/rooms/{room_id}/links/guest",
    tag = "access",
    summary = "Revoke the shared guest link",
    description = "New WHIP/WHEP requests with it get `401` `link_revoked`; guests inside stay; personal invites keep working.",
    params(("room_id" = String, Path, description = "The room id")),
    responses(
        (status = 200, description = "The links, now without `guest_url`", body = super::rooms::RoomLinks),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the host token", body = ErrorBody),
        (status = 404, description = "`room_not_found`", body = ErrorBody),
        (status = 410, description = "`room_ended`", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn revoke_shared_link(
    State(app): State<AppState>,
    Path(room_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let room = host_room(&app, &room_id, &headers).await?;
    room.guests
        .lock()
        .expect("guest list lock")
        .revoke_shared_link();
    room.guests_changed().await?;
    tracing::info!(room = %room_id, "shared guest link revoked");
    Ok(Json(room_links_of(&app, &room).await?).into_response())
}
