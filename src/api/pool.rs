//! Readiness and the mixer pool's view: `GET /readyz`, `GET /api/v1/pool`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::access::Claims;
use crate::pool::Refusal;

/// 200 while this server admits new rooms; 503 once it drains (after SIGTERM), so a load
/// balancer sends newcomers elsewhere while live rooms finish here.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "server",
    summary = "Readiness",
    responses(
        (status = 200, description = "Admitting rooms", body = String, content_type = "text/plain"),
        (status = 503, description = "`draining`: after SIGTERM", body = ErrorBody),
    ),
)]
pub async fn readyz(State(app): State<AppState>) -> Response {
    if app.rooms.pool().is_draining() {
        ApiError::refused(&Refusal::Draining).into_response()
    } else {
        (StatusCode::OK, "ready").into_response()
    }
}

/// Capacity, what live rooms reserved, and the warm mixers (an operator view on a keyed
/// server: `roomList` or `roomCreate`).
#[utoipa::path(
    get,
    path = "/api/v1/pool",
    tag = "server",
    summary = "The mixer pool",
    responses(
        (status = 200, description = "Capacity and reservations, in cores", body = super::openapi::wire::PoolView),
        (status = 401, description = "`unauthorized`: a keyed server needs an operator token", body = ErrorBody),
        (status = 403, description = "`forbidden`: the token grants neither `roomList` nor `roomCreate`", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub async fn view(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<crate::pool::PoolView>, ApiError> {
    super::auth::require_operator(&headers, app.rooms.access(), Claims::require_list)?;
    Ok(Json(app.rooms.pool().view()))
}
