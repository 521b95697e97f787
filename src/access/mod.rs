//! Who may do what: API keys and the access tokens (JWT, HS256, LiveKit's claim layout) they
//! sign. [`claims`] is the pure part (what a token allows); this module holds the keys, mints
//! and verifies.
//!
//! A server with keys is *keyed*: creating rooms and server-wide views need an operator token
//! (`roomCreate`). A server without keys runs *open* (anyone on its address may create rooms;
//! `config` only allows that on loopback or with `auth.open`), and signs its room tokens with a
//! key made up at start, so clients see the same JWTs either way.

pub mod claims;
pub mod cli;
pub mod destinations;
pub mod tickets;

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

pub use claims::{Capability, Claims, Denied, VideoGrant};

use crate::config::AuthConfig;
use crate::room::tokens::random_id;

/// Clock skew tolerated on `exp` and `nbf` between the minting backend and this server.
const LEEWAY_SECS: u64 = 30;
/// Identity of the host token the API hands out, and of the shared guest link's token.
pub const HOST_IDENTITY: &str = "host";
pub const GUEST_IDENTITY: &str = "guest";

/// The server's API keys.
pub struct Access {
    /// API key → secret.
    secrets: HashMap<String, String>,
    /// The key the server signs its own tokens with.
    signing_key: String,
    /// Operator tokens required (keys configured).
    keyed: bool,
    /// Lifetime of the tokens the API hands out.
    token_ttl_secs: u64,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("keys", &self.secrets.keys().collect::<Vec<_>>())
            .field("keyed", &self.keyed)
            .field("token_ttl_secs", &self.token_ttl_secs)
            .finish_non_exhaustive()
    }
}

impl Access {
    /// The configured keys (`auth.keys`); without any, a key and secret made up for this
    /// process (open mode).
    pub fn from_config(auth: &AuthConfig) -> Access {
        let (key, secret) = Self::made_up_key();
        Self::from_config_with_local_key(auth, key, secret)
    }

    /// A key and secret for an open server to sign its tokens with.
    pub fn made_up_key() -> (String, String) {
        (format!("local-{}", random_id(6)), random_id(32))
    }

    /// Like [`Access::from_config`], signing with `local_key` / `local_secret` when no keys
    /// are configured (the ones kept in the data directory, so tokens outlive a restart).
    pub fn from_config_with_local_key(
        auth: &AuthConfig,
        local_key: String,
        local_secret: String,
    ) -> Access {
        let mut secrets: HashMap<String, String> = auth
            .keys
            .iter()
            .map(|(key, secret)| (key.clone(), secret.expose().to_string()))
            .collect();
        let keyed = !secrets.is_empty();
        let signing_key = match auth.keys.keys().next() {
            Some(key) => key.clone(),
            None => {
                secrets.insert(local_key.clone(), local_secret);
                local_key
            }
        };
        Access {
            secrets,
            signing_key,
            keyed,
            token_ttl_secs: auth.token_ttl_secs,
        }
    }

    /// Whether operator tokens are required (keys are configured).
    pub fn is_keyed(&self) -> bool {
        self.keyed
    }

    /// Signs `claims` with the secret of `claims.iss` (HS256).
    pub fn mint(&self, claims: &Claims) -> Result<String, Denied> {
        let secret = self
            .secrets
            .get(&claims.iss)
            .ok_or_else(|| Denied::Invalid(format!("no API key {:?}", claims.iss)))?;
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .map_err(|e| Denied::Invalid(e.to_string()))
    }

    /// The host and shared-guest tokens of a new room, signed with the server's key.
    pub fn room_tokens(&self, room_id: &str) -> (String, String) {
        let now = unix_now();
        let mint = |identity: &str, host: bool| {
            let claims = Claims::participant(
                &self.signing_key,
                room_id,
                identity,
                None,
                host,
                now,
                self.token_ttl_secs,
            );
            self.mint(&claims)
                .expect("the signing key is one of the server's keys")
        };
        (mint(HOST_IDENTITY, true), mint(GUEST_IDENTITY, false))
    }

    /// A guest's personal token for `room_id` (an invite): signed with the server's key,
    /// expiring in `ttl_secs`. Returns the token and its expiry (Unix seconds).
    pub fn guest_token(
        &self,
        room_id: &str,
        identity: &str,
        name: Option<String>,
        ttl_secs: u64,
    ) -> (String, u64) {
        let claims = Claims::participant(
            &self.signing_key,
            room_id,
            identity,
            name,
            false,
            unix_now(),
            ttl_secs,
        );
        let token = self
            .mint(&claims)
            .expect("the signing key is one of the server's keys");
        (token, claims.exp)
    }

