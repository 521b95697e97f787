//! Viewers asking to join the co-stream (连麦 apply → approve), over HTTP: a viewer asks
//! without any token and follows its request as Server-Sent Events with the secret it got; the
//! host sees requests in its event stream and the list, and accepts (the viewer gets a
//! personal guest token) or declines. The bookkeeping is `room::join_requests`.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream;
use serde::{Deserialize, Serialize};

use super::body::{parse_json_or_default, read_limited};
use super::error::{ApiError, ErrorBody};
use super::rooms::{find_room, host_room};
use super::AppState;
use crate::http_server::ClientIp;
use crate::room::actor::{RoomHandle, RoomNotice};
use crate::room::join_requests::{
    Outcome, PendingRequest, RequestError, RequestSettings, REQUEST_TTL,
};
use crate::room::tokens::{random_id, Role};

/// Body of `POST /api/v1/rooms/{id}/requests`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AskToJoin {
    /// The name the host sees (1–64 characters).
    #[serde(default)]
    pub name: String,
}

/// A viewer's request (`201` of `POST /api/v1/rooms/{id}/requests`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AskedToJoin {
    pub request_id: String,
    /// Follows (`GET …/requests/{request_id}/events`) and withdraws (`DELETE …`) the request:
    /// send it as `Authorization: Bearer SECRET`. Nothing else.
    pub secret: String,
    /// Seconds until an unanswered request expires.
    pub expires_in_secs: u64,
}

/// The host's view: settings and who is waiting.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JoinRequestsView {
    #[serde(flatten)]
    pub settings: RequestSettings,
    /// Oldest first.
    pub pending: Vec<PendingRequest>,
}

/// `200` of `POST …/requests/{request_id}/accept`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub request_id: String,
    /// The new guest's identity (its participants carry it in the room status).
    pub identity: String,
}

fn request_error(error: RequestError) -> ApiError {
    let message = error.to_string();
    match error {
        RequestError::Off => ApiError::new(StatusCode::FORBIDDEN, "requests_off", message),
        RequestError::TooMany => {
            let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message);
            e.retry_after = Some(30);
            e
        }
        RequestError::AlreadyWaiting => {
            let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "already_waiting", message);
            e.retry_after = Some(30);
            e
        }
        RequestError::CoolingDown(secs) => {
            let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "cooling_down", message);
            e.retry_after = Some(secs);
            e
        }
        RequestError::BadName => ApiError::bad_request("invalid_name", message),
        RequestError::NotPending(_) => {
            ApiError::new(StatusCode::CONFLICT, "request_not_pending", message)
        }
        RequestError::Unknown(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "request_not_found", message)
        }
        RequestError::BadSecret => ApiError::unauthorized(message),
    }
}

/// The address a request counts as coming from (as for rate limits).
fn client_ip(extensions: &axum::http::Extensions) -> IpAddr {
    extensions
        .get::<ClientIp>()
        .map(|ClientIp(ip)| *ip)
        .or_else(|| {
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip())
        })
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

fn requests_view(room: &RoomHandle) -> JoinRequestsView {
    let mut requests = room.join_requests.lock().expect("join requests lock");
    JoinRequestsView {
        settings: requests.settings(),
        pending: requests.pending_list(Instant::now()),
    }
}

