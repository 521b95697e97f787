//! `GET /api/v1/rooms/{id}/events`: the room's live state as Server-Sent Events, so pages never
//! poll or reload. Events:
//! - `status`: the whole room status (as `GET /api/v1/rooms/{id}` shows it), first on connect,
//!   then on every change and about once a second while live;
//! - `removed`: `{"type":"removed","participant_id":…}` when the host removes someone;
//! - host only: `join_request` `{type, request_id, name}` when a viewer asks to join, and
//!   `join_request_closed` `{type, request_id, outcome}` when it is answered, withdrawn or expires;
//! - `ended`: the room ended; the stream closes after it.
//!
//! Auth is the bearer token (pages read the stream with `fetch`, which can send headers; no
//! token ever travels in a URL). A guest's stream never carries output URLs or reasons.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde_json::Value;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::auth;
use super::error::{ApiError, ErrorBody};
use super::rooms::{find_room, status_json};
use super::AppState;
use crate::room::actor::RoomNotice;
use crate::room::status::RoomStatus;
use crate::room::tokens::Role;

/// Comment lines keep idle connections open through proxies that time out silent ones.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[utoipa::path(
    get,
    path = "/api/v1/rooms/{room_id}/events",
    tag = "rooms",
    summary = "The room's live state as Server-Sent Events",
    description = "Events: `status` (the room status, as `GET /api/v1/rooms/{room_id}` shows it to this token's role) on connect, on every change and about once a second while live; `removed` `{type, participant_id}`; `ended`, then the stream closes. Comment keep-alives every 15 s.",
    params(("room_id" = String, Path, description = "The room id")),
    responses(
        (status = 200, description = "An endless event stream", body = super::openapi::wire::RoomEvent, content_type = "text/event-stream"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`room_not_found`", body = ErrorBody),
        (status = 503, description = "`too_many_streams` (with `Retry-After`): `limits.event_streams_per_room`", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds"))),
    ),
    security(("bearer" = [])),
)]
pub async fn stream_events(
    State(app): State<AppState>,
    Path(room_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let room = find_room(&app, &room_id).await?;
    let role = auth::role(&headers, &room)?;
    // The host's own page never counts: guests opening streams cannot lock the studio out.
    let max = app.config.limits.event_streams_per_room;
    let slot = if role == Role::Host {
        None
    } else {
        Some(room.open_event_stream(max).ok_or_else(|| {
        let mut error = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            format!("this room already has {max} event streams open (limits.event_streams_per_room); close one or retry later"),
        );
        error.retry_after = Some(10);
        error
    })?)
    };
    let (status, notices) = room.watch();
    let shutdown = app.shutdown.clone();
    let events = RoomEvents {
        _slot: slot,
        app,
        role,
        status,
        notices: Some(notices),
        shutdown,
        sent_first: false,
        ended: false,
    };
    let mut response = Sse::new(events.into_stream())
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // Reverse proxies (nginx) must pass events through as they come.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// One client's view of one room.
struct RoomEvents {
    /// Its place among the room's open event streams, freed when the stream ends (none for
    /// the host).
    _slot: Option<crate::room::EventStreamSlot>,
    app: AppState,
    role: Role,
    status: watch::Receiver<Arc<RoomStatus>>,
    /// `None` once the channel closed, so a closed channel is not polled in a busy loop.
    notices: Option<broadcast::Receiver<RoomNotice>>,
    /// Server shutdown: end the stream so the HTTP server can finish draining.
    shutdown: CancellationToken,
    sent_first: bool,
    ended: bool,
}

impl RoomEvents {
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> {
        stream::unfold(self, |mut this| async move {
            let event = this.next_event().await?;
            Some((Ok(event), this))
        })
    }

    async fn next_event(&mut self) -> Option<Event> {
        if self.ended {
            return None;
        }
        if !self.sent_first {
            self.sent_first = true;
            let status = self.status.borrow_and_update().clone();
            return Some(self.status_event(&status));
        }
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                changed = self.status.changed() => {
                    if changed.is_err() {
                        // The room actor is gone: the room ended.
                        self.ended = true;
                        return Some(Event::default().event("ended").data("{}"));
                    }
                    let status = self.status.borrow_and_update().clone();
                    return Some(self.status_event(&status));
                }
                notice = recv_notice(&mut self.notices) => match notice {
                    Ok(notice) if notice.host_only() && self.role != Role::Host => continue,
                    Ok(notice) => {
                        let data = serde_json::to_string(&notice).unwrap_or_default();
                        return Some(Event::default().event(notice_name(&notice)).data(data));
                    }
                    // Missed some: the next status snapshot tells the current truth anyway.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => self.notices = None,
                },
            }
        }
    }

    fn status_event(&self, status: &RoomStatus) -> Event {
        let json = for_role(status_json(&self.app, status), self.role);
        Event::default().event("status").data(json.to_string())
    }
}

