//! Who may (re)join a room: the identities the host removed, and whether the shared guest
//! link still works. Pure; the room handle keeps one behind a lock and the edge consults it
//! before an offer reaches WebRTC, so a removed guest costs no peer connection.
//!
//! Why identities: every holder of the shared guest link presents the same token, so removal
//! could not stick to a person. Personal invites (and tokens minted by an app backend) carry
//! the person in `sub`; removing them bans that identity from the room. People who came through
//! the shared link get a generated identity each, so the host stops them by revoking the
//! link (new joins get `401`; those inside stay).

use std::collections::{HashSet, VecDeque};

use crate::access::{Claims, GUEST_IDENTITY, HOST_IDENTITY};
use crate::room::tokens::{random_id, Role};

/// Most identities one room remembers as banned; the oldest are forgotten beyond it, so a
/// host churning through removals cannot grow the server's memory without bound.
pub const MAX_BANNED: usize = 4096;
/// Longest identity accepted in a token or an invite.
pub const MAX_IDENTITY_LEN: usize = 128;

/// Why a token may not join this room although it is valid for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotWelcome {
    /// 403: the host removed this identity.
    #[error("the host removed {0:?} from this room; ask the host for a new invite")]
    Banned(String),
    /// 401: the token is the shared guest link, which the host revoked.
    #[error("the host revoked this room's shared guest link; ask the host for a personal invite")]
    SharedLinkRevoked,
}

#[derive(Debug, Default)]
pub struct GuestList {
    banned: HashSet<String>,
    /// Ban order, to forget the oldest beyond [`MAX_BANNED`].
    ban_order: VecDeque<String>,
    shared_link_revoked: bool,
    /// Sessions the host removed (newest last, at most [`MAX_BANNED`]): a client that lost its
    /// session and asks about it learns it was removed, not that the server restarted.
    removed_sessions: VecDeque<String>,
}

impl GuestList {
    /// The identity a participant joining as `role` with `claims` gets here: the token's
    /// `sub`, or a fresh one for the shared guest link (and for tokens without a subject), so
    /// each person who came through the link can be told apart and removed alone. Hosts are
    /// never refused: a room must not lock out whoever runs it.
    pub fn admit(&self, role: Role, claims: &Claims) -> Result<String, NotWelcome> {
        let sub = claims.sub.as_str();
        if role == Role::Host {
            let identity: String = sub.chars().take(MAX_IDENTITY_LEN).collect();
            return Ok(if identity.is_empty() {
                HOST_IDENTITY.to_string()
            } else {
                identity
            });
        }
        // A guest token naming itself after a room's own link gets an identity of its own.
        if sub == GUEST_IDENTITY {
            if self.shared_link_revoked {
                return Err(NotWelcome::SharedLinkRevoked);
            }
            return Ok(format!("guest-{}", random_id(6)));
        }
        if sub.is_empty() || sub == HOST_IDENTITY {
            return Ok(format!("anon-{}", random_id(6)));
        }
        let identity: String = sub.chars().take(MAX_IDENTITY_LEN).collect();
        if self.banned.contains(&identity) {
            return Err(NotWelcome::Banned(identity));
        }
        Ok(identity)
    }

    /// Bars `identity` from joining again as a guest (hosts are never refused, see
    /// [`GuestList::admit`]).
    pub fn ban(&mut self, identity: &str) {
        if !self.banned.insert(identity.to_string()) {
            return;
        }
        self.ban_order.push_back(identity.to_string());
        while self.ban_order.len() > MAX_BANNED {
            if let Some(oldest) = self.ban_order.pop_front() {
                self.banned.remove(&oldest);
            }
        }
    }

    /// Lets `identity` in again (the host invited them anew).
    pub fn unban(&mut self, identity: &str) {
        if self.banned.remove(identity) {
            self.ban_order.retain(|banned| banned != identity);
        }
    }

    pub fn is_banned(&self, identity: &str) -> bool {
        self.banned.contains(identity)
    }

    /// The host removed session `participant_id` (kept in memory only).
    pub fn session_removed(&mut self, participant_id: &str) {
        self.removed_sessions.push_back(participant_id.to_string());
        while self.removed_sessions.len() > MAX_BANNED {
            self.removed_sessions.pop_front();
        }
    }

    pub fn was_session_removed(&self, participant_id: &str) -> bool {
        self.removed_sessions.iter().any(|p| p == participant_id)
    }

    pub fn banned_count(&self) -> usize {
        self.banned.len()
    }

    /// New joins with the shared guest link are refused from now on.
    pub fn revoke_shared_link(&mut self) {
        self.shared_link_revoked = true;
    }

    pub fn shared_link_revoked(&self) -> bool {
        self.shared_link_revoked
    }

    /// The banned identities, oldest first (what the room store keeps).
    pub fn banned_in_order(&self) -> Vec<String> {
        self.ban_order.iter().cloned().collect()
    }