/// `POST /api/v1/rooms/{id}/requests` (a viewer, no token): asks the host to join.
#[utoipa::path(
    post,
    path = "/api/v1/rooms/{room_id}/requests",
    tag = "access",
    summary = "Ask to join the co-stream (a viewer, no token)",
    description = "The host sees the request at once (`join_request` in its event stream). Follow it with `GET …/requests/{request_id}/events` and the secret. Expires after 120 s unanswered.",
    params(("room_id" = String, Path, description = "The room id")),
    request_body(content = AskToJoin, content_type = "application/json"),
    responses(
        (status = 201, description = "Asked", body = AskedToJoin),
        (status = 400, description = "`invalid_name`, `invalid_json`", body = ErrorBody),
        (status = 403, description = "`requests_off`: the host takes no requests now", body = ErrorBody),
        (status = 404, description = "`room_not_found`", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 429, description = "`rate_limited` (`limits.join_requests_per_minute_per_ip`), `too_many_requests` (50 waiting), `already_waiting` (2 waiting from this address), `cooling_down` (declined or removed in the last minute); with `Retry-After`", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds"))),
    ),
)]
pub async fn ask(
    State(app): State<AppState>,
    Path(room_id): Path<String>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let from = client_ip(&parts.extensions);
    let room = find_room(&app, &room_id).await?;
    let bytes = read_limited(&headers, body, app.config.limits.max_body_bytes).await?;
    let request: AskToJoin = parse_json_or_default(&headers, &bytes)?;
    let request_id = format!("rq-{}", random_id(6));
    let secret = random_id(24);
    let name = room
        .join_requests
        .lock()
        .expect("join requests lock")
        .ask(
            Instant::now(),
            from,
            &request.name,
            request_id.clone(),
            secret.clone(),
        )
        .map_err(request_error)?;
    tracing::info!(room = %room_id, request = %request_id, "a viewer asks to join");
    room.notify(RoomNotice::JoinRequest {
        request_id: request_id.clone(),
        name,
    });
    let asked = AskedToJoin {
        request_id,
        secret,
        expires_in_secs: REQUEST_TTL.as_secs(),
    };
    Ok((StatusCode::CREATED, Json(asked)).into_response())
}

