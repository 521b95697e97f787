//! One part of a recording as kept next to its file (`<part>.json`), and as the API shows it
//! (pure: no IO here).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A part's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PartState {
    /// Its mixer is writing it.
    Recording,
    /// Closed cleanly (stopped, or the broadcast ended).
    Complete,
    /// Its mixer died (or serve with it): the file plays up to the mixer's last whole
    /// fragment; the recording goes on in the next part.
    Interrupted,
    /// Could not be written (disk full, a write error): holds what was written before.
    Failed,
}

/// What `<part>.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    /// The part's id (`{session_id}-{part}`): the API's `recording_id`.
    pub recording_id: String,
    /// The recording it belongs to (one per start; parts follow mixer restarts).
    pub session_id: String,
    /// 1-based, in recording order.
    pub part: u32,
    /// Unix milliseconds.
    pub started_at_ms: u64,
    /// Unix milliseconds, once it is no longer written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at_ms: Option<u64>,
    pub state: PartState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One entry of `GET /api/v1/rooms/{id}/recordings`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RecordingView {
    /// Download it at `GET …/recordings/{recording_id}`.
    pub recording_id: String,
    /// The recording this part belongs to: a mixer restart during a recording starts a new
    /// part of the same session.
    pub session_id: String,
    pub part: u32,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// Wall-clock length: start to end (or to the file's last write, or now while recording).
    pub duration_s: f64,
    pub size_bytes: u64,
    pub state: PartState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `video/mp4` (fragmented MP4: H.264 + AAC).
    #[schema(value_type = String)]
    pub content_type: &'static str,
}

pub const CONTENT_TYPE: &str = "video/mp4";

/// Unix milliseconds of `t`.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl PartRecord {
    /// The API's view: `size` and `last_write` come from the file, `now` ends a running part.
    pub fn view(
        &self,
        size: u64,
        last_write: Option<SystemTime>,
        now: SystemTime,
    ) -> RecordingView {
        let end_ms = match (self.state, self.ended_at_ms) {
            (PartState::Recording, _) => unix_ms(now),
            (_, Some(ended)) => ended,
            (_, None) => last_write.map(unix_ms).unwrap_or(self.started_at_ms),
        };
        let started = UNIX_EPOCH + Duration::from_millis(self.started_at_ms);
        RecordingView {
            recording_id: self.recording_id.clone(),
            session_id: self.session_id.clone(),
            part: self.part,
            started_at: humantime::format_rfc3339_seconds(started).to_string(),
            duration_s: end_ms.saturating_sub(self.started_at_ms) as f64 / 1000.0,
            size_bytes: size,
            state: self.state,
            reason: self.reason.clone(),
            content_type: CONTENT_TYPE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(state: PartState, ended_at_ms: Option<u64>) -> PartRecord {
        PartRecord {
            recording_id: "rec-1".into(),
            session_id: "rec".into(),
            part: 1,
            started_at_ms: 1_000_000,
            ended_at_ms,
            state,
            reason: None,
        }
    }

    #[test]
    fn duration_runs_to_the_end_the_last_write_or_now() {
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        let now = at(1_010_000);
        let done = part(PartState::Complete, Some(1_004_500)).view(10, None, now);
        assert_eq!(done.duration_s, 4.5);
        assert_eq!(done.started_at, "1970-01-01T00:16:40Z");
        let running = part(PartState::Recording, None).view(10, Some(at(1_002_000)), now);
        assert_eq!(running.duration_s, 10.0);
        let torn = part(PartState::Interrupted, None).view(10, Some(at(1_003_000)), now);
        assert_eq!(torn.duration_s, 3.0);
    }
}