    /// A list as the room store kept it.
    pub fn restored(banned: &[String], shared_link_revoked: bool) -> Self {
        let mut list = GuestList {
            shared_link_revoked,
            ..GuestList::default()
        };
        for identity in banned {
            list.ban(identity);
        }
        list
    }
}

/// Checks an identity a host asks an invite for: 1 to [`MAX_IDENTITY_LEN`] characters of
/// letters, digits and `-_.@:`, and not one of the names the server gives its own tokens.
pub fn validate_identity(identity: &str) -> Result<(), String> {
    if identity.is_empty() || identity.len() > MAX_IDENTITY_LEN {
        return Err(format!(
            "identity must be 1 to {MAX_IDENTITY_LEN} characters long"
        ));
    }
    if !identity
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.@:".contains(c))
    {
        return Err("identity may only contain letters, digits and - _ . @ :".into());
    }
    if identity == HOST_IDENTITY || identity == GUEST_IDENTITY {
        return Err(format!(
            "identity {identity:?} is reserved for the room's own links"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Claims;

    fn token_of(identity: &str) -> Claims {
        Claims::participant("key", "r1", identity, None, false, 1_000, 60)
    }

    #[test]
    fn personal_tokens_keep_their_identity_and_removal_sticks() {
        let mut list = GuestList::default();
        assert_eq!(
            list.admit(Role::Guest, &token_of("alice")),
            Ok("alice".into())
        );
        list.ban("alice");
        assert_eq!(
            list.admit(Role::Guest, &token_of("alice")),
            Err(NotWelcome::Banned("alice".into()))
        );
        assert_eq!(
            list.admit(Role::Guest, &token_of("bob")),
            Ok("bob".into()),
            "others"
        );
        list.unban("alice");
        assert_eq!(
            list.admit(Role::Guest, &token_of("alice")),
            Ok("alice".into())
        );
    }

    #[test]
    fn shared_link_guests_are_told_apart_until_the_link_is_revoked() {
        let mut list = GuestList::default();
        let first = list.admit(Role::Guest, &token_of(GUEST_IDENTITY)).unwrap();
        let second = list.admit(Role::Guest, &token_of(GUEST_IDENTITY)).unwrap();
        assert_ne!(first, second);
        assert!(first.starts_with("guest-"), "{first}");
        // Banning one generated identity does not stop the link; revoking does.
        list.ban(&first);
        assert!(list.admit(Role::Guest, &token_of(GUEST_IDENTITY)).is_ok());
        list.revoke_shared_link();
        assert_eq!(
            list.admit(Role::Guest, &token_of(GUEST_IDENTITY)),
            Err(NotWelcome::SharedLinkRevoked)
        );
        assert!(
            list.admit(Role::Guest, &token_of("carol")).is_ok(),
            "invites still work"
        );
        assert!(list
            .admit(Role::Guest, &token_of(""))
            .unwrap()
            .starts_with("anon-"));
    }

    #[test]
    fn the_host_is_never_refused_and_the_list_is_bounded() {
        let mut list = GuestList::default();
        list.ban(HOST_IDENTITY);
        list.revoke_shared_link();
        assert_eq!(
            list.admit(Role::Host, &token_of(HOST_IDENTITY)),
            Ok(HOST_IDENTITY.into())
        );
        // A guest token claiming the host's identity is someone else.
        assert!(list
            .admit(Role::Guest, &token_of(HOST_IDENTITY))
            .unwrap()
            .starts_with("anon-"));
        for i in 0..MAX_BANNED + 10 {
            list.ban(&format!("p{i}"));
        }
        assert_eq!(list.banned_count(), MAX_BANNED);
        assert!(!list.is_banned("p0"), "oldest forgotten");
        assert!(list.is_banned(&format!("p{}", MAX_BANNED + 9)));
        list.ban("p20");
        assert_eq!(list.banned_count(), MAX_BANNED, "re-banning adds nothing");
    }

    #[test]
    fn a_stored_list_comes_back_the_same() {
        let mut list = GuestList::default();
        list.ban("alice");
        list.ban("bob");
        list.revoke_shared_link();
        let back = GuestList::restored(&list.banned_in_order(), list.shared_link_revoked());
        assert_eq!(back.banned_in_order(), ["alice", "bob"]);
        assert!(back.shared_link_revoked() && back.is_banned("bob"));
    }

    #[test]
    fn long_subjects_are_cut_and_invite_identities_checked() {
        let list = GuestList::default();
        let long = "x".repeat(1000);
        assert_eq!(
            list.admit(Role::Guest, &token_of(&long)).unwrap().len(),
            MAX_IDENTITY_LEN
        );
        assert!(validate_identity("alice@example.com").is_ok());
        assert!(validate_identity("").is_err());
        assert!(validate_identity("a b").is_err());
        assert!(validate_identity("host").is_err());
        assert!(validate_identity("guest").is_err());
        assert!(validate_identity(&"a".repeat(MAX_IDENTITY_LEN + 1)).is_err());
    }
}
