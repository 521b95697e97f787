//! Room ids and a room's bearer tokens. The tokens are access tokens (JWT, see `access`): the
//! API hands out a host token (`roomAdmin`) and a shared guest token (`roomJoin`) per room, and
//! any token signed by one of the server's API keys for this room is accepted as well. Never
//! printed: `Debug` shows only a placeholder.
//!
//! Every guest holding the shared guest token looks the same, so the token alone cannot say
//! *which* guest is asking. Ending a WHIP session therefore also takes a per-session key, an
//! HMAC of the participant id under a room secret: only the creator of the session got it (in
//! the WHIP `Location`), and the server keeps no per-session state for it.

use std::sync::Arc;

use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::access::{Access, Claims, Denied};

/// Who a token makes you in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Room admin: goes live, stops, removes guests, sees outputs.
    Host,
    /// Publishes and subscribes in this room only.
    Guest,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn generate() -> Self {
        Self(random_id(24))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A token of a known value, for the fuzz harnesses (which must be able to present it);
    /// real tokens come from [`Token::generate`].
    pub(crate) fn fixed(value: &str) -> Self {
        Self(value.to_string())
    }

    /// Constant-time comparison, so response timing does not leak how much of a guess matched.
    pub fn matches(&self, candidate: &str) -> bool {
        self.0.as_bytes().ct_eq(candidate.as_bytes()).into()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

/// The two tokens the API hands out for one room, the keys that check any token presented to
/// it, and the secret its session keys derive from.
#[derive(Debug, Clone)]
pub struct RoomTokens {
    room_id: String,
    pub host: Token,
    pub guest: Token,
    session_secret: Token,
    access: Arc<Access>,
}

impl RoomTokens {
    /// Mints the host and guest tokens of room `room_id`.
    pub fn new(room_id: &str, access: Arc<Access>) -> Self {
        let (host, guest) = access.room_tokens(room_id);
        Self {
            room_id: room_id.to_string(),
            host: Token(host),
            guest: Token(guest),
            session_secret: Token::generate(),
            access,
        }
    }

    /// The key that proves a request comes from whoever created `participant_id`'s session.
    pub fn session_key(&self, participant_id: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.session_secret.expose().as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(participant_id.as_bytes());
        let digest = mac.finalize().into_bytes();
        // 128 bits are as strong as the tokens themselves.
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16])
    }

    /// Constant-time check of a presented session key.
    pub fn session_key_matches(&self, participant_id: &str, candidate: &str) -> bool {
        self.session_key(participant_id)
            .as_bytes()
            .ct_eq(candidate.as_bytes())
            .into()
    }

    /// The role a presented token grants in this room: verified (signature, expiry), then
    /// `roomAdmin` = host, `roomJoin` = guest, for this room only.
    pub fn role_of(&self, candidate: &str) -> Result<Role, Denied> {
        self.claims_in_room(candidate).map(|(role, _)| role)
    }

    /// The role a token grants here and its claims (for checks beyond the role, such as
    /// `canPublish`).
    pub fn claims_in_room(&self, candidate: &str) -> Result<(Role, Claims), Denied> {
        let claims = self.access.verify(candidate)?;
        let role = claims.role_in(&self.room_id)?;
        Ok((role, claims))
    }

    /// A personal invite: a guest token for `identity`, expiring in `ttl_secs`; returns it and
    /// its expiry (Unix seconds).
    pub fn invite(&self, identity: &str, name: Option<String>, ttl_secs: u64) -> (String, u64) {
        self.access
            .guest_token(&self.room_id, identity, name, ttl_secs)
    }

    /// The server's default lifetime of the tokens it hands out.
    pub fn default_ttl_secs(&self) -> u64 {
        self.access.token_ttl_secs()
    }

    /// Fresh host and guest tokens for this room (the links handed out later).
    pub fn fresh(&self) -> (String, String) {
        self.access.room_tokens(&self.room_id)
    }
}

/// URL-safe random id of `bytes` random bytes.
pub fn random_id(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// Extracts the token of an `Authorization: Bearer <token>` header value.
pub fn bearer_token(header_value: &str) -> Option<&str> {
    let (scheme, token) = header_value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_access() -> Arc<Access> {
        Arc::new(Access::from_config(&crate::config::AuthConfig::default()))
    }

    #[test]
    fn tokens_grant_their_role_and_nothing_else() {
        let access = open_access();
        let tokens = RoomTokens::new("r1", access.clone());
        assert_eq!(tokens.role_of(tokens.host.expose()), Ok(Role::Host));
        assert_eq!(tokens.role_of(tokens.guest.expose()), Ok(Role::Guest));
        assert!(tokens.role_of("guess").is_err());
        assert!(tokens.role_of("").is_err());
        let prefix = &tokens.host.expose()[..10];
        assert!(tokens.role_of(prefix).is_err());
        let other = RoomTokens::new("r2", access);
        assert_eq!(
            tokens.role_of(other.host.expose()),
            Err(Denied::OtherRoom),
            "another room's host token"
        );
        assert!(!format!("{tokens:?}").contains(tokens.host.expose()));
    }

    #[test]
    fn tokens_are_unique_url_safe_and_hidden_in_debug() {
        let a = Token::generate();
        let b = Token::generate();
        assert_ne!(a, b);
        assert!(a.expose().len() >= 32);
        assert!(a
            .expose()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn session_keys_belong_to_one_participant_of_one_room() {
        let room = RoomTokens::new("r1", open_access());
        let key = room.session_key("p1");
        assert_eq!(key, room.session_key("p1"), "stable for the session");
        assert!(room.session_key_matches("p1", &key));
        assert!(
            !room.session_key_matches("p2", &key),
            "another participant's key"
        );
        assert!(!room.session_key_matches("p1", &key[..10]));
        assert!(!room.session_key_matches("p1", ""));
        let other_room = RoomTokens::new("r2", open_access());
        assert!(
            !other_room.session_key_matches("p1", &key),
            "another room's key"
        );
        assert!(key.len() >= 22);
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer   abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("abc"), None);
    }
}
