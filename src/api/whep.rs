//! WHEP-style subscriptions, the SFU return path: `POST /whep/{room}/{participant}` with a
//! recvonly SDP offer returns that participant's audio and video (forwarded, not transcoded);
//! `DELETE` on the returned Location ends it. Like WHIP, the answer carries every candidate
//! (no trickle).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::auth;
use super::body::read_limited;
use super::error::ApiError;
use super::whip::{ingest_error, require_sdp};
use super::AppState;

pub async fn subscribe(
    State(app): State<AppState>,
    Path((room_id, participant_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let room = app
        .rooms
        .get(&room_id)
        .ok_or_else(|| ApiError::room_not_found(&room_id))?;
    auth::role(&headers, &room)?;
    require_sdp(&headers, "a WHEP offer")?;
    let bytes = read_limited(&headers, body, app.config.limits.max_body_bytes).await?;
    let offer = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::bad_request("invalid_sdp", "the SDP offer is not UTF-8 text"))?;
    let source = room
        .session(&participant_id)
        .await?
        .ok_or_else(|| participant_not_found(&participant_id))?;
    let (subscription, answer, events) = app
        .ingest
        .accept_subscription(offer, &source)
        .await
        .map_err(ingest_error)?;
    let subscription_id = subscription.id().to_string();
    room.subscribe(subscription, events, &participant_id)
        .await??;
    let location = format!("/whep/{room_id}/{participant_id}/{subscription_id}");
    Ok((
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_string()),
            (header::LOCATION, location),
        ],
        answer,
    )
        .into_response())
}

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

fn participant_not_found(participant_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "participant_not_found",
        format!("no participant {participant_id:?} in this room; it may have left (see the room status for who is publishing)"),
    )
}
