//! Program quality, measured continuously in production (pure: frames' samples, pipeline times
//! and `now` come in; the probes that feed it are in `quality_probe`).
//!
//! Three measurements, each cheap enough to run on every frame of every room:
//! - [`LatencyWindow`]: how long program frames spent in the mixer, summarised per heartbeat;
//! - [`JoinTracker`]: when a new input's first frame is in the program that leaves the muxer;
//! - [`StillnessWatch`]: a frozen or black program while the cameras it shows are live. Both
//!   compare the program against its visible inputs, so a room whose guests really sit still (or
//!   in the dark) is not flagged: only a program that stopped following its inputs is.

use std::time::{Duration, Instant};

/// Samples kept per heartbeat: one per program frame, so 60 fps heartbeats once a second fit.
/// Beyond it the newest overwrite the oldest (the p50 is then of the last 256 frames; the
/// count and the max stay exact).
const LATENCY_CAPACITY: usize = 256;
/// A sample above this is a clock or timestamp fault, not a latency: dropped.
const LATENCY_LIMIT_NS: i128 = 60_000_000_000;

/// Mixer latency samples since the last heartbeat. Recording never allocates.
#[derive(Debug)]
pub struct LatencyWindow {
    /// Milliseconds, at most [`LATENCY_CAPACITY`] (then a ring).
    samples: Vec<u32>,
    /// Samples recorded since the last [`LatencyWindow::take`], kept or overwritten.
    count: u32,
    max_ms: u32,
}

/// What one heartbeat reports of the latency samples since the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencySummary {
    /// Median (nearest rank), ms; 0 without samples.
    pub p50_ms: u32,
    pub max_ms: u32,
    pub samples: u32,
}

impl Default for LatencyWindow {
    fn default() -> Self {
        Self {
            samples: Vec::with_capacity(LATENCY_CAPACITY),
            count: 0,
            max_ms: 0,
        }
    }
}

impl LatencyWindow {
    /// One frame's latency: `now_running - frame_running` in ns. A negative one (the frame's
    /// timestamp is ahead of the clock by a rounding or an offset) counts as 0; above 60 s it is
    /// dropped.
    pub fn record(&mut self, latency_ns: i128) {
        if latency_ns > LATENCY_LIMIT_NS {
            return;
        }
        let ms = (latency_ns.max(0) / 1_000_000) as u32;
        if self.samples.len() < LATENCY_CAPACITY {
            self.samples.push(ms);
        } else {
            self.samples[self.count as usize % LATENCY_CAPACITY] = ms;
        }
        self.count = self.count.saturating_add(1);
        self.max_ms = self.max_ms.max(ms);
    }

    /// The summary since the previous call, and a fresh window.
    pub fn take(&mut self) -> LatencySummary {
        let summary = if self.samples.is_empty() {
            LatencySummary::default()
        } else {
            self.samples.sort_unstable();
            LatencySummary {
                p50_ms: self.samples[self.samples.len().div_ceil(2) - 1],
                max_ms: self.max_ms,
                samples: self.count,
            }
        };
        self.samples.clear();
        self.count = 0;
        self.max_ms = 0;
        summary
    }
}

/// Inputs waiting to be seen in the program; a room has far fewer video inputs.
const MAX_PENDING_JOINS: usize = 64;

/// Join → visible: an input is visible once a program frame at or after the running time of its
/// first frame has left the muxer while the layout shows it. Shown-ness is asked when the
/// program frame leaves, not when the input frame arrives: layouts are applied between program
/// frames, so the first frames may arrive before the placement and still be the ones shown.
/// Inputs are named by their serial (no strings on the streaming threads).
#[derive(Debug, Default)]
pub struct JoinTracker {
    /// (serial, running time in ns of its first frame).
    pending: Vec<(u64, u64)>,
    /// Serials now visible, not yet reported.
    visible: Vec<u64>,
}

