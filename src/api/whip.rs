//! WHIP (RFC 9725): `POST /whip/{room}` with an SDP offer creates a session, `DELETE` on its
//! Location ends it. Trickle ICE (PATCH) is not supported: the answer carries every candidate.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth;
use super::error::ApiError;
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

pub async fn publish(
    State(app): State<AppState>,
    Path(room_id): Path<String>,
    Query(query): Query<JoinQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Offer { room, role, sdp } = read_offer(
        &app,
        &room_id,
        &headers,
        body,
        "a WHIP offer",
        Capability::Publish,
    )
    .await?;
    let (session, answer, events) = app.ingest.accept_offer(&sdp).await.map_err(ingest_error)?;
    let display_name: String = query.name.unwrap_or_default().chars().take(64).collect();
    let participant_id = room.join(session, events, role, display_name).await??;

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
    room.leave(&participant_id).await??;
    Ok(StatusCode::OK.into_response())
}

pub async fn trickle_not_supported() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "trickle_not_supported",
        "trickle ICE is not supported; the SDP answer already carries every candidate",
    )
}

/// CORS preflight and WHIP capability discovery.
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
