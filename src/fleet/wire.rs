//! The serve ↔ worker control protocol: JSON lines over one TCP connection per room placement.
//! Pure: message types, limits and the placement token; the IO lives in `link` and `worker`.
//!
//! serve opens the connection and says [`ToWorker::Open`] (room, epoch, a token signed with the
//! cluster secret); the worker answers [`FromWorker::Opened`] or [`FromWorker::Refused`]. From
//! then on, the mixer's commands and events cross it wrapped with the placement's epoch, and
//! either side ignores a message of another epoch. serve ends a placement with
//! [`ToWorker::Stop`]: the worker stops that mixer at once. A connection that ends without it
//! means serve was lost (killed, restarted, upgraded, cut off): the mixer keeps pushing,
//! orphaned, until a serve takes the placement over with [`ToWorker::Resume`], the lease names
//! another placement (fenced), or nobody has come for `--orphan-grace-secs`.
//!
//! Why a direct connection rather than a Redis stream per room: keyframe requests and layout
//! changes stay one network hop (no broker in the media control path); a worker killed outright
//! is noticed by serve the moment the kernel resets the connection (failover within the 3 s
//! bound without waiting for any TTL); and rooms already live keep their control path while Redis
//! is restarted or unreachable. Redis holds only what must be shared: the worker registry,
//! leases and epochs.

use costream_mixer::control::{Command, Event, VideoSpec};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Version of this protocol; a peer of another version is refused with a log line.
/// Includes the mixer protocol it carries.
pub const PROTOCOL: u32 = 3 + costream_mixer::control::PROTOCOL_VERSION * 100;

/// The first line (`Open`) must be this short: it comes before any authentication.
pub const MAX_OPEN_LINE: usize = 16 * 1024;
/// Later lines: a room's look carries its logo (≤ 256 KiB as a data URI), nothing else is large.
pub const MAX_LINE: usize = 1024 * 1024;

/// A worker's refusal of a `Resume` whose placement exists but is not orphaned (yet) says this.
pub const NOT_ORPHANED: &str = "is not orphaned";

/// serve → worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    /// Run a mixer for `room_id` under placement `epoch`. First line, once.
    Open {
        protocol: u32,
        /// [`PlacementClaims`] signed with the cluster secret (empty: a cluster without one).
        token: String,
        room_id: String,
        epoch: u64,
        video: VideoSpec,
        /// Participants at go-live (the worker's admission charges at least its reserve).
        inputs: u32,
        /// serve keeps its rooms across restarts (a store): when it is lost, the mixer stays on
        /// air for the next serve to take over. Otherwise nobody ever would: it stops.
        #[serde(default)]
        resumable: bool,
    },
    /// Take over placement `epoch` of `room_id`, orphaned on this worker when its serve was
    /// lost; its mixer is still pushing. First line, instead of `Open`; the token is the same.
    Resume {
        protocol: u32,
        token: String,
        room_id: String,
        epoch: u64,
    },
    /// A command for this placement's mixer.
    Command { epoch: u64, command: Command },
    /// serve lets go of the placement (the room stopped or moved): stop the mixer now. Without
    /// it, a closed connection leaves the mixer orphaned for a serve to take over.
    Stop { epoch: u64 },
}

/// worker → serve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromWorker {
    /// The mixer is attached; its events follow.
    Opened {
        protocol: u32,
        worker_id: String,
        version: String,
        #[serde(default)]
        pid: Option<u32>,
        binary: String,
        warm: bool,
        /// Answer to `Resume`: the mixer was already running (it is `Start`ed already; the
        /// worker answers the room's `Start` from what it remembers).
        #[serde(default)]
        resumed: bool,
    },
    /// Not taken: wrong protocol, bad token, draining, full, or no mixer could start.
    Refused { protocol: u32, reason: String },
    /// An event of this placement's mixer.
    Event { epoch: u64, event: Event },
    /// The mixer ended (crash, fatal error, or fenced off because the room moved).
    Exited { epoch: u64, reason: String },
    /// The worker is alive (every second): serve moves a room whose worker falls silent.
    Alive,
    /// The worker is draining and its deadline has come: serve starts the room's mixer on
    /// another worker and stops this one once the successor has taken every output over. The
    /// lease moves to the successor meanwhile; this placement is not fenced for it.
    Moving { epoch: u64 },
}