impl JoinTracker {
    /// The input's first frame while it was shown arrived with this running time. Once per
    /// input; when full, the oldest pending input is given up (it never reports).
    pub fn arm(&mut self, serial: u64, running_ns: u64) {
        if self.pending.iter().any(|(s, _)| *s == serial) {
            return;
        }
        if self.pending.len() >= MAX_PENDING_JOINS {
            self.pending.remove(0);
        }
        self.pending.push((serial, running_ns));
    }

    /// A program frame of this running time left the muxer; `shown` says whether the layout
    /// shows an input now.
    pub fn on_program(&mut self, running_ns: u64, shown: impl Fn(u64) -> bool) {
        if self.pending.is_empty() {
            return;
        }
        let mut i = 0;
        while i < self.pending.len() {
            let (serial, first) = self.pending[i];
            if running_ns >= first && shown(serial) {
                self.pending.remove(i);
                if self.visible.len() < MAX_PENDING_JOINS {
                    self.visible.push(serial);
                }
            } else {
                i += 1;
            }
        }
    }

    /// Inputs that became visible since the last call, in that order.
    pub fn take_visible(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.visible)
    }

    /// The input is gone: it will not be reported.
    pub fn forget(&mut self, serial: u64) {
        self.pending.retain(|(s, _)| *s != serial);
        self.visible.retain(|s| *s != serial);
    }
}

/// Grid of luma samples per frame: 576 reads, spread over the whole picture so a tile anywhere
/// on the canvas has samples in it.
pub const GRID_COLUMNS: usize = 32;
pub const GRID_ROWS: usize = 18;

/// A frame's luma, cheaply: a hash of the sampled points (any change in them changes it) and
/// their mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LumaSignature {
    pub hash: u64,
    /// 0..=255; limited-range black is 16.
    pub mean: u8,
}

/// Samples the luma of one 8-bit frame on the [`GRID_COLUMNS`] x [`GRID_ROWS`] grid (cell
/// centres). `luma` starts at the first pixel's luma byte; `stride` is bytes per row and
/// `pixel_stride` bytes per pixel (1 planar, 2 for packed 4:2:2). `None` if the slice is too
/// short for the geometry.
pub fn sample_luma(
    luma: &[u8],
    stride: usize,
    pixel_stride: usize,
    width: usize,
    height: usize,
) -> Option<LumaSignature> {
    if width == 0 || height == 0 {
        return None;
    }
    let last = (height - 1) * stride + (width - 1) * pixel_stride;
    if last >= luma.len() {
        return None;
    }
    // FNV-1a: one multiply per byte, and a single changed byte changes the hash.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut sum: u32 = 0;
    for row in 0..GRID_ROWS {
        let y = (2 * row + 1) * height / (2 * GRID_ROWS);
        for col in 0..GRID_COLUMNS {
            let x = (2 * col + 1) * width / (2 * GRID_COLUMNS);
            let v = luma[y * stride + x * pixel_stride];
            hash = (hash ^ u64::from(v)).wrapping_mul(0x0000_0100_0000_01b3);
            sum += u32::from(v);
        }
    }
    Some(LumaSignature {
        hash,
        mean: (sum / (GRID_COLUMNS * GRID_ROWS) as u32) as u8,
    })
}

/// How long the program must be unchanged (or dark) before it counts as frozen (black): longer
/// than any slide change or fade a host would do on purpose, short enough to alert in time.
pub const STILL_LIMIT: Duration = Duration::from_secs(3);
/// An input's frame reaches the program about one compositor latency (250 ms + a frame) after
/// it reached the compositor: an input change or appearance younger than this may not be in the
/// program yet and proves nothing.
const IN_FLIGHT: Duration = Duration::from_secs(1);
/// Program mean luma at or below this is black (limited-range black is 16)...
const BLACK_MEAN: u8 = 20;
/// ...which is wrong only while a shown input is clearly brighter than this.
const BRIGHT_MEAN: u8 = 40;