async fn recv_notice(
    notices: &mut Option<broadcast::Receiver<RoomNotice>>,
) -> Result<RoomNotice, broadcast::error::RecvError> {
    match notices {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn notice_name(notice: &RoomNotice) -> &'static str {
    match notice {
        RoomNotice::Removed { .. } => "removed",
        RoomNotice::JoinRequest { .. } => "join_request",
        RoomNotice::JoinRequestClosed { .. } => "join_request_closed",
    }
}

/// Guests see each output's id and state only: no URLs (not even redacted), no reasons (which
/// may name the CDN), no origin play links beyond what the watch page shows anyone.
pub fn for_role(json: Value, role: Role) -> Value {
    if role == Role::Host {
        return json;
    }
    let mut json = without_operator_details(json);
    if let Some(fields) = json.as_object_mut() {
        fields.remove("origin");
    }
    json
}

/// The status without what only the host may see: outputs as `{output_id, state}` (no URLs,
/// connection errors or byte counts) and the mixer as `{state}` (its pid, binary, version and
/// failure reasons are the operator's). What anyone may know, such as `origin`, stays.
pub fn without_operator_details(mut json: Value) -> Value {
    if let Some(outputs) = json["outputs"].as_array_mut() {
        for output in outputs {
            let keep = serde_json::json!({
                "output_id": output["output_id"],
                "state": output["state"],
            });
            *output = keep;
        }
    }
    if let Some(mixer) = json.get_mut("mixer") {
        *mixer = serde_json::json!({ "state": mixer["state"] });
    }
    // Whether the room records is public (a viewer may want to know); why a file could not be
    // written names the server's paths.
    if let Some(recording) = json.get_mut("recording").filter(|r| r.is_object()) {
        *recording = serde_json::json!({ "state": recording["state"] });
    }
    // Who asks to join, by name, is the host's to know; whether one may ask is public.
    if let Some(requests) = json.get_mut("join_requests") {
        *requests = serde_json::json!({ "enabled": requests["enabled"] });
    }
    // Identities may be people's account names or e-mail addresses (whatever an app backend
    // put in `sub`): the host's to know, not every viewer's.
    if let Some(participants) = json["participants"].as_array_mut() {
        for participant in participants {
            if let Some(fields) = participant.as_object_mut() {
                fields.remove("identity");
            }
        }
    }
    json
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guests_never_see_output_details() {
        let json = serde_json::json!({
            "room_id": "r",
            "outputs": [{"output_id": "out0", "url": "rtmp://cdn.example/live/***",
                         "state": "live", "reason": "at rtmp://cdn.example", "bytes_sent": 5}],
            "origin": {"rtmp_play_url": "rtmp://x/live/r"},
        });
        let guest = for_role(json.clone(), Role::Guest).to_string();
        assert!(!guest.contains("cdn.example"), "{guest}");
        let with_people = serde_json::json!({
            "participants": [{"participant_id": "p1", "identity": "ann@example.com"}],
        });
        let public = without_operator_details(with_people).to_string();
        assert!(!public.contains("ann@example.com"), "{public}");
        assert!(public.contains("p1"));
        let failing = serde_json::json!({
            "recording": {"session_id": "rec-a", "state": "failed",
                          "reason": "writing /srv/costream/recordings/r/rec-a-1.mp4 failed"},
        });
        let public = without_operator_details(failing);
        assert_eq!(public["recording"], serde_json::json!({"state": "failed"}));
        assert!(!guest.contains("rtmp://"), "{guest}");
        assert!(guest.contains(r#""state":"live""#), "{guest}");
        let host = for_role(json, Role::Host).to_string();
        assert!(host.contains("cdn.example"), "{host}");
    }
}