/// `GET /api/v1/rooms/{id}/requests` (host): the settings and who is waiting.
#[utoipa::path(
    get,
    path = "/api/v1/rooms/{room_id}/requests",
    tag = "access",
    summary = "Requests to join waiting, and the settings",
    params(("room_id" = String, Path, description = "The room id")),
    responses(
        (status = 200, description = "Settings and pending requests", body = JoinRequestsView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the host token", body = ErrorBody),
        (status = 404, description = "`room_not_found`", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    State(app): State<AppState>,
    Path(room_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let room = host_room(&app, &room_id, &headers).await?;
    Ok(Json(requests_view(&room)).into_response())
}

/// `PUT /api/v1/rooms/{id}/requests` (host): `{enabled, max_guests}`; off declines those
/// waiting.
#[utoipa::path(
    put,
    path = "/api/v1/rooms/{room_id}/requests",
    tag = "access",
    summary = "Take requests to join or not, and cap the guests on air",
    params(("room_id" = String, Path, description = "The room id")),
    request_body(content = RequestSettings, content_type = "application/json"),
    responses(
        (status = 200, description = "Settings and pending requests", body = JoinRequestsView),
        (status = 400, description = "`invalid_json`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the host token", body = ErrorBody),
        (status = 404, description = "`room_not_found`", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn set_settings(
    State(app): State<AppState>,
    Path(room_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let room = host_room(&app, &room_id, &headers).await?;
    let bytes = read_limited(&headers, body, app.config.limits.max_body_bytes).await?;
    let settings: RequestSettings = parse_json_or_default(&headers, &bytes)?;
    let declined: Vec<String> = {
        let mut requests = room.join_requests.lock().expect("join requests lock");
        let before: Vec<String> = requests
            .pending_list(Instant::now())
            .into_iter()
            .map(|p| p.request_id)
            .collect();
        requests.set_settings(settings);
        if settings.enabled {
            Vec::new()
        } else {
            before
        }
    };
    for request_id in declined {
        room.notify(RoomNotice::JoinRequestClosed {
            request_id,
            outcome: "declined",
        });
    }
    tracing::info!(room = %room_id, ?settings, "join request settings changed");
    Ok(Json(requests_view(&room)).into_response())
}

/// `POST /api/v1/rooms/{id}/requests/{request_id}/accept` (host).
#[utoipa::path(
    post,
    path = "/api/v1/rooms/{room_id}/requests/{request_id}/accept",
    tag = "access",
    summary = "Accept a request: the viewer gets a personal guest token",
    params(("room_id" = String, Path, description = "The room id"), ("request_id" = String, Path, description = "The request")),
    responses(
        (status = 200, description = "Accepted", body = Accepted),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the host token", body = ErrorBody),
        (status = 404, description = "`room_not_found`", body = ErrorBody),
        (status = 409, description = "`request_not_pending` (answered, withdrawn or expired), `max_guests_reached`", body = ErrorBody),
        (status = 410, description = "`room_ended`", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn accept(
    State(app): State<AppState>,
    Path((room_id, request_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let room = host_room(&app, &room_id, &headers).await?;
    let status = room.status().await?;
    let mut guests: std::collections::HashSet<String> = status
        .participants
        .iter()
        .filter(|p| p.role == Role::Guest)
        .map(|p| p.identity.clone())
        .collect();
    let ttl = room.tokens.default_ttl_secs();
    // The cap and the accept under one lock: two quick accepts cannot both take the last place.
    let mut requests = room.join_requests.lock().expect("join requests lock");
    if let Some(max) = requests.settings().max_guests {
        // Viewers already accepted count too, on air or on their way.
        guests.extend(requests.accepted_identities());
        if guests.len() >= max as usize {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "max_guests_reached",
                format!(
                    "{} guests are on air or on their way, the most this room takes \
                     (max_guests = {max}); remove one or raise max_guests first",
                    guests.len()
                ),
            ));
        }
    }
    let identity = requests
        .accept(Instant::now(), &request_id, |name| {
            let identity = format!("req-{}", random_id(6));
            let (token, expires_at) = room.tokens.invite(&identity, Some(name.to_string()), ttl);
            (identity, token, expires_at)
        })
        .map_err(request_error)?;
    drop(requests);
    room.notify(RoomNotice::JoinRequestClosed {
        request_id: request_id.clone(),
        outcome: "accepted",
    });
    tracing::info!(room = %room_id, request = %request_id, identity = %identity, "request to join accepted");
    Ok(Json(Accepted {
        request_id,
        identity,
    })
    .into_response())
}

/// `POST /api/v1/rooms/{id}/requests/{request_id}/decline` (host).
#[utoipa::path(
    post,
    path = "/api/v1/rooms/{room_id}/requests/{request_id}/decline",
    tag = "access",
    summary = "Decline a request (its address may not ask again for a minute)",
    params(("room_id" = String, Path, description = "The room id"), ("request_id" = String, Path, description = "The request")),
    responses(
        (status = 204, description = "Declined"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the host token", body = ErrorBody),
        (status = 404, description = "`room_not_found`", body = ErrorBody),
        (status = 409, description = "`request_not_pending`", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn decline(
    State(app): State<AppState>,
    Path((room_id, request_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let room = host_room(&app, &room_id, &headers).await?;
    room.join_requests
        .lock()
        .expect("join requests lock")
        .decline(Instant::now(), &request_id)
        .map_err(request_error)?;
    room.notify(RoomNotice::JoinRequestClosed {
        request_id,
        outcome: "declined",
    });
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn secret_of(headers: &HeaderMap) -> Result<&str, ApiError> {
    super::auth::bearer(headers).ok_or_else(|| {
        ApiError::unauthorized("send the request's secret as Authorization: Bearer SECRET")
    })
}

/// `DELETE /api/v1/rooms/{id}/requests/{request_id}` (the viewer, with its secret): withdraws.
#[utoipa::path(
    delete,
    path = "/api/v1/rooms/{room_id}/requests/{request_id}",
    tag = "access",
    summary = "Withdraw a request (the viewer, with its secret)",
    params(("room_id" = String, Path, description = "The room id"), ("request_id" = String, Path, description = "The request")),
    responses(
        (status = 204, description = "Withdrawn"),
        (status = 401, description = "`unauthorized`: no or wrong secret", body = ErrorBody),
        (status = 404, description = "`room_not_found`, `request_not_found`", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn withdraw(
    State(app): State<AppState>,
    Path((room_id, request_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let room = find_room(&app, &room_id).await?;
    let secret = secret_of(&headers)?;
    // Only a waiting request can be withdrawn: the host's list loses it.
    room.join_requests
        .lock()
        .expect("join requests lock")
        .withdraw(Instant::now(), &request_id, secret)
        .map_err(request_error)?;
    room.notify(RoomNotice::JoinRequestClosed {
        request_id,
        outcome: "withdrawn",
    });
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/v1/rooms/{id}/requests/{request_id}/events` (the viewer, with its secret): the
/// request's fate as Server-Sent Events — `pending` first, then one of `accepted`
/// (`{identity, token, expires_at, whip_url}`), `declined` (`{reason}`), `expired` or
/// `withdrawn`, and the stream closes.
#[utoipa::path(
    get,
    path = "/api/v1/rooms/{room_id}/requests/{request_id}/events",
    tag = "access",
    summary = "Follow a request to join (the viewer, with its secret)",
    params(("room_id" = String, Path, description = "The room id"), ("request_id" = String, Path, description = "The request")),
    responses(
        (status = 200, description = "Events `pending`, then `accepted` / `declined` / `expired` / `withdrawn`", content_type = "text/event-stream"),
        (status = 401, description = "`unauthorized`: no or wrong secret", body = ErrorBody),
        (status = 404, description = "`room_not_found`, `request_not_found`", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn follow(
    State(app): State<AppState>,
    Path((room_id, request_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let room = find_room(&app, &room_id).await?;
    let secret = secret_of(&headers)?;
    let (outcomes, expires_at) = room
        .join_requests
        .lock()
        .expect("join requests lock")
        .follow(Instant::now(), &request_id, secret)
        .map_err(request_error)?;
    let whip_url = format!("{}/whip/{room_id}", app.config.public_url());
    let shutdown = app.shutdown.clone();
    let rooms = app.rooms.clone();
    let state = Follow {
        outcomes,
        expires_at: tokio::time::Instant::from_std(expires_at),
        whip_url,
        sent_first: false,
        done: false,
    };
    let events = stream::unfold(state, move |mut state| {
        let shutdown = shutdown.clone();
        let rooms = rooms.clone();
        let room_id = room_id.clone();
        async move {
            let event = state.next(&shutdown, &rooms, &room_id).await?;
            Some((Ok::<_, Infallible>(event), state))
        }
    });
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

struct Follow {
    outcomes: tokio::sync::watch::Receiver<Outcome>,
    expires_at: tokio::time::Instant,
    whip_url: String,
    sent_first: bool,
    done: bool,
}

impl Follow {
    async fn next(
        &mut self,
        shutdown: &tokio_util::sync::CancellationToken,
        rooms: &crate::room::registry::Rooms,
        room_id: &str,
    ) -> Option<Event> {
        if self.done {
            return None;
        }
        if !self.sent_first {
            self.sent_first = true;
            let outcome = self.outcomes.borrow_and_update().clone();
            return Some(self.event(outcome));
        }
        tokio::select! {
            _ = shutdown.cancelled() => None,
            changed = self.outcomes.changed() => {
                let outcome = match changed {
                    Ok(()) => self.outcomes.borrow_and_update().clone(),
                    // The room ended and took its requests with it.
                    Err(_) => Outcome::Declined { reason: "the room has ended".into() },
                };
                Some(self.event(outcome))
            }
            _ = tokio::time::sleep_until(self.expires_at) => {
                // Expiry is applied lazily: make it happen, then report it.
                if let Some(room) = rooms.get(room_id) {
                    room.join_requests.lock().expect("join requests lock").expire(Instant::now());
                }
                let outcome = self.outcomes.borrow_and_update().clone();
                let outcome = if outcome == Outcome::Pending { Outcome::Expired } else { outcome };
                Some(self.event(outcome))
            }
        }
    }

    fn event(&mut self, outcome: Outcome) -> Event {
        let name = match &outcome {
            Outcome::Pending => "pending",
            Outcome::Accepted { .. } => "accepted",
            Outcome::Declined { .. } => "declined",
            Outcome::Expired => "expired",
            Outcome::Withdrawn => "withdrawn",
        };
        self.done = outcome != Outcome::Pending;
        let mut data = serde_json::to_value(&outcome).unwrap_or_default();
        if matches!(outcome, Outcome::Accepted { .. }) {
            data["whip_url"] = self.whip_url.clone().into();
        }
        Event::default().event(name).data(data.to_string())
    }
}
