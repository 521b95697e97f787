//! The segments of one stream kept in memory: a bounded window of finished segments, the
//! open one, their parts and the init segments they need. Pure bookkeeping; [`super::HlsStream`]
//! wraps it in a lock and wakes waiting requests when it changes.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::packager::PackagedPart;

/// A stream whose publisher has been away this long is over (the host stopped): its playlist
/// ends, and a new publisher starts an empty window. Shorter absences (a mixer replaced after a
/// crash takes ~1.5 s, a planned move less) continue the playlist after a discontinuity.
pub const PUBLISHER_AWAY_ENDS_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowLimits {
    /// Finished segments listed in the playlist.
    pub listed_segments: usize,
    /// Of those, the last ones whose parts are listed too (RFC 8216bis: parts older than
    /// three target durations should be dropped from the playlist).
    pub segments_with_parts: usize,
}

impl Default for WindowLimits {
    fn default() -> Self {
        Self {
            listed_segments: 6,
            segments_with_parts: 3,
        }
    }
}

#[derive(Debug, Clone)]
pub struct StoredPart {
    pub bytes: Bytes,
    pub duration_ms: u32,
    pub independent: bool,
}

#[derive(Debug, Clone)]
pub struct StoredSegment {
    pub msn: u64,
    pub parts: Vec<StoredPart>,
    pub complete: bool,
    /// A discontinuity precedes this segment (new publisher or codec configuration).
    pub discontinuity: bool,
    /// Version of the init segment it needs.
    pub init: u32,
    /// Wall-clock time (Unix ms) its first frame reached the origin: the playlist's
    /// `EXT-X-PROGRAM-DATE-TIME`, from which players measure their latency.
    pub started_at_ms: u64,
}

impl StoredSegment {
    pub fn duration_ms(&self) -> u64 {
        self.parts.iter().map(|p| u64::from(p.duration_ms)).sum()
    }

    pub fn size(&self) -> usize {
        self.parts.iter().map(|p| p.bytes.len()).sum()
    }
}

/// What a blocking playlist request (`_HLS_msn`, `_HLS_part`) waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Awaited {
    pub msn: u64,
    pub part: Option<usize>,
}

/// The answer to "is what the request waits for there?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    NotYet,
    /// Further ahead than the server will wait for (RFC 8216bis 6.2.5.2: more than two
    /// segments past the last one): the client is confused; answer 400.
    TooFarAhead,
}

#[derive(Debug)]
pub struct Window {
    limits: WindowLimits,
    inits: VecDeque<(u32, Bytes)>,
    /// Oldest first; the last one may be open.
    segments: VecDeque<StoredSegment>,
    next_msn: u64,
    /// Discontinuities of segments that have left the playlist.
    discontinuity_sequence: u64,
    /// Seconds; fixed for the stream's life (RFC 8216bis), the packager cuts segments to fit.
    target_duration_s: u64,
    /// Version of the first init segment (versions and sequence numbers start from the wall
    /// clock, so a stream registered again never reuses a name for other media).
    first_init: u32,
    /// The stream was unregistered (the room ended).
    ended: bool,
    /// The publisher left then and none has come since.
    publisher_left_at: Option<Instant>,
}

impl Window {
    /// A window whose first segment will be `first_msn`.
    pub fn new(limits: WindowLimits, target_duration_s: u64, first_msn: u64) -> Self {
        Self {
            limits,
            inits: VecDeque::new(),
            segments: VecDeque::new(),
            next_msn: first_msn,
            first_init: first_msn as u32,
            discontinuity_sequence: 0,
            target_duration_s: target_duration_s.max(1),
            ended: false,
            publisher_left_at: None,
        }
    }

