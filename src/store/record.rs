//! A room's durable record: what it needs to come back after a restart, and nothing about who
//! is in it (participants reconnect; their sessions cannot survive their server anyway).
//! Encoded as JSON: small, and readable with any tool when an operator has to look. Stream
//! keys never appear in it in plain text: each output URL is sealed whole ([`super::seal`]),
//! with its redacted form beside it for people reading the file.

use costream_mixer::control::{LayoutSpec, Look, OutputSpec, VideoSpec};
use serde::{Deserialize, Serialize};

use super::seal::{Sealed, StoreKey};
use super::StoreError;

/// Layout version of [`RoomRecord`]; a record of a newer version is skipped, not misread.
pub const RECORD_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomRecord {
    pub version: u32,
    pub room_id: String,
    pub name: String,
    pub video: VideoSpec,
    pub outputs: Vec<OutputRecord>,
    pub layout: LayoutSpec,
    pub look: Look,
    /// Identities the host removed, oldest first (the guest list forgets beyond its bound).
    pub banned: Vec<String>,
    pub shared_link_revoked: bool,
    /// What the host last asked for: live (go live again after a restart) or offline.
    pub live: bool,
    /// Unix seconds.
    pub created_at: u64,
    /// Every broadcast is recorded (`record: true` at creation).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub record: bool,
    /// The recording in progress (its session id): it goes on after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<String>,
}

/// One output. `url` is sealed; `internal` outputs (the built-in origin) keep no URL at all:
/// the origin hands out a fresh publish URL when the room comes back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputRecord {
    pub output_id: String,
    /// The URL redacted as the API shows it (no stream key), for people reading the store.
    pub shown: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<Sealed>,
    #[serde(default)]
    pub internal: bool,
}

impl OutputRecord {
    /// `spec` of room `room_id`, its URL sealed with `key`.
    pub fn seal(key: &StoreKey, room_id: &str, spec: &OutputSpec) -> Self {
        Self {
            output_id: spec.output_id.clone(),
            shown: costream_mixer::redact::redact_url(&spec.url),
            url: (!spec.internal)
                .then(|| key.seal(spec.url.as_bytes(), &context(room_id, &spec.output_id))),
            internal: spec.internal,
        }
    }

    /// The output's URL (`None` for an internal output); [`StoreError::WrongKey`] when it does
    /// not open with `key`.
    pub fn open(&self, key: &StoreKey, room_id: &str) -> Result<Option<String>, StoreError> {
        let Some(sealed) = &self.url else {
            return Ok(None);
        };
        let wrong = || StoreError::WrongKey {
            room_id: room_id.to_string(),
            output_id: self.output_id.clone(),
        };
        let plain = key
            .open(sealed, &context(room_id, &self.output_id))
            .ok_or_else(wrong)?;
        String::from_utf8(plain).map(Some).map_err(|_| wrong())
    }
}

/// Associated data of an output's sealed URL: it opens only in its own room and output.
fn context(room_id: &str, output_id: &str) -> Vec<u8> {
    format!("costream/room/{room_id}/output/{output_id}").into_bytes()
}

impl RoomRecord {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a room record always serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        #[derive(Deserialize)]
        struct Head {
            version: u32,
            room_id: String,
        }
        let head: Head = serde_json::from_slice(bytes).map_err(|e| StoreError::Unreadable {
            room_id: "?".into(),
            reason: e.to_string(),
        })?;
        if head.version != RECORD_VERSION {
            return Err(StoreError::Unreadable {
                room_id: head.room_id,
                reason: format!(
                    "record version {} (this server reads {RECORD_VERSION})",
                    head.version
                ),
            });
        }
        serde_json::from_slice(bytes).map_err(|e| StoreError::Unreadable {
            room_id: head.room_id,
            reason: e.to_string(),
        })
    }

    /// Checks that every sealed URL opens with `key`.
    pub fn check_key(&self, key: &StoreKey) -> Result<(), StoreError> {
        self.open_outputs(key).map(|_| ())
    }

    /// The outputs with their URLs opened (`None` URL for internal ones).
    pub fn open_outputs(
        &self,
        key: &StoreKey,
    ) -> Result<Vec<(String, Option<String>)>, StoreError> {
        self.outputs
            .iter()
            .map(|o| Ok((o.output_id.clone(), o.open(key, &self.room_id)?)))
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(key: &StoreKey) -> RoomRecord {
        RoomRecord {
            version: RECORD_VERSION,
            room_id: "r1".into(),
            name: "Friday show".into(),
            video: VideoSpec::default(),
            outputs: vec![
                OutputRecord::seal(
                    key,
                    "r1",
                    &OutputSpec::new("out0", "rtmp://cdn.example/live/SECRETKEY123?token=QSECRET"),
                ),
                OutputRecord::seal(
                    key,
                    "r1",
                    &OutputSpec {
                        output_id: "origin".into(),
                        url: "rtmp://127.0.0.1:1935/live/r1?key=ORIGINKEY".into(),
                        internal: true,
                    },
                ),
            ],
            layout: LayoutSpec::Pip { pin: None },
            look: Look {
                labels: true,
                background: "#1e2a38".into(),
                logo: Some("data:image/png;base64,iVBORw0KGgo=".into()),
                title: "Soon".into(),
            },
            banned: vec!["alice".into(), "bob".into()],
            shared_link_revoked: true,
            live: true,
            created_at: 1_700_000_000,
            record: false,
            recording: Some("rec-20261206t101952z-ab12".into()),
        }
    }

    #[test]
    fn records_round_trip_without_stream_keys_in_their_bytes() {
        let key = StoreKey::generate();
        let record = sample(&key);
        let bytes = record.encode();
        let text = String::from_utf8_lossy(&bytes);
        for secret in ["SECRETKEY123", "QSECRET", "ORIGINKEY"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("rtmp://cdn.example/live/***"), "{text}");
        let back = RoomRecord::decode(&bytes).unwrap();
        assert_eq!(back, record);
        assert_eq!(
            back.open_outputs(&key).unwrap(),
            vec![
                (
                    "out0".to_string(),
                    Some("rtmp://cdn.example/live/SECRETKEY123?token=QSECRET".to_string())
                ),
                ("origin".to_string(), None),
            ]
        );
    }

    #[test]
    fn a_wrong_key_or_a_damaged_record_is_a_clear_error() {
        let record = sample(&StoreKey::generate());
        let err = record.check_key(&StoreKey::generate()).unwrap_err();
        assert!(matches!(err, StoreError::WrongKey { .. }), "{err}");
        assert!(err.to_string().contains("room r1") && err.to_string().contains("out0"));
        assert!(RoomRecord::decode(b"{not json").is_err());
        let mut newer = serde_json::to_value(&record).unwrap();
        newer["version"] = 99.into();
        let err = RoomRecord::decode(&serde_json::to_vec(&newer).unwrap()).unwrap_err();
        assert!(err.to_string().contains("version 99"), "{err}");
    }
}
