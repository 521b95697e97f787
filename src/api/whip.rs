//! WHIP (RFC 9725): `POST /whip/{room}` with an SDP offer creates a session, `DELETE` on its
//! Location ends it. Trickle ICE (PATCH) is not supported: the answer carries every candidate.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use costream_ingest::IngestError;
use serde::Deserialize;

use super::auth;
use super::body::read_limited;
use super::error::ApiError;
use super::AppState;

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
    let room = app
        .rooms
        .get(&room_id)
        .ok_or_else(|| ApiError::room_not_found(&room_id))?;
    let role = auth::role(&headers, &room)?;
    require_sdp(&headers, "a WHIP offer")?;
    let bytes = read_limited(&headers, body, app.config.limits.max_body_bytes).await?;
    let offer = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::bad_request("invalid_sdp", "the SDP offer is not UTF-8 text"))?;

    let (session, answer, events) = app.ingest.accept_offer(offer).await.map_err(ingest_error)?;
    let display_name: String = query.name.unwrap_or_default().chars().take(64).collect();
    let participant_id = room.join(session, events, role, display_name).await??;

    let location = format!("/whip/{room_id}/{participant_id}");
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

/// 415 unless the body is declared as SDP.
pub(super) fn require_sdp(headers: &HeaderMap, what: &str) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("application/sdp") {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("{what} must be sent with Content-Type: application/sdp (got {content_type:?})"),
    ))
}

pub(super) fn ingest_error(e: IngestError) -> ApiError {
    let message = e.to_string();
    match e {
        IngestError::InvalidSdp(_) => ApiError::bad_request("invalid_sdp", message),
        IngestError::NoMedia | IngestError::UnsupportedCodec(_) => {
            ApiError::bad_request("unsupported_media", message)
        }
        _ => ApiError::internal(format!("cannot set up the WebRTC session: {message}")),
    }
}

pub async fn leave(
    State(app): State<AppState>,
    Path((room_id, participant_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let room = app
        .rooms
        .get(&room_id)
        .ok_or_else(|| ApiError::room_not_found(&room_id))?;
    auth::role(&headers, &room)?;
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
