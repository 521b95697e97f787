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
use crate::access::Capability;
use crate::room::RoomHandle;

/// An authorized SDP offer for a room.
pub struct Offer {
    pub room: Arc<RoomHandle>,
    pub participant: auth::Participant,
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
    capability: Capability,
) -> Result<Offer, ApiError> {
    let room = app
        .rooms
        .get(room_id)
        .ok_or_else(|| ApiError::room_not_found(room_id))?;
    let participant = auth::participant_allowing(headers, &room, capability)?;
    require_sdp(headers, what)?;
    let bytes = read_limited(headers, body, app.config.limits.max_body_bytes).await?;
    let sdp = String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::bad_request("invalid_sdp", "the SDP offer is not UTF-8 text"))?;
    check_offer_bounds(&sdp).map_err(|message| ApiError::bad_request("invalid_sdp", message))?;
    Ok(Offer {
        room,
        participant,
        sdp,
    })
}

/// Most ICE candidates one media section of an offer may carry (libnice's cap per component):
/// each is an address this server sends STUN checks to, so an offer must not make it probe
/// hundreds of addresses. Counted per section, as browsers gather per section.
pub const MAX_OFFER_CANDIDATES: usize = 25;
/// Most audio and video m-sections: a WHIP publisher sends one camera and one microphone, a
/// WHEP subscriber receives one of each.
pub const MAX_AUDIO_SECTIONS: usize = 1;
pub const MAX_VIDEO_SECTIONS: usize = 1;

/// Bounds checked before the offer reaches WebRTC: candidates and media sections.
pub fn check_offer_bounds(sdp: &str) -> Result<(), String> {
    let (mut section_candidates, mut audio, mut video) = (0, 0, 0);
    for line in sdp.lines() {
        let line = line.trim_start();
        if line.starts_with("a=candidate:") {
            section_candidates += 1;
            if section_candidates > MAX_OFFER_CANDIDATES {
                return Err(format!(
                    "a media section of the offer has more than {MAX_OFFER_CANDIDATES} ICE \
                     candidates"
                ));
            }
        } else if line.starts_with("m=") {
            section_candidates = 0;
            if line.starts_with("m=audio") {
                audio += 1;
            } else if line.starts_with("m=video") {
                video += 1;
            }
        }
    }
    if audio > MAX_AUDIO_SECTIONS || video > MAX_VIDEO_SECTIONS {
        return Err(format!(
            "the offer has {audio} audio and {video} video sections; at most \
             {MAX_AUDIO_SECTIONS} audio and {MAX_VIDEO_SECTIONS} video (one microphone, one camera)"
        ));
    }
    Ok(())
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
        IngestError::AtCapacity { .. } => {
            let mut error = ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "at_capacity",
                message,
            );
            error.retry_after = Some(10);
            error
        }
        _ => ApiError::internal(format!("cannot set up the WebRTC session: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=candidate:1 1 udp 1 192.0.2.1 5000 typ host\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\n";

    #[test]
    fn one_audio_one_video_and_few_candidates_pass() {
        assert_eq!(check_offer_bounds(OFFER), Ok(()));
        assert_eq!(
            check_offer_bounds(""),
            Ok(()),
            "the WebRTC parser judges the rest"
        );
    }

    #[test]
    fn a_candidate_flood_is_refused() {
        let mut offer = OFFER.to_string();
        for i in 0..=MAX_OFFER_CANDIDATES {
            offer.push_str(&format!(
                "a=candidate:{i} 1 udp 1 10.0.{i}.1 5000 typ host\r\n"
            ));
        }
        let err = check_offer_bounds(&offer).unwrap_err();
        assert!(err.contains("more than 25 ICE candidates"), "{err}");
        // 25 in each of two sections is what a browser with many interfaces may send.
        let mut two = String::from("v=0\r\n");
        for kind in ["audio", "video"] {
            two.push_str(&format!("m={kind} 9 UDP/TLS/RTP/SAVPF 96\r\n"));
            for i in 0..MAX_OFFER_CANDIDATES {
                two.push_str(&format!(
                    "a=candidate:{i} 1 udp 1 10.0.{i}.1 5000 typ host\r\n"
                ));
            }
        }
        assert_eq!(check_offer_bounds(&two), Ok(()));
    }

    #[test]
    fn extra_media_sections_are_refused() {
        let two_cameras = format!("{OFFER}m=video 9 UDP/TLS/RTP/SAVPF 96\r\n");
        assert!(check_offer_bounds(&two_cameras)
            .unwrap_err()
            .contains("2 video"));
        let two_mics = format!("{OFFER}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n");
        assert!(check_offer_bounds(&two_mics)
            .unwrap_err()
            .contains("2 audio"));
        // A data channel is not media.
        let data = format!("{OFFER}m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n");
        assert_eq!(check_offer_bounds(&data), Ok(()));
    }
}
