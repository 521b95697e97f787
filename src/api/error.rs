//! Errors become HTTP responses only here, as `{"error": "<code>", "message": "<what to do>"}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `room_not_found`.
    pub code: &'static str,
    /// A sentence a person can act on.
    pub message: String,
    /// Seconds for a `Retry-After` header (503 at capacity).
    pub retry_after: Option<u64>,
}

/// The body of every error answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    /// Stable machine-readable code, e.g. `room_not_found` (each operation lists its codes).
    error: &'a str,
    /// What went wrong and what to do, for a person.
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Admission refused a broadcast: 503, with `Retry-After` when capacity may free up.
    pub fn refused(refusal: &crate::pool::Refusal) -> Self {
        use crate::pool::Refusal;
        let (code, retry_after) = match refusal {
            Refusal::Full {
                retry_after_secs, ..
            } => ("over_capacity", Some(*retry_after_secs)),
            Refusal::Draining => ("draining", None),
            Refusal::FleetFull {
                retry_after_secs, ..
            } => ("over_capacity", Some(*retry_after_secs)),
            Refusal::CoordinatorAway {
                retry_after_secs, ..
            } => ("coordinator_unavailable", Some(*retry_after_secs)),
        };
        Self {
            retry_after,
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, refusal.to_string())
        }
    }

    /// 503 with `Retry-After`: something needed is away for a moment.
    pub fn unavailable(
        code: &'static str,
        message: impl Into<String>,
        retry_after_secs: u64,
    ) -> Self {
        Self {
            retry_after: Some(retry_after_secs),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn participant_not_found(participant_id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "participant_not_found",
            format!("no participant {participant_id:?} in this room; it may have left (see the room status for who is publishing)"),
        )
    }

    pub fn room_not_found(room_id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "room_not_found",
            format!("no room {room_id:?} on this server; it may have ended"),
        )
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn room_gone() -> Self {
        Self::new(StatusCode::GONE, "room_ended", "the room has ended")
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, "{}", self.message);
        } else {
            tracing::debug!(status = %self.status, code = self.code, "{}", self.message);
        }
        let body = serde_json::to_string(&ErrorBody {
            error: self.code,
            message: &self.message,
        })
        .unwrap_or_default();
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<crate::room::actor::RoomGone> for ApiError {
    fn from(_: crate::room::actor::RoomGone) -> Self {
        Self::room_gone()
    }
}

impl From<crate::room::actor::GoLiveError> for ApiError {
    fn from(e: crate::room::actor::GoLiveError) -> Self {
        match e {
            crate::room::actor::GoLiveError::Room(e) => e.into(),
            crate::room::actor::GoLiveError::Refused(r) => Self::refused(&r),
        }
    }
}

impl From<crate::room::state::RoomError> for ApiError {
    fn from(e: crate::room::state::RoomError) -> Self {
        use crate::room::state::RoomError;
        let (status, code) = match &e {
            RoomError::Full { .. } => (StatusCode::CONFLICT, "room_full"),
            RoomError::AlreadyJoined(_) => (StatusCode::CONFLICT, "already_joined"),
            RoomError::UnknownParticipant(_) => (StatusCode::NOT_FOUND, "participant_not_found"),
            RoomError::NoOutputs => (StatusCode::CONFLICT, "no_outputs"),
            RoomError::InvalidLayout(_) => (StatusCode::BAD_REQUEST, "invalid_layout"),
            RoomError::InvalidLook(_) => (StatusCode::BAD_REQUEST, "invalid_look"),
            RoomError::InvalidAudio(_) => (StatusCode::BAD_REQUEST, "invalid_audio"),
            RoomError::UnknownSubscription(_) => (StatusCode::NOT_FOUND, "subscription_not_found"),
            RoomError::TooManyOutputs { .. } => (StatusCode::CONFLICT, "too_many_outputs"),
            RoomError::DuplicateOutput(_) => (StatusCode::CONFLICT, "duplicate_output"),
            RoomError::UnknownOutput(_) => (StatusCode::NOT_FOUND, "output_not_found"),
            RoomError::NotLive => (StatusCode::CONFLICT, "not_live"),
            RoomError::AlreadyRecording(_) => (StatusCode::CONFLICT, "already_recording"),
            RoomError::NotRecording => (StatusCode::NOT_FOUND, "not_recording"),
            RoomError::RecordingUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "recording_unavailable")
            }
            RoomError::TooManySubscriptions { .. } => {
                let mut error = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too_many_subscriptions",
                    e.to_string(),
                );
                error.retry_after = Some(10);
                return error;
            }
        };
        Self::new(status, code, e.to_string())
    }
}