    /// The `Authorization` value of a webhook request with `body`, as LiveKit signs its
    /// webhooks (so its receivers verify ours unchanged): a JWT signed by API key `key` (the
    /// server's own key when `None`) whose `sha256` claim is the body's SHA-256 in standard
    /// base64, valid for 5 minutes. `None` for a key the server does not have.
    pub fn sign_webhook(&self, key: Option<&str>, body: &[u8]) -> Option<String> {
        use base64::Engine;
        use sha2::Digest;
        #[derive(serde::Serialize)]
        struct WebhookClaims<'a> {
            iss: &'a str,
            nbf: u64,
            exp: u64,
            sha256: String,
        }
        let key = key.unwrap_or(&self.signing_key);
        let secret = self.secrets.get(key)?;
        let now = unix_now();
        let claims = WebhookClaims {
            iss: key,
            nbf: now,
            exp: now + 300,
            sha256: base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body)),
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .ok()
    }

    /// A download ticket for `what` (see [`tickets`]), signed with the server's key; with its
    /// lifetime in seconds.
    pub fn ticket(&self, what: &str) -> (String, u64) {
        let secret = &self.secrets[&self.signing_key];
        let ttl = tickets::TICKET_TTL_SECS;
        (tickets::issue(secret, what, unix_now() + ttl), ttl)
    }

    /// Whether `ticket` allows `what` now.
    pub fn ticket_allows(&self, ticket: &str, what: &str) -> bool {
        let secret = &self.secrets[&self.signing_key];
        tickets::check(secret, ticket, what, unix_now())
    }

    /// Lifetime of the tokens the API hands out unless asked otherwise.
    pub fn token_ttl_secs(&self) -> u64 {
        self.token_ttl_secs
    }

    /// Checks a presented token: HS256, signed by the secret of the API key in its `iss`,
    /// within `nbf`..`exp` (± [`LEEWAY_SECS`]).
    pub fn verify(&self, token: &str) -> Result<Claims, Denied> {
        let issuer = unverified_issuer(token)?;
        let secret = self.secrets.get(&issuer).ok_or_else(|| {
            Denied::Invalid(format!(
                "it is signed by unknown API key {:?}",
                truncate(&issuer)
            ))
        })?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss"]);
        validation.set_issuer(&[issuer.as_str()]);
        jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_secret(secret.as_bytes()),
            &validation,
        )
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => Denied::Expired,
            ErrorKind::ImmatureSignature => Denied::NotYetValid,
            ErrorKind::InvalidSignature => {
                Denied::Invalid("the signature does not match its API key's secret".into())
            }
            _ => Denied::Invalid(e.to_string()),
        })
    }

    /// A token for the operator checks: `None` on an open server (no keys), where anyone on the
    /// server's (loopback) address is the operator.
    pub fn operator(
        &self,
        token: Option<&str>,
        need: fn(&Claims) -> Result<(), Denied>,
    ) -> Result<(), OperatorDenied> {
        if !self.keyed {
            return Ok(());
        }
        let token = token.ok_or(OperatorDenied::Missing)?;
        let claims = self.verify(token).map_err(OperatorDenied::Token)?;
        need(&claims).map_err(OperatorDenied::Grant)
    }
}

/// Why an operator request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorDenied {
    /// No bearer token (401).
    Missing,
    /// A token that does not verify (401).
    Token(Denied),
    /// A valid token without the grant (403).
    Grant(Denied),
}

/// The `iss` of a token before its signature is checked, only to find the secret to check it
/// with (LiveKit does the same); nothing else is read from an unverified token.
fn unverified_issuer(token: &str) -> Result<String, Denied> {
    #[derive(serde::Deserialize)]
    struct Issuer {
        iss: String,
    }
    let mut peek = Validation::new(Algorithm::HS256);
    peek.insecure_disable_signature_validation();
    peek.validate_exp = false;
    peek.validate_nbf = false;
    peek.required_spec_claims.clear();
    jsonwebtoken::decode::<Issuer>(token, &DecodingKey::from_secret(&[]), &peek)
        .map(|data| data.claims.iss)
        .map_err(|e| Denied::Invalid(e.to_string()))
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
