//! Room ids and bearer tokens. Tokens are 128+ bits from the OS RNG, compared in constant time,
//! and never printed: `Debug` shows only a prefix-free placeholder.
//!
//! Every guest shares the room's guest token, so the token alone cannot say *which* guest is
//! asking. Ending a WHIP session therefore also takes a per-session key, an HMAC of the
//! participant id under a room secret: only the creator of the session got it (in the WHIP
//! `Location`), and the server keeps no per-session state for it.

use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

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

/// The two tokens of one room, and the secret its session keys derive from.
#[derive(Debug, Clone)]
pub struct RoomTokens {
    pub host: Token,
    pub guest: Token,
    session_secret: Token,
}

impl RoomTokens {
    pub fn generate() -> Self {
        Self {
            host: Token::generate(),
            guest: Token::generate(),
            session_secret: Token::generate(),
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

    /// The role a presented token grants, if any. Both are always compared so a guest token
    /// costs the same time as a host token.
    pub fn role_of(&self, candidate: &str) -> Option<Role> {
        let is_host = self.host.matches(candidate);
        let is_guest = self.guest.matches(candidate);
        if is_host {
            Some(Role::Host)
        } else if is_guest {
            Some(Role::Guest)
        } else {
            None
        }
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

    #[test]
    fn tokens_grant_their_role_and_nothing_else() {
        let tokens = RoomTokens::generate();
        assert_eq!(tokens.role_of(tokens.host.expose()), Some(Role::Host));
        assert_eq!(tokens.role_of(tokens.guest.expose()), Some(Role::Guest));
        assert_eq!(tokens.role_of("guess"), None);
        assert_eq!(tokens.role_of(""), None);
        let prefix = &tokens.host.expose()[..10];
        assert_eq!(tokens.role_of(prefix), None);
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
        let room = RoomTokens::generate();
        let key = room.session_key("p1");
        assert_eq!(key, room.session_key("p1"), "stable for the session");
        assert!(room.session_key_matches("p1", &key));
        assert!(
            !room.session_key_matches("p2", &key),
            "another participant's key"
        );
        assert!(!room.session_key_matches("p1", &key[..10]));
        assert!(!room.session_key_matches("p1", ""));
        let other_room = RoomTokens::generate();
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
