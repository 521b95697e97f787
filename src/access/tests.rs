use std::collections::BTreeMap;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::*;
use crate::config::{ApiSecret, AuthConfig};
use crate::room::tokens::Role;

const KEY: &str = "APIdevkey";
const SECRET: &str = "a-secret-of-at-least-thirty-two-characters";

fn keyed() -> Access {
    Access::from_config(&AuthConfig {
        keys: BTreeMap::from([(KEY.to_string(), ApiSecret::new(SECRET))]),
        ..AuthConfig::default()
    })
}

/// HS256 by hand (HMAC-SHA256 over base64url(header).base64url(payload)), independent of the
/// JWT library the server uses: what any other language's LiveKit SDK produces.
fn independent_jwt(secret: &str, payload: serde_json::Value, alg: &str) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = serde_json::json!({"alg": alg, "typ": "JWT"});
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()))
}

#[test]
fn room_tokens_are_jwts_for_host_and_guest_of_that_room() {
    let access = keyed();
    let (host, guest) = access.room_tokens("r1");
    assert_eq!(host.split('.').count(), 3);
    let host = access.verify(&host).unwrap();
    let guest = access.verify(&guest).unwrap();
    assert_eq!(host.role_in("r1"), Ok(Role::Host));
    assert_eq!(guest.role_in("r1"), Ok(Role::Guest));
    assert_eq!(guest.role_in("r2"), Err(Denied::OtherRoom));
    assert_eq!(host.iss, KEY);
    assert!(host.exp > unix_now() + 3600, "a day by default");
}

#[test]
fn a_token_minted_by_an_independent_implementation_is_accepted() {
    let now = unix_now();
    let token = independent_jwt(
        SECRET,
        serde_json::json!({"iss": KEY, "sub": "alice", "name": "Alice", "nbf": now, "exp": now + 600,
            "video": {"room": "r1", "roomJoin": true, "canPublish": true}}),
        "HS256",
    );
    let claims = keyed().verify(&token).unwrap();
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.role_in("r1"), Ok(Role::Guest));
}

#[test]
fn expired_future_wrong_secret_unknown_key_and_alg_none_are_refused() {
    let access = keyed();
    let now = unix_now();
    let grant = serde_json::json!({"room": "r1", "roomAdmin": true});
    let expired = independent_jwt(
        SECRET,
        serde_json::json!({"iss": KEY, "exp": now - 120, "video": grant}),
        "HS256",
    );
    assert_eq!(access.verify(&expired), Err(Denied::Expired));
    let future = independent_jwt(
        SECRET,
        serde_json::json!({"iss": KEY, "nbf": now + 600, "exp": now + 1200, "video": grant}),
        "HS256",
    );
    assert_eq!(access.verify(&future), Err(Denied::NotYetValid));
    let forged = independent_jwt(
        "another-secret-of-at-least-thirty-two-chars",
        serde_json::json!({"iss": KEY, "exp": now + 600, "video": grant}),
        "HS256",
    );
    assert!(matches!(access.verify(&forged), Err(Denied::Invalid(_))));
    let unknown = independent_jwt(
        SECRET,
        serde_json::json!({"iss": "someone-else", "exp": now + 600, "video": grant}),
        "HS256",
    );
    assert!(
        matches!(access.verify(&unknown), Err(Denied::Invalid(m)) if m.contains("unknown API key"))
    );
    // "alg": "none" with an empty signature: never accepted.
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&serde_json::json!({"iss": KEY, "exp": now + 600, "video": grant}).to_string())
    );
    assert!(matches!(access.verify(&none), Err(Denied::Invalid(_))));
    for garbage in ["", "abc", "a.b.c", "....", "Bearer x"] {
        assert!(
            matches!(access.verify(garbage), Err(Denied::Invalid(_))),
            "{garbage:?}"
        );
    }
}

#[test]
fn operators_need_a_creation_grant_on_a_keyed_server_only() {
    let access = keyed();
    assert_eq!(
        access.operator(None, Claims::require_create),
        Err(OperatorDenied::Missing)
    );
    let creator = access
        .mint(&Claims::room_creator(KEY, "ops", unix_now(), 600))
        .unwrap();
    assert_eq!(
        access.operator(Some(&creator), Claims::require_create),
        Ok(())
    );
    let (host, _) = access.room_tokens("r1");
    assert!(matches!(
        access.operator(Some(&host), Claims::require_create),
        Err(OperatorDenied::Grant(_))
    ));
    let open = Access::from_config(&AuthConfig::default());
    assert!(!open.is_keyed());
    assert_eq!(open.operator(None, Claims::require_create), Ok(()));
    // An open server still hands out JWTs, signed by a key of its own.
    let (host, _) = open.room_tokens("r1");
    assert_eq!(open.verify(&host).unwrap().role_in("r1"), Ok(Role::Host));
    assert!(keyed().verify(&host).is_err(), "another server's key");
}

#[test]
fn debug_never_shows_a_secret() {
    let shown = format!("{:?}", keyed());
    assert!(shown.contains(KEY) && !shown.contains(SECRET), "{shown}");
}