    /// Stores a finished part; `now_ms` is the wall clock (Unix ms) as it finished.
    pub fn add(&mut self, part: PackagedPart, now_ms: u64) {
        if let Some(init) = part.new_init {
            let version = self
                .inits
                .back()
                .map_or(self.first_init, |(v, _)| v.wrapping_add(1));
            self.inits.push_back((version, init));
            if let Some(open) = self.segments.back_mut().filter(|s| !s.complete) {
                // A segment is ended before a configuration change; this is defensive.
                open.complete = true;
            }
        }
        let Some(init) = self.inits.back().map(|(v, _)| *v) else {
            // No init segment yet: nothing a player could decode.
            return;
        };
        let needs_new_segment = self.segments.back().is_none_or(|s| s.complete);
        if needs_new_segment {
            let discontinuity = self.segments.back().is_some_and(|s| s.init != init);
            self.segments.push_back(StoredSegment {
                msn: self.next_msn,
                parts: Vec::new(),
                complete: false,
                discontinuity,
                init,
                started_at_ms: now_ms.saturating_sub(part.duration_ms.into()),
            });
            self.next_msn += 1;
        }
        let open = self.segments.back_mut().expect("a segment is open");
        open.parts.push(StoredPart {
            bytes: part.fragment,
            duration_ms: part.duration_ms,
            independent: part.independent,
        });
        if part.ends_segment {
            open.complete = true;
        }
        self.evict();
    }

    /// The stream is over: the playlist gets `EXT-X-ENDLIST` and waiting requests answer.
    pub fn end(&mut self) {
        if let Some(open) = self.segments.back_mut() {
            if open.parts.is_empty() {
                self.segments.pop_back();
                self.next_msn -= 1;
            } else {
                open.complete = true;
            }
        }
        self.ended = true;
    }

    /// The publisher went away (a crash, a move, or the host stopped: it cannot tell yet).
    pub fn publisher_left(&mut self, now: Instant) {
        self.publisher_left_at.get_or_insert(now);
    }

    /// A publisher came: after a long absence what is left is an earlier broadcast, gone from
    /// the playlist now (numbering goes on, so no name is ever reused for other media).
    pub fn publisher_joined(&mut self, now: Instant) {
        let Some(left) = self.publisher_left_at.take() else {
            return;
        };
        if now.saturating_duration_since(left) >= PUBLISHER_AWAY_ENDS_AFTER {
            self.discontinuity_sequence +=
                self.segments.iter().filter(|s| s.discontinuity).count() as u64 + 1;
            self.segments.clear();
        }
    }

    fn evict(&mut self) {
        // One finished segment more than listed stays fetchable, for a client that read the
        // previous playlist just before it changed.
        let keep = self.limits.listed_segments + 1;
        while self.complete_count() > keep {
            if let Some(gone) = self.segments.pop_front() {
                if gone.discontinuity {
                    self.discontinuity_sequence += 1;
                }
            }
        }
        let oldest_init = self.segments.front().map(|s| s.init);
        while self.inits.len() > 1 && self.inits.front().map(|(v, _)| *v) < oldest_init {
            self.inits.pop_front();
        }
    }

    fn complete_count(&self) -> usize {
        self.segments.iter().filter(|s| s.complete).count()
    }

    /// Over: the room ended, or the publisher has been away for good.
    pub fn ended(&self, now: Instant) -> bool {
        self.ended || self.away_for_good(now)
    }

    /// The publisher left long enough ago that the broadcast has stopped (what is left is
    /// stale: it is not offered to players).
    pub fn away_for_good(&self, now: Instant) -> bool {
        self.publisher_left_at
            .is_some_and(|left| now.saturating_duration_since(left) >= PUBLISHER_AWAY_ENDS_AFTER)
    }

    pub fn target_duration_s(&self) -> u64 {
        self.target_duration_s
    }

