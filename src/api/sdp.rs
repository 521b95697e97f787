//! What WHIP and WHEP share: reading an SDP offer from a request with its room's token, and
//! answering `201 Created` with the SDP answer and the new resource's Location.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use costream_ingest::IngestError;

use super::auth;
use super::body::read_limited;
use super::error::ApiError;
use super::AppState;
use crate::room::tokens::Role;
use crate::room::RoomHandle;

/// An authorized SDP offer for a room.
pub struct Offer {
    pub room: Arc<RoomHandle>,
    pub role: Role,
    pub sdp: String,
}

/// Finds the room, checks the bearer token (host or guest), the content type and the size,
/// and reads the offer. `what` names the offer in errors ("a WHIP offer").
pub async fn read_offer(
    app: &AppState,
    room_id: &str,
    headers: &HeaderMap,
    body: Body,
    what: &str,
) -> Result<Offer, ApiError> {
    let room = app
        .rooms
        .get(room_id)
        .ok_or_else(|| ApiError::room_not_found(room_id))?;
    let role = auth::role(headers, &room)?;
    require_sdp(headers, what)?;
    let bytes = read_limited(headers, body, app.config.limits.max_body_bytes).await?;
    let sdp = String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::bad_request("invalid_sdp", "the SDP offer is not UTF-8 text"))?;
    Ok(Offer { room, role, sdp })
}

/// `201 Created` with the SDP answer and the session's Location.
pub fn created(location: String, answer: String) -> Response {
    (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_string()),
            (header::LOCATION, location),
        ],
        answer,
    )
        .into_response()
}

/// 415 unless the body is declared as SDP.
pub fn require_sdp(headers: &HeaderMap, what: &str) -> Result<(), ApiError> {
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

pub fn ingest_error(e: IngestError) -> ApiError {
    let message = e.to_string();
    match e {
        IngestError::InvalidSdp(_) => ApiError::bad_request("invalid_sdp", message),
        IngestError::NoMedia | IngestError::UnsupportedCodec(_) => {
            ApiError::bad_request("unsupported_media", message)
        }
        _ => ApiError::internal(format!("cannot set up the WebRTC session: {message}")),
    }
}
