//! Access-token claims in LiveKit's layout, and what they allow. Pure: no keys, no clock.
//!
//! Why LiveKit's layout: an app backend that already mints LiveKit tokens (server SDKs exist
//! for every language) mints costream tokens unchanged. `iss` is the API key, `sub` the
//! participant identity, and the `video` grant says what the bearer may do: `room` +
//! `roomJoin` joins that room (a guest), `room` + `roomAdmin` runs it (the host),
//! `roomCreate` creates rooms (an operator, or a "room creation link").

use serde::{Deserialize, Serialize};

use crate::room::tokens::Role;

/// The JWT payload. Unknown claims (LiveKit's `metadata`, `sha256`, `kind`, …) are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The API key that signed the token.
    pub iss: String,
    /// The participant's identity (empty for operator tokens).
    #[serde(default)]
    pub sub: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Not before (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Expiry (Unix seconds); required.
    pub exp: u64,
    #[serde(default)]
    pub video: VideoGrant,
}

/// LiveKit's `video` grant (camelCase on the wire). `None` = not granted, except
/// `canPublish` / `canSubscribe`, which LiveKit treats as granted when absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VideoGrant {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_join: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_admin: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_create: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_list: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_publish: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_subscribe: Option<bool>,
}

/// What a participant token must allow for a request beyond being in the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// WHIP: send media (`canPublish`).
    Publish,
    /// WHEP: receive another participant's media (`canSubscribe`).
    Subscribe,
}

/// Why a token was not accepted; the message tells the caller what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("the token is not a valid access token (a JWT signed with HS256 by one of this server's API keys): {0}")]
    Invalid(String),
    #[error("the token has expired; ask for a new one")]
    Expired,
    #[error("the token is not valid yet (nbf is in the future)")]
    NotYetValid,
    #[error("the token is for another room")]
    OtherRoom,
    #[error("the token grants neither roomJoin nor roomAdmin")]
    NoRoomGrant,
    #[error("the token does not grant {0}")]
    MissingGrant(&'static str),
}

impl Claims {
    /// What the token makes its bearer in `room_id`: host with `roomAdmin`, guest with
    /// `roomJoin`; the grant must name this room.
    pub fn role_in(&self, room_id: &str) -> Result<Role, Denied> {
        if self.video.room.as_deref() != Some(room_id) {
            return Err(Denied::OtherRoom);
        }
        if self.video.room_admin == Some(true) {
            Ok(Role::Host)
        } else if self.video.room_join == Some(true) {
            Ok(Role::Guest)
        } else {
            Err(Denied::NoRoomGrant)
        }
    }

    /// Whether it allows `capability`: LiveKit grants publish and subscribe unless the token
    /// says `false`.
    pub fn allows(&self, capability: Capability) -> Result<(), Denied> {
        let (granted, name) = match capability {
            Capability::Publish => (self.video.can_publish, "canPublish"),
            Capability::Subscribe => (self.video.can_subscribe, "canSubscribe"),
        };
        if granted == Some(false) {
            Err(Denied::MissingGrant(name))
        } else {
            Ok(())
        }
    }

    /// Whether it may create rooms.
    pub fn require_create(&self) -> Result<(), Denied> {
        if self.video.room_create == Some(true) {
            Ok(())
        } else {
            Err(Denied::MissingGrant("roomCreate"))
        }
    }

    /// Whether it may see server-wide views (the pool): `roomList` or `roomCreate`.
    pub fn require_list(&self) -> Result<(), Denied> {
        if self.video.room_list == Some(true) || self.video.room_create == Some(true) {
            Ok(())
        } else {
            Err(Denied::MissingGrant("roomList"))
        }
    }

    /// A participant token for `room`: the host's (`roomAdmin`) or a guest's (`roomJoin`).
    pub fn participant(
        api_key: &str,
        room: &str,
        identity: &str,
        name: Option<String>,
        host: bool,
        now: u64,
        ttl_secs: u64,
    ) -> Claims {
        Claims {
            iss: api_key.to_string(),
            sub: identity.to_string(),
            name,
            nbf: Some(now),
            exp: now.saturating_add(ttl_secs),
            video: VideoGrant {
                room: Some(room.to_string()),
                room_join: Some(true),
                room_admin: host.then_some(true),
                can_publish: Some(true),
                can_subscribe: Some(true),
                ..VideoGrant::default()
            },
        }
    }

    /// A token that may create rooms (and see the pool): an operator's, or a room creation
    /// link's.
    pub fn room_creator(api_key: &str, identity: &str, now: u64, ttl_secs: u64) -> Claims {
        Claims {
            iss: api_key.to_string(),
            sub: identity.to_string(),
            name: None,
            nbf: Some(now),
            exp: now.saturating_add(ttl_secs),
            video: VideoGrant {
                room_create: Some(true),
                room_list: Some(true),
                ..VideoGrant::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_is_host_join_is_guest_and_only_in_the_named_room() {
        let host = Claims::participant("k", "r1", "h", None, true, 0, 60);
        let guest = Claims::participant("k", "r1", "g", None, false, 0, 60);
        assert_eq!(host.role_in("r1"), Ok(Role::Host));
        assert_eq!(guest.role_in("r1"), Ok(Role::Guest));
        assert_eq!(host.role_in("r2"), Err(Denied::OtherRoom));
        assert_eq!(guest.role_in("r2"), Err(Denied::OtherRoom));
        assert_eq!(
            guest.require_create(),
            Err(Denied::MissingGrant("roomCreate"))
        );
    }

    #[test]
    fn publish_and_subscribe_are_granted_unless_the_token_says_false() {
        let mut viewer = Claims::participant("k", "r1", "v", None, false, 0, 60);
        viewer.video.can_publish = None;
        assert_eq!(viewer.allows(Capability::Publish), Ok(()));
        viewer.video.can_publish = Some(false);
        assert_eq!(
            viewer.allows(Capability::Publish),
            Err(Denied::MissingGrant("canPublish"))
        );
        assert_eq!(viewer.allows(Capability::Subscribe), Ok(()));
        viewer.video.can_subscribe = Some(false);
        assert_eq!(
            viewer.allows(Capability::Subscribe),
            Err(Denied::MissingGrant("canSubscribe"))
        );
    }

    #[test]
    fn a_room_grant_without_join_or_admin_grants_nothing() {
        let mut claims = Claims::participant("k", "r1", "g", None, false, 0, 60);
        claims.video.room_join = Some(false);
        assert_eq!(claims.role_in("r1"), Err(Denied::NoRoomGrant));
    }

    #[test]
    fn creators_create_and_list_but_join_no_room() {
        let creator = Claims::room_creator("k", "ops", 0, 60);
        assert_eq!(creator.require_create(), Ok(()));
        assert_eq!(creator.require_list(), Ok(()));
        assert_eq!(creator.role_in("r1"), Err(Denied::OtherRoom));
    }

    #[test]
    fn livekit_json_layout_round_trips() {
        // As LiveKit's server SDKs write it (camelCase grant, extra claims).
        let json = r#"{"iss":"APIkey","sub":"alice","name":"Alice","nbf":1,"exp":2,
            "metadata":"x","video":{"room":"r1","roomJoin":true,"canPublish":true,
            "canPublishSources":["camera"]}}"#;
        let claims: Claims = serde_json::from_str(json).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.video.room_join, Some(true));
        assert_eq!(claims.role_in("r1"), Ok(Role::Guest));
        let back = serde_json::to_value(&claims).unwrap();
        assert_eq!(back["video"]["roomJoin"], true);
        assert!(back["video"].get("roomAdmin").is_none());
    }
}