/// What a placement token asserts: this serve may run `sub` at `epoch` on worker `wid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementClaims {
    /// The room.
    pub sub: String,
    pub epoch: u64,
    /// The worker it is for (a token seen on the wire cannot open the room elsewhere).
    pub wid: String,
    pub aud: String,
    pub exp: u64,
}

const AUDIENCE: &str = "costream-worker";
/// A token only has to survive the connect and handshake.
const TOKEN_TTL_SECS: u64 = 60;

/// Signs a placement token, or returns an empty one when the cluster has no secret.
pub fn placement_token(
    secret: Option<&[u8]>,
    room_id: &str,
    epoch: u64,
    worker_id: &str,
    now_unix: u64,
) -> String {
    let Some(secret) = secret else {
        return String::new();
    };
    let claims = PlacementClaims {
        sub: room_id.to_string(),
        epoch,
        wid: worker_id.to_string(),
        aud: AUDIENCE.to_string(),
        exp: now_unix + TOKEN_TTL_SECS,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("HS256 signing of plain claims cannot fail")
}

/// Checks that `token` allows `room_id` at `epoch` (always true without a secret).
pub fn verify_placement(
    secret: Option<&[u8]>,
    token: &str,
    room_id: &str,
    epoch: u64,
    worker_id: &str,
) -> Result<(), String> {
    let Some(secret) = secret else {
        return Ok(());
    };
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<PlacementClaims>(
        token,
        &DecodingKey::from_secret(secret),
        &validation,
    )
    .map_err(|e| {
        format!(
            "placement token rejected ({e}); do serve and worker share COSTREAM_CLUSTER_SECRET?"
        )
    })?
    .claims;
    if claims.sub != room_id || claims.epoch != epoch || claims.wid != worker_id {
        return Err("placement token is for another room, epoch or worker".into());
    }
    Ok(())
}

/// One message as a JSON line.
pub fn encode<T: Serialize>(msg: &T) -> String {
    costream_mixer::control::encode_line(msg)
}

pub fn decode<T: for<'de> Deserialize<'de>>(line: &str) -> Result<T, serde_json::Error> {
    costream_mixer::control::decode_line(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn tokens_bind_room_epoch_and_worker() {
        let now = jsonwebtoken::get_current_timestamp();
        let token = placement_token(Some(SECRET), "r1", 7, "w1", now);
        assert!(verify_placement(Some(SECRET), &token, "r1", 7, "w1").is_ok());
        assert!(verify_placement(Some(SECRET), &token, "r1", 8, "w1").is_err());
        assert!(verify_placement(Some(SECRET), &token, "r2", 7, "w1").is_err());
        assert!(verify_placement(Some(SECRET), &token, "r1", 7, "w2").is_err());
        let other = b"another secret of 32 characters!";
        assert!(verify_placement(Some(other), &token, "r1", 7, "w1").is_err());
        assert!(verify_placement(Some(SECRET), "", "r1", 7, "w1").is_err());
        let expired = placement_token(Some(SECRET), "r1", 7, "w1", now - 3600);
        assert!(verify_placement(Some(SECRET), &expired, "r1", 7, "w1").is_err());
        // A cluster without a secret (loopback only) needs no token.
        assert_eq!(placement_token(None, "r1", 7, "w1", now), "");
        assert!(verify_placement(None, "", "r1", 7, "w1").is_ok());
    }

    #[test]
    fn messages_are_tagged_lines_that_round_trip() {
        let open = ToWorker::Open {
            protocol: PROTOCOL,
            token: String::new(),
            room_id: "r1".into(),
            epoch: 3,
            video: VideoSpec::default(),
            inputs: 2,
            resumable: true,
        };
        let line = encode(&open);
        assert!(line.starts_with(r#"{"type":"open""#), "{line}");
        assert_eq!(decode::<ToWorker>(&line).unwrap(), open);
        let event = FromWorker::Event {
            epoch: 3,
            event: Event::KeyframeRequest {
                input_id: "in0".into(),
            },
        };
        assert_eq!(decode::<FromWorker>(&encode(&event)).unwrap(), event);
        assert!(decode::<ToWorker>(r#"{"type":"open"}"#).is_err());
    }
}