/// The program's last frames.
#[derive(Debug, Clone, Copy)]
struct ProgramState {
    hash: u64,
    /// When the signature last changed (the first frame counts as a change).
    changed_at: Instant,
    /// Since when the program has been dark, if it is.
    dark_since: Option<Instant>,
}

/// One video input's last frames, as they reached the compositor.
#[derive(Debug, Clone, Copy)]
struct InputState {
    serial: u64,
    hash: u64,
    last_frame_at: Instant,
    /// Shown (alpha > 0) in its last frame.
    visible: bool,
    /// Last time a shown frame differed from the frame before it.
    last_change: Option<Instant>,
    /// The first such change since the program last changed: the program has not followed it
    /// (yet).
    unfollowed_since: Option<Instant>,
    /// Since when its frames have been shown and bright, if they are.
    bright_shown_since: Option<Instant>,
}

/// Is the program frozen or black while its inputs are not?
#[derive(Debug, Default)]
pub struct StillnessWatch {
    program: Option<ProgramState>,
    /// In arrival order; a room has a handful.
    inputs: Vec<InputState>,
}

/// What [`StillnessWatch::verdict`] says about the program now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StillnessVerdict {
    /// How long the program's signature has been unchanged.
    pub still: Duration,
    pub frozen: bool,
    pub black: bool,
}

impl StillnessWatch {
    /// One program frame.
    pub fn on_program(&mut self, now: Instant, sig: LumaSignature) {
        let dark = sig.mean <= BLACK_MEAN;
        match &mut self.program {
            Some(p) => {
                if p.hash != sig.hash {
                    p.hash = sig.hash;
                    p.changed_at = now;
                    for input in &mut self.inputs {
                        input.unfollowed_since = None;
                    }
                }
                p.dark_since = if dark {
                    p.dark_since.or(Some(now))
                } else {
                    None
                };
            }
            None => {
                self.program = Some(ProgramState {
                    hash: sig.hash,
                    changed_at: now,
                    dark_since: dark.then_some(now),
                });
            }
        }
    }

    /// One frame of input `serial` reaching the compositor, `visible` if its pad shows it.
    pub fn on_input(&mut self, now: Instant, serial: u64, visible: bool, sig: LumaSignature) {
        let bright = visible && sig.mean > BRIGHT_MEAN;
        match self.inputs.iter_mut().find(|i| i.serial == serial) {
            Some(input) => {
                if visible && input.hash != sig.hash {
                    input.last_change = Some(now);
                    input.unfollowed_since = input.unfollowed_since.or(Some(now));
                }
                input.hash = sig.hash;
                input.last_frame_at = now;
                input.visible = visible;
                input.bright_shown_since = if bright {
                    input.bright_shown_since.or(Some(now))
                } else {
                    None
                };
            }
            None => self.inputs.push(InputState {
                serial,
                hash: sig.hash,
                last_frame_at: now,
                visible,
                last_change: None,
                unfollowed_since: None,
                bright_shown_since: bright.then_some(now),
            }),
        }
    }

    /// The input is gone.
    pub fn forget(&mut self, serial: u64) {
        self.inputs.retain(|i| i.serial != serial);
    }