    pub fn init(&self, version: u32) -> Option<&Bytes> {
        self.inits
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, bytes)| bytes)
    }

    pub fn segment(&self, msn: u64) -> Option<&StoredSegment> {
        self.segments.iter().find(|s| s.msn == msn)
    }

    pub fn part(&self, msn: u64, index: usize) -> Option<&StoredPart> {
        self.segment(msn)?.parts.get(index)
    }

    /// The segments the playlist lists: the last `listed_segments` finished ones and the open one.
    pub fn listed(&self) -> impl Iterator<Item = &StoredSegment> {
        let complete = self.complete_count();
        let skip = complete.saturating_sub(self.limits.listed_segments);
        self.segments.iter().skip(skip)
    }

    /// Discontinuity sequence of the first listed segment.
    pub fn listed_discontinuity_sequence(&self) -> u64 {
        let complete = self.complete_count();
        let skip = complete.saturating_sub(self.limits.listed_segments);
        self.discontinuity_sequence
            + self
                .segments
                .iter()
                .take(skip)
                .filter(|s| s.discontinuity)
                .count() as u64
    }

    /// The part a player should ask for next (`EXT-X-PRELOAD-HINT`).
    pub fn next_part(&self) -> (u64, usize) {
        match self.segments.back() {
            Some(open) if !open.complete => (open.msn, open.parts.len()),
            _ => (self.next_msn, 0),
        }
    }

    /// Whether a blocking playlist request can be answered now.
    pub fn readiness(&self, awaited: Awaited, now: Instant) -> Readiness {
        if self.ended(now) {
            return Readiness::Ready;
        }
        let last_msn = self.next_msn.checked_sub(1);
        if awaited.msn > last_msn.map_or(0, |m| m + 2) {
            return Readiness::TooFarAhead;
        }
        let later_exists = self.segments.iter().any(|s| s.msn > awaited.msn);
        let ready = later_exists
            || self
                .segment(awaited.msn)
                .is_some_and(|s| match awaited.part {
                    None => s.complete,
                    Some(part) => s.complete || s.parts.len() > part,
                });
        if ready {
            Readiness::Ready
        } else {
            Readiness::NotYet
        }
    }

    /// Whether a part that is not there yet is worth waiting for: the next one, as hinted.
    pub fn part_is_next(&self, msn: u64, index: usize, now: Instant) -> bool {
        !self.ended(now) && self.next_part() == (msn, index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(ms: u32, independent: bool, ends: bool, init: bool) -> PackagedPart {
        PackagedPart {
            fragment: Bytes::from(vec![0u8; 10]),
            duration_ms: ms,
            independent,
            ends_segment: ends,
            new_init: init.then(|| Bytes::from_static(b"init")),
        }
    }

    impl Window {
        fn add_now(&mut self, part: PackagedPart) {
            self.add(part, 1_000_000);
        }
    }

    /// Adds a 2 s segment of four parts.
    fn segment(window: &mut Window, init: bool) {
        window.add_now(part(500, true, false, init));
        window.add_now(part(500, false, false, false));
        window.add_now(part(500, false, false, false));
        window.add_now(part(500, false, true, false));
    }

    #[test]
    fn parts_fill_segments_and_the_window_slides() {
        let mut window = Window::new(WindowLimits::default(), 2, 0);
        window.add_now(part(500, true, false, false));
        assert!(window.segment(0).is_none(), "nothing without an init");
        segment(&mut window, true);
        assert!(window.segment(0).unwrap().complete);
        assert_eq!(window.segment(0).unwrap().duration_ms(), 2000);
        for _ in 0..9 {
            segment(&mut window, false);
        }
        let listed: Vec<u64> = window.listed().map(|s| s.msn).collect();
        assert_eq!(listed, vec![4, 5, 6, 7, 8, 9]);
        assert!(window.segment(3).is_some(), "one more stays fetchable");
        assert!(window.segment(2).is_none());
        assert_eq!(window.next_part(), (10, 0));
        window.add_now(part(500, true, false, false));
        assert_eq!(window.next_part(), (10, 1));
        assert_eq!(window.listed().count(), 7, "the open segment is listed");
    }

    #[test]
    fn a_new_init_starts_a_discontinuity_counted_once_it_leaves() {
        let mut window = Window::new(WindowLimits::default(), 2, 0);
        segment(&mut window, true);
        segment(&mut window, true);
        assert!(window.segment(1).unwrap().discontinuity);
        assert_eq!(window.segment(1).unwrap().init, 1);
        assert!(window.init(0).is_some() && window.init(1).is_some());
        for _ in 0..6 {
            segment(&mut window, false);
        }
        assert_eq!(window.listed().next().unwrap().msn, 2);
        assert_eq!(window.listed_discontinuity_sequence(), 1);
        assert!(window.init(0).is_none(), "no segment needs it any more");
    }

    #[test]
    fn blocking_requests_wait_for_the_part_or_segment() {
        let mut window = Window::new(WindowLimits::default(), 2, 0);
        segment(&mut window, true);
        window.add_now(part(500, true, false, false));
        let at = |msn, part| Awaited { msn, part };
        let now = Instant::now();
        assert_eq!(window.readiness(at(1, Some(0)), now), Readiness::Ready);
        assert_eq!(window.readiness(at(1, Some(1)), now), Readiness::NotYet);
        assert_eq!(window.readiness(at(1, None), now), Readiness::NotYet);
        assert_eq!(window.readiness(at(0, None), now), Readiness::Ready);
        assert_eq!(window.readiness(at(3, None), now), Readiness::NotYet);
        assert_eq!(window.readiness(at(4, None), now), Readiness::TooFarAhead);
        assert!(window.part_is_next(1, 1, now));
        assert!(!window.part_is_next(1, 2, now));
        window.end();
        assert_eq!(window.readiness(at(3, None), now), Readiness::Ready);
        assert!(window.segment(1).unwrap().complete);
    }

    #[test]
    fn a_short_absence_goes_on_and_a_long_one_ends_the_playlist_then_starts_afresh() {
        let mut window = Window::new(WindowLimits::default(), 2, 0);
        let t0 = Instant::now();
        segment(&mut window, true);
        // A mixer replaced after a crash: back within the grace, the window goes on.
        window.publisher_left(t0);
        assert!(!window.ended(t0 + Duration::from_secs(2)));
        window.publisher_joined(t0 + Duration::from_secs(2));
        segment(&mut window, true);
        assert_eq!(window.listed().count(), 2);
        assert!(window.segment(1).unwrap().discontinuity);
        // The host stopped: after the grace the playlist ends, blocked requests answer.
        let t1 = t0 + Duration::from_secs(20);
        window.publisher_left(t1);
        assert!(!window.ended(t1 + Duration::from_secs(9)));
        assert!(window.ended(t1 + PUBLISHER_AWAY_ENDS_AFTER));
        let far = Awaited { msn: 3, part: None };
        assert_eq!(
            window.readiness(far, t1 + PUBLISHER_AWAY_ENDS_AFTER),
            Readiness::Ready
        );
        // Live again later: the earlier broadcast is gone, numbering goes on.
        let t2 = t1 + Duration::from_secs(60);
        window.publisher_joined(t2);
        assert!(!window.ended(t2));
        assert_eq!(window.listed().count(), 0);
        segment(&mut window, true);
        let first = window.listed().next().unwrap();
        assert_eq!(first.msn, 2, "names are never reused");
        assert!(!first.discontinuity, "nothing before it in the playlist");
        assert_eq!(window.listed_discontinuity_sequence(), 2);
    }

    #[test]
    fn numbering_starts_where_asked() {
        let mut window = Window::new(WindowLimits::default(), 2, 1_796_000_000);
        assert_eq!(window.next_part(), (1_796_000_000, 0));
        segment(&mut window, true);
        assert_eq!(window.listed().next().unwrap().msn, 1_796_000_000);
        assert!(window.init(1_796_000_000).is_some());
    }
}
