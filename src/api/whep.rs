//! WHEP-style subscriptions, the SFU return path: `POST /whep/{room}/{participant}` with a
//! recvonly SDP offer returns that participant's audio and video (forwarded, not transcoded);
//! `DELETE` on the returned Location ends it. Like WHIP, the answer carries every candidate
//! (no trickle).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::auth;
use super::error::{ApiError, ErrorBody};
use super::sdp::{created, ingest_error, read_offer, Offer};
use super::AppState;
use crate::access::Capability;

#[utoipa::path(
    post,
    path = "/whep/{room_id}/{participant_id}",
    tag = "webrtc",
    summary = "Subscribe to one participant (WHEP)",
    description = "The body is a recvonly SDP offer; the answer carries every candidate and the participant's own codecs (forwarded, not transcoded).",
    params(("room_id" = String, Path, description = "The room id"), ("participant_id" = String, Path, description = "A participant id from the room status")),
    request_body(content = String, content_type = "application/sdp", description = "recvonly SDP offer"),
    responses(
        (status = 201, description = "The SDP answer", body = String, content_type = "application/sdp",
            headers(("Location" = String, description = "`/whep/{room_id}/{participant_id}/{subscription_id}`: DELETE it to end"))),
        (status = 400, description = "`invalid_sdp` (not SDP, too many candidates or media sections), `unsupported_media` (no VP8/H.264/Opus), `unreadable_body`", body = ErrorBody),
        (status = 401, description = "`unauthorized` (missing or wrong token), `link_revoked` (the shared guest link was revoked)", body = ErrorBody),
        (status = 403, description = "`forbidden` (`canPublish` / `canSubscribe` false), `removed` (the host removed this identity)", body = ErrorBody),
        (status = 404, description = "`room_not_found`, `participant_not_found`", body = ErrorBody),
        (status = 408, description = "`body_timeout`", body = ErrorBody),
        (status = 409, description = "`room_full` (`limits.max_participants_per_room`), `already_joined`", body = ErrorBody),
        (status = 410, description = "`room_ended`", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not `application/sdp`", body = ErrorBody),
        (status = 429, description = "`rate_limited` (with `Retry-After`): `limits.sessions_per_minute_per_ip`", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds"))),
        (status = 503, description = "`at_capacity` (`limits.max_peer_connections`), `too_many_subscriptions` (`limits.max_subscriptions_per_room`), with `Retry-After`", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds"))),
    ),
    security(("bearer" = [])),
)]
pub async fn subscribe(
    State(app): State<AppState>,
    Path((room_id, participant_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Offer {
        room,
        sdp,
        participant,
    } = read_offer(
        &app,
        &room_id,
        &headers,
        body,
        "a WHEP offer",
        Capability::Subscribe,
    )
    .await?;
    let source = room
        .session(&participant_id)
        .await?
        .ok_or_else(|| ApiError::participant_not_found(&participant_id))?;
    let (subscription, answer, events) = app
        .ingest
        .accept_subscription(&sdp, &source)
        .await
        .map_err(ingest_error)?;
    let subscription_id = subscription.id().to_string();
    room.subscribe(subscription, events, &participant_id, participant.identity)
        .await??;
    let location = format!("/whep/{room_id}/{participant_id}/{subscription_id}");
    Ok(created(location, answer))
}

#[utoipa::path(
    delete,
    path = "/whep/{room_id}/{participant_id}/{subscription_id}",
    tag = "webrtc",
    summary = "End a subscription",
    params(("room_id" = String, Path, description = "The room id"), ("participant_id" = String, Path, description = "A participant id from the room status"), ("subscription_id" = String, Path, description = "From the Location")),
    responses(
        (status = 200, description = "Ended"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`room_not_found`, `subscription_not_found`", body = ErrorBody),
        (status = 410, description = "`room_ended`", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn unsubscribe(
    State(app): State<AppState>,
    Path((room_id, _participant_id, subscription_id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let room = app
        .rooms
        .get(&room_id)
        .ok_or_else(|| ApiError::room_not_found(&room_id))?;
    auth::role(&headers, &room)?;
    room.unsubscribe(&subscription_id).await??;
    Ok(StatusCode::OK.into_response())
}
