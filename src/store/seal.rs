//! Stream keys at rest: XChaCha20-Poly1305 with a random 24-byte nonce per value (random nonces
//! are safe at this size, unlike ChaCha20-Poly1305's 12 bytes). The room and output ids are the
//! associated data, so a sealed URL copied into another record does not open there.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::StoreError;

/// Bytes of a store key.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

/// The key that seals stream keys. Never shown by `Debug`.
#[derive(Clone)]
pub struct StoreKey(Key);

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey(***)")
    }
}

/// A sealed value: nonce and ciphertext (with its tag), base64 in the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    pub nonce: String,
    pub data: String,
}

impl StoreKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(Key::from(bytes))
    }

    /// A key given as base64 (standard alphabet, padding optional); `origin` names where it
    /// came from in the error.
    pub fn from_base64(encoded: &str, origin: &str) -> Result<Self, StoreError> {
        let trimmed = encoded.trim().trim_end_matches('=');
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(trimmed)
            .map_err(|e| StoreError::BadKey {
                origin: origin.to_string(),
                reason: e.to_string(),
            })?;
        let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|b: Vec<u8>| StoreError::BadKey {
            origin: origin.to_string(),
            reason: format!("got {} bytes", b.len()),
        })?;
        Ok(Self(Key::from(bytes)))
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.as_slice())
    }

    /// Encrypts `plain`, bound to `context` (e.g. room and output id).
    pub fn seal(&self, plain: &[u8], context: &[u8]) -> Sealed {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let data = XChaCha20Poly1305::new(&self.0)
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: context,
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any message that fits in memory");
        Sealed {
            nonce: STANDARD.encode(nonce),
            data: STANDARD.encode(data),
        }
    }

    /// Decrypts a value sealed with this key and `context`; `None` when it does not open
    /// (another key, another context, or damaged).
    pub fn open(&self, sealed: &Sealed, context: &[u8]) -> Option<Vec<u8>> {
        let nonce = STANDARD.decode(&sealed.nonce).ok()?;
        let data = STANDARD.decode(&sealed.data).ok()?;
        if nonce.len() != NONCE_LEN {
            return None;
        }
        XChaCha20Poly1305::new(&self.0)
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &data,
                    aad: context,
                },
            )
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let key = StoreKey::generate();
        let sealed = key.seal(b"rtmp://cdn/live/SECRET", b"r1/out0");
        assert!(!sealed.data.contains("SECRET"));
        assert_eq!(
            key.open(&sealed, b"r1/out0").as_deref(),
            Some(&b"rtmp://cdn/live/SECRET"[..])
        );
        assert_eq!(key.open(&sealed, b"r2/out0"), None, "another room");
        assert_eq!(StoreKey::generate().open(&sealed, b"r1/out0"), None);
        let again = key.seal(b"rtmp://cdn/live/SECRET", b"r1/out0");
        assert_ne!(sealed.nonce, again.nonce, "a fresh nonce per value");
    }

    #[test]
    fn keys_round_trip_through_base64_and_bad_ones_are_named() {
        let key = StoreKey::generate();
        let back = StoreKey::from_base64(&key.to_base64(), "test").unwrap();
        let sealed = key.seal(b"x", b"");
        assert!(back.open(&sealed, b"").is_some());
        let short = StoreKey::from_base64("c2hvcnQ=", "[store] key").unwrap_err();
        assert!(short.to_string().contains("[store] key"), "{short}");
        assert!(StoreKey::from_base64("not base64!", "env").is_err());
        assert!(!format!("{key:?}").contains(&key.to_base64()));
    }
}
