//! Readiness and the mixer pool's view: `GET /readyz`, `GET /api/v1/pool`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::ApiError;
use super::AppState;
use crate::access::Claims;
use crate::pool::Refusal;

/// 200 while this server admits new rooms; 503 once it drains (after SIGTERM), so a load
/// balancer sends newcomers elsewhere while live rooms finish here.
pub async fn readyz(State(app): State<AppState>) -> Response {
    if app.rooms.pool().is_draining() {
        ApiError::refused(&Refusal::Draining).into_response()
    } else {
        (StatusCode::OK, "ready").into_response()
    }
}

/// Capacity, what live rooms reserved, and the warm mixers (an operator view on a keyed
/// server: `roomList` or `roomCreate`).
pub async fn view(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<crate::pool::PoolView>, ApiError> {
    super::auth::require_operator(&headers, app.rooms.access(), Claims::require_list)?;
    Ok(Json(app.rooms.pool().view()))
}
