//! Bearer-token checks at the edge: 401 for a missing or wrong token, 403 for a guest asking
//! for a host-only action.

use axum::http::{header, HeaderMap};

use super::error::ApiError;
use crate::room::tokens::{bearer_token, Role};
use crate::room::RoomHandle;

pub fn role(headers: &HeaderMap, room: &RoomHandle) -> Result<Role, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::unauthorized(
                "missing Authorization header; send \"Authorization: Bearer <host or guest token>\"",
            )
        })?
        .to_str()
        .map_err(|_| ApiError::unauthorized("Authorization header is not valid text"))?;
    let token = bearer_token(value)
        .ok_or_else(|| ApiError::unauthorized("Authorization must be \"Bearer <token>\""))?;
    room.tokens
        .role_of(token)
        .ok_or_else(|| ApiError::unauthorized("the token is not valid for this room"))
}

pub fn require_host(headers: &HeaderMap, room: &RoomHandle) -> Result<(), ApiError> {
    match role(headers, room)? {
        Role::Host => Ok(()),
        Role::Guest => Err(ApiError::forbidden(
            "only the host can do this; use the host token",
        )),
    }
}
