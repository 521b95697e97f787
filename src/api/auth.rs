//! Bearer-token checks at the edge: 401 for a missing or wrong token, 403 for a guest asking
//! for a host-only action.

use axum::http::{header, HeaderMap};

use super::error::ApiError;
use crate::access::{Access, Capability, Claims, Denied, OperatorDenied};
use crate::room::guest_list::NotWelcome;
use crate::room::tokens::{bearer_token, Role};
use crate::room::RoomHandle;

/// `403 removed`: the host removed this identity from the room.
pub fn removed_error(identity: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::FORBIDDEN,
        "removed",
        NotWelcome::Banned(identity.to_string()).to_string(),
    )
}

/// Who a WHIP or WHEP request is in the room: its role, its identity there, and the display
/// name its token carries.
pub struct Participant {
    pub role: Role,
    pub identity: String,
    pub name: Option<String>,
}

/// The participant behind a request that must also be allowed `capability` (WHIP publishes,
/// WHEP subscribes): `403` when the token says `canPublish` / `canSubscribe` false or the host
/// removed this identity, `401` for a shared guest link the host revoked.
pub fn participant_allowing(
    headers: &HeaderMap,
    room: &RoomHandle,
    capability: Capability,
) -> Result<Participant, ApiError> {
    let (role, claims) = room
        .tokens
        .claims_in_room(presented_token(headers)?)
        .map_err(|denied| ApiError::unauthorized(denied.to_string()))?;
    claims
        .allows(capability)
        .map_err(|denied| ApiError::forbidden(denied.to_string()))?;
    let identity = room
        .guests
        .lock()
        .expect("guest list lock")
        .admit(role, &claims)
        .map_err(|refused| match refused {
            NotWelcome::Banned(identity) => removed_error(&identity),
            NotWelcome::SharedLinkRevoked => ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "link_revoked",
                refused.to_string(),
            ),
        })?;
    Ok(Participant {
        role,
        identity,
        name: claims.name,
    })
}

pub fn role(headers: &HeaderMap, room: &RoomHandle) -> Result<Role, ApiError> {
    room.tokens
        .role_of(presented_token(headers)?)
        .map_err(|denied| ApiError::unauthorized(denied.to_string()))
}

/// The request's bearer token; `401` saying what is wrong with the header otherwise.
fn presented_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::unauthorized(
                "missing Authorization header; send \"Authorization: Bearer <host or guest token>\"",
            )
        })?
        .to_str()
        .map_err(|_| ApiError::unauthorized("Authorization header is not valid text"))?;
    bearer_token(value)
        .ok_or_else(|| ApiError::unauthorized("Authorization must be \"Bearer <token>\""))
}

/// The bearer token of a request, if it has one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()
        .and_then(bearer_token)
}

/// An operator request (creating rooms, server-wide views) on a keyed server: `401` without a
/// valid token, `403` without the grant `need` checks. Anyone may on an open server.
pub fn require_operator(
    headers: &HeaderMap,
    access: &Access,
    need: fn(&Claims) -> Result<(), Denied>,
) -> Result<(), ApiError> {
    access.operator(bearer(headers), need).map_err(|e| match e {
        OperatorDenied::Missing => ApiError::unauthorized(
            "this server has API keys: send \"Authorization: Bearer <token>\" with a token \
             signed by one of them that grants roomCreate (`costream token create --room-create`)",
        ),
        OperatorDenied::Token(denied) => ApiError::unauthorized(denied.to_string()),
        OperatorDenied::Grant(denied) => ApiError::forbidden(denied.to_string()),
    })
}

pub fn require_host(headers: &HeaderMap, room: &RoomHandle) -> Result<(), ApiError> {
    match role(headers, room)? {
        Role::Host => Ok(()),
        Role::Guest => Err(ApiError::forbidden(
            "only the host can do this; use the host token",
        )),
    }
}
