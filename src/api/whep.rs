//! WHEP-style subscriptions, the SFU return path: `POST /whep/{room}/{participant}` with a
//! recvonly SDP offer returns that participant's audio and video (forwarded, not transcoded);
//! `DELETE` on the returned Location ends it. Like WHIP, the answer carries every candidate
//! (no trickle).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::auth;
use super::error::ApiError;
use super::sdp::{created, ingest_error, read_offer, Offer};
use super::AppState;
use crate::access::Capability;

pub async fn subscribe(
    State(app): State<AppState>,
    Path((room_id, participant_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Offer { room, sdp, .. } = read_offer(
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
    room.subscribe(subscription, events, &participant_id)
        .await??;
    let location = format!("/whep/{room_id}/{participant_id}/{subscription_id}");
    Ok(created(location, answer))
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
