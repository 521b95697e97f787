//! Identifiers: session ids (random, URL-safe) and track ids (stable within a session).

use rand::distr::{Alphanumeric, SampleString};

use crate::codec::MediaKind;

/// 22 alphanumeric characters ≈ 131 bits: unguessable, and safe in URLs and logs.
pub(crate) fn new_session_id() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 22)
}

/// Picks the id a remote track is known by. The publisher's own track id (from `a=msid`) is
/// preferred so logs match the browser's; it is reduced to URL-safe characters, and replaced by
/// `<kind>-<mid>` when empty or already used by another live track of this session.
pub(crate) fn choose_track_id(
    msid_track_id: &str,
    mid: Option<&str>,
    rid: &str,
    kind: MediaKind,
    is_taken: impl Fn(&str) -> bool,
) -> String {
    let kind = match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    };
    let mid = mid.map(url_safe).filter(|m| !m.is_empty());
    let rid = url_safe(rid);
    let mut candidates = Vec::with_capacity(3);
    let own = url_safe(msid_track_id);
    if !own.is_empty() {
        candidates.push(own);
    }
    let fallback = match &mid {
        Some(mid) => format!("{kind}-{mid}"),
        None => kind.to_string(),
    };
    candidates.push(fallback.clone());
    for candidate in candidates {
        let candidate = if rid.is_empty() {
            candidate
        } else {
            format!("{candidate}-{rid}")
        };
        if !is_taken(&candidate) {
            return candidate;
        }
    }
    (2..)
        .map(|n| format!("{fallback}-{n}"))
        .find(|c| !is_taken(c))
        .expect("an unbounded range always yields a free id")
}

fn url_safe(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'))
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_url_safe_and_distinct() {
        let a = new_session_id();
        let b = new_session_id();
        assert_eq!(a.len(), 22);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn prefers_the_publishers_track_id() {
        let id = choose_track_id("{3f2a-video}", Some("1"), "", MediaKind::Video, |_| false);
        assert_eq!(id, "3f2a-video");
    }

    #[test]
    fn falls_back_to_kind_and_mid() {
        assert_eq!(
            choose_track_id("", Some("0"), "", MediaKind::Audio, |_| false),
            "audio-0"
        );
        assert_eq!(
            choose_track_id("", None, "", MediaKind::Video, |_| false),
            "video"
        );
    }

    #[test]
    fn duplicates_get_distinct_ids() {
        let taken = ["same", "video-1"];
        let id = choose_track_id("same", Some("1"), "", MediaKind::Video, |c| {
            taken.contains(&c)
        });
        assert_eq!(id, "video-1-2");
        let id = choose_track_id("same", Some("2"), "", MediaKind::Video, |c| {
            taken.contains(&c)
        });
        assert_eq!(id, "video-2");
    }

    #[test]
    fn simulcast_layers_are_told_apart_by_rid() {
        let id = choose_track_id("cam", Some("0"), "h", MediaKind::Video, |_| false);
        assert_eq!(id, "cam-h");
    }
}