    /// Frozen: the program unchanged for [`STILL_LIMIT`] while a shown input changed since,
    /// early enough to be in the program by now, and is still changing (within the limit).
    /// Black: the program dark for
    /// [`STILL_LIMIT`] while a shown input, still sending, has been bright long enough to be in
    /// it. Inputs hidden by the layout (alpha 0) count for neither.
    pub fn verdict(&self, now: Instant) -> StillnessVerdict {
        let Some(program) = self.program else {
            return StillnessVerdict::default();
        };
        let still = now.saturating_duration_since(program.changed_at);
        let recent = |t: Instant| now.saturating_duration_since(t) <= STILL_LIMIT;
        let settled = |t: Instant| now.saturating_duration_since(t) >= IN_FLIGHT;
        let shown = || {
            self.inputs
                .iter()
                .filter(move |i| i.visible && recent(i.last_frame_at))
        };
        let frozen = still >= STILL_LIMIT
            && shown().any(|i| {
                i.unfollowed_since.is_some_and(settled) && i.last_change.is_some_and(recent)
            });
        let dark_long = program
            .dark_since
            .is_some_and(|t| now.saturating_duration_since(t) >= STILL_LIMIT);
        let black = dark_long && shown().any(|i| i.bright_shown_since.is_some_and(settled));
        StillnessVerdict {
            still,
            frozen,
            black,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn sig(hash: u64, mean: u8) -> LumaSignature {
        LumaSignature { hash, mean }
    }

    #[test]
    fn latency_window_reports_median_and_max_then_resets() {
        let mut w = LatencyWindow::default();
        assert_eq!(w.take(), LatencySummary::default());
        for ms in [300, 100, 200, 900, 250] {
            w.record(ms * 1_000_000);
        }
        assert_eq!(
            w.take(),
            LatencySummary {
                p50_ms: 250,
                max_ms: 900,
                samples: 5
            }
        );
        assert_eq!(w.take(), LatencySummary::default(), "the window resets");
        w.record(40_000_000);
        w.record(60_000_000);
        assert_eq!(w.take().p50_ms, 40, "nearest rank: the lower of two");
    }

    #[test]
    fn latency_window_clamps_negative_and_drops_absurd_samples() {
        let mut w = LatencyWindow::default();
        w.record(-5_000_000);
        w.record(61_000_000_000);
        w.record(i128::MAX);
        assert_eq!(
            w.take(),
            LatencySummary {
                p50_ms: 0,
                max_ms: 0,
                samples: 1
            }
        );
    }

    #[test]
    fn latency_window_stays_bounded_and_keeps_count_and_max() {
        let mut w = LatencyWindow::default();
        w.record(5_000_000_000);
        for _ in 0..1000 {
            w.record(100_000_000);
        }
        let s = w.take();
        assert_eq!((s.p50_ms, s.max_ms, s.samples), (100, 5000, 1001));
        assert_eq!(w.samples.capacity(), LATENCY_CAPACITY);
    }

    #[test]
    fn join_reports_an_input_once_the_program_reaches_its_first_frame() {
        let mut j = JoinTracker::default();
        j.arm(1, 1_000);
        j.arm(2, 5_000);
        j.arm(1, 9_000); // a second arming changes nothing
        let all = |_| true;
        j.on_program(999, all);
        assert!(j.take_visible().is_empty());
        j.on_program(1_000, all);
        assert_eq!(j.take_visible(), vec![1]);
        j.on_program(4_000, all);
        assert!(j.take_visible().is_empty());
        j.on_program(6_000, all);
        assert_eq!(j.take_visible(), vec![2]);
        j.on_program(100_000, all);
        assert!(j.take_visible().is_empty(), "once per input");
    }

    #[test]
    fn a_hidden_input_is_reported_when_the_layout_shows_it() {
        let mut j = JoinTracker::default();
        j.arm(1, 1_000);
        j.on_program(5_000, |_| false);
        assert!(j.take_visible().is_empty());
        j.on_program(6_000, |serial| serial == 1);
        assert_eq!(j.take_visible(), vec![1]);
    }

    #[test]
    fn a_removed_input_is_never_reported_and_pending_stays_bounded() {
        let mut j = JoinTracker::default();
        j.arm(1, 1_000);
        j.arm(2, 1_000);
        j.on_program(2_000, |serial| serial != 1);
        j.forget(1);
        j.arm(3, 3_000);
        j.forget(3);
        j.on_program(4_000, |_| true);
        assert_eq!(j.take_visible(), vec![2]);
        for s in 0..1000 {
            j.arm(100 + s, u64::MAX);
        }
        assert_eq!(j.pending.len(), MAX_PENDING_JOINS);
    }

    #[test]
    fn signature_follows_the_pixels_and_the_mean_is_the_luma() {
        let (w, h, stride) = (64, 36, 72);
        let mut frame = vec![16u8; stride * h];
        let black = sample_luma(&frame, stride, 1, w, h).unwrap();
        assert_eq!(black.mean, 16);
        assert_eq!(sample_luma(&frame, stride, 1, w, h), Some(black));
        // One sampled pixel changes: the hash changes.
        frame[stride + 1] = 17;
        let changed = sample_luma(&frame, stride, 1, w, h).unwrap();
        assert_ne!(changed.hash, black.hash);
        // Padding past the width is never read.
        frame[w..stride].fill(255);
        assert_eq!(sample_luma(&frame, stride, 1, w, h), Some(changed));
        frame.fill(235);
        assert_eq!(sample_luma(&frame, stride, 1, w, h).unwrap().mean, 235);
        assert_eq!(sample_luma(&frame[..10], stride, 1, w, h), None);
        assert_eq!(sample_luma(&frame, stride, 1, 0, h), None);
    }

    #[test]
    fn signature_reads_packed_luma_with_its_pixel_stride() {
        // YUY2: Y U Y V ...; only the Y bytes count.
        let (w, h) = (64, 36);
        let mut frame = vec![0u8; w * 2 * h];
        for px in frame.chunks_mut(2) {
            px[0] = 100;
            px[1] = 250;
        }
        assert_eq!(sample_luma(&frame, w * 2, 2, w, h).unwrap().mean, 100);
    }

    /// A room with one shown camera that changes every frame, and a program driven by
    /// `program(t)` (hash, mean) every 100 ms from t0 for `until`.
    fn run(
        watch: &mut StillnessWatch,
        t0: Instant,
        until: Duration,
        program: impl Fn(u64) -> (u64, u8),
    ) -> Instant {
        let mut t = 0;
        while ms(t) <= until {
            watch.on_input(t0 + ms(t), 7, true, sig(t, 120));
            let (hash, mean) = program(t);
            watch.on_program(t0 + ms(t), sig(hash, mean));
            t += 100;
        }
        t0 + until
    }

    #[test]
    fn a_program_that_stops_following_a_live_camera_is_frozen() {
        let t0 = Instant::now();
        let mut w = StillnessWatch::default();
        // Follows the camera for 2 s, then sticks.
        let end = run(&mut w, t0, ms(5_000), |t| (t.min(2_000), 120));
        let v = w.verdict(end);
        assert_eq!(v.still, ms(3_000));
        assert!(v.frozen && !v.black, "{v:?}");
        // Just under the limit: not yet.
        let v = w.verdict(end - ms(100));
        assert!(!v.frozen, "{v:?}");
    }

    #[test]
    fn a_program_following_its_camera_is_not_frozen_and_an_old_change_expires() {
        let t0 = Instant::now();
        let mut w = StillnessWatch::default();
        let end = run(&mut w, t0, ms(5_000), |t| (t, 120));
        let v = w.verdict(end);
        assert_eq!(v.still, Duration::ZERO);
        assert!(!v.frozen, "{v:?}");
        // The camera changes once more, the program misses it, then both sit still: frozen
        // while the change is recent, not once the camera has been still for the limit.
        w.on_input(end + ms(100), 7, true, sig(1, 120));
        for t in (100..=8_000).step_by(100) {
            w.on_input(end + ms(t), 7, true, sig(1, 120));
            w.on_program(end + ms(t), sig(5_000, 120));
        }
        assert!(w.verdict(end + ms(3_000)).frozen);
        assert!(!w.verdict(end + ms(8_000)).frozen);
    }

    #[test]
    fn a_still_program_of_still_cameras_is_not_frozen() {
        let t0 = Instant::now();
        let mut w = StillnessWatch::default();
        for t in (0..=5_000).step_by(100) {
            w.on_input(t0 + ms(t), 7, true, sig(1, 120));
            w.on_program(t0 + ms(t), sig(2, 120));
        }
        let v = w.verdict(t0 + ms(5_000));
        assert_eq!(v.still, ms(5_000));
        assert!(!v.frozen && !v.black, "{v:?}");
    }

    #[test]
    fn hidden_inputs_do_not_count() {
        let t0 = Instant::now();
        let mut w = StillnessWatch::default();
        for t in (0..=5_000).step_by(100) {
            // Changing and bright, but at alpha 0.
            w.on_input(t0 + ms(t), 7, false, sig(t, 200));
            w.on_program(t0 + ms(t), sig(2, 16));
        }
        let v = w.verdict(t0 + ms(5_000));
        assert!(!v.frozen && !v.black, "{v:?}");
    }

    #[test]
    fn a_black_program_under_a_bright_camera_is_black() {
        let t0 = Instant::now();
        let mut w = StillnessWatch::default();
        // The program goes black at 1 s while the camera stays bright; black also means the
        // picture stopped changing, so it is frozen too.
        let end = run(&mut w, t0, ms(4_500), |t| {
            if t < 1_000 {
                (t, 120)
            } else {
                (0, 16)
            }
        });
        assert!(!w.verdict(t0 + ms(3_900)).black);
        let v = w.verdict(end);
        assert!(v.black && v.frozen, "{v:?}");
    }

    #[test]
    fn a_dark_camera_makes_a_dark_program_not_black() {
        let t0 = Instant::now();
        let mut w = StillnessWatch::default();
        for t in (0..=5_000).step_by(100) {
            w.on_input(t0 + ms(t), 7, true, sig(t, 30));
            w.on_program(t0 + ms(t), sig(t, 18));
        }
        let v = w.verdict(t0 + ms(5_000));
        assert!(!v.frozen && !v.black, "{v:?}");
    }

    #[test]
    fn a_camera_just_shown_or_just_changed_proves_nothing_yet() {
        let t0 = Instant::now();
        let mut w = StillnessWatch::default();
        // A still, black program and a still camera, hidden...
        for t in (0..=5_000).step_by(100) {
            w.on_input(t0 + ms(t), 7, false, sig(1, 120));
            w.on_program(t0 + ms(t), sig(2, 16));
        }
        // ...until the layout shows it, with a new picture: the program has not had time to
        // follow.
        w.on_input(t0 + ms(5_100), 7, true, sig(3, 120));
        w.on_program(t0 + ms(5_100), sig(2, 16));
        let v = w.verdict(t0 + ms(5_300));
        assert!(!v.frozen && !v.black, "{v:?}");
        // A second later it still has not: both.
        for t in (5_200..=6_200).step_by(100) {
            w.on_input(t0 + ms(t), 7, true, sig(3, 120));
            w.on_program(t0 + ms(t), sig(2, 16));
        }
        let v = w.verdict(t0 + ms(6_200));
        assert!(v.frozen && v.black, "{v:?}");
    }

    #[test]
    fn inputs_that_leave_or_stop_sending_no_longer_count() {
        let t0 = Instant::now();
        let mut w = StillnessWatch::default();
        let end = run(&mut w, t0, ms(5_000), |_| (0, 16));
        assert!(w.verdict(end).black);
        w.forget(7);
        let v = w.verdict(end);
        assert!(!v.frozen && !v.black, "{v:?}");

        // Another camera that goes silent: after the limit its last frames prove nothing.
        let end = run(&mut w, t0, ms(5_000), |_| (0, 16));
        for t in (5_100..=9_000).step_by(100) {
            w.on_program(t0 + ms(t), sig(0, 16));
        }
        let v = w.verdict(end + ms(4_000));
        assert!(!v.frozen && !v.black, "{v:?}");
    }

    #[test]
    fn no_program_yet_reports_nothing() {
        let t0 = Instant::now();
        let mut w = StillnessWatch::default();
        w.on_input(t0, 1, true, sig(1, 100));
        assert_eq!(w.verdict(t0 + ms(10_000)), StillnessVerdict::default());
    }
}
