//! Per-output progress the host page shows (bitrate, time live, reconnects), derived serve-side
//! by watching successive [`OutputStatus`] snapshots. Pure: the caller passes `now`, so tests
//! drive it in simulated time. Kept out of the room state machine because none of it feeds a
//! decision; it only describes what already happened.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use costream_mixer::control::OutputState;

use super::state::OutputStatus;
use super::status::OutputStatusView;

/// Bitrate is averaged over this much recent history: long enough to smooth the ~1 s heartbeat
/// cadence, short enough that a stalled output shows 0 within a few seconds.
const RATE_WINDOW: Duration = Duration::from_secs(3);
/// Below this span of samples a rate would be noise.
const MIN_RATE_SPAN: Duration = Duration::from_millis(500);
/// Samples kept per output; the window holds ~3 s of heartbeats, so this is never reached in
/// practice, but keeps memory bounded whatever the event rate.
const MAX_SAMPLES: usize = 64;

/// What one output did so far during the current broadcast.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutputMetrics {
    /// Recent send rate in kbit/s (0 when nothing moved lately).
    pub bitrate_kbps: u64,
    /// How long the output has been `live` without interruption (None unless live).
    pub live_seconds: Option<f64>,
    /// Times it dropped from `live` (or a running mixer) into `reconnecting`.
    pub reconnects: u32,
}

#[derive(Debug, Default)]
struct Meter {
    state: Option<OutputState>,
    live_since: Option<Instant>,
    reconnects: u32,
    /// (when, bytes_sent) samples, oldest first.
    samples: VecDeque<(Instant, u64)>,
}

/// Meters of every output of one room, keyed by `output_id`.
#[derive(Debug, Default)]
pub struct OutputMeters {
    meters: HashMap<String, Meter>,
}

impl OutputMeters {
    /// Records the outputs as they are at `now`. Call after every change to the room (and
    /// periodically while live); a state seen twice is not a transition.
    pub fn observe(&mut self, now: Instant, outputs: &[OutputStatus]) {
        for output in outputs {
            let meter = self
                .meters
                .entry(output.spec.output_id.clone())
                .or_default();
            meter.observe(now, output.state, output.bytes_sent);
        }
    }

    pub fn metrics(&self, output_id: &str, now: Instant) -> OutputMetrics {
        self.meters
            .get(output_id)
            .map(|m| m.metrics(now))
            .unwrap_or_default()
    }

    /// Fills the metric fields of a status view's outputs.
    pub fn apply(&self, outputs: &mut [OutputStatusView], now: Instant) {
        for output in outputs {
            let m = self.metrics(&output.output_id, now);
            output.bitrate_kbps = m.bitrate_kbps;
            output.live_seconds = m.live_seconds;
            output.reconnects = m.reconnects;
        }
    }
}

impl Meter {
    fn observe(&mut self, now: Instant, state: OutputState, bytes_sent: u64) {
        let previous = self.state.replace(state);
        if previous != Some(state) {
            match state {
                // A new broadcast: counters start again (the room resets bytes_sent too).
                OutputState::Connecting if previous != Some(OutputState::Reconnecting) => {
                    self.reconnects = 0;
                    self.samples.clear();
                }
                OutputState::Reconnecting => self.reconnects += 1,
                _ => {}
            }
            self.live_since = (state == OutputState::Live).then_some(now);
        }
        if matches!(state, OutputState::Idle | OutputState::Failed) {
            self.samples.clear();
            return;
        }
        // bytes_sent only grows within a broadcast; a drop means a fresh count.
        if self.samples.back().is_some_and(|&(_, b)| bytes_sent < b) {
            self.samples.clear();
        }
        self.samples.push_back((now, bytes_sent));
        while self.samples.len() > MAX_SAMPLES
            || self
                .samples
                .front()
                .is_some_and(|&(t, _)| now.saturating_duration_since(t) > RATE_WINDOW)
                && self.samples.len() > 2
        {
            self.samples.pop_front();
        }
    }

    fn metrics(&self, now: Instant) -> OutputMetrics {
        OutputMetrics {
            bitrate_kbps: self.bitrate_kbps(now),
            live_seconds: self
                .live_since
                .map(|t| now.saturating_duration_since(t).as_secs_f64()),
            reconnects: self.reconnects,
        }
    }

    fn bitrate_kbps(&self, now: Instant) -> u64 {
        let (Some(&(t0, b0)), Some(&(_, b1))) = (self.samples.front(), self.samples.back()) else {
            return 0;
        };
        // Measured up to now, not to the last sample: an output whose byte count stopped
        // moving decays to 0 instead of showing its last rate forever.
        let span = now.saturating_duration_since(t0);
        if span < MIN_RATE_SPAN {
            return 0;
        }
        let bits = (b1 - b0) as f64 * 8.0;
        (bits / span.as_secs_f64() / 1000.0).round() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use costream_mixer::control::OutputSpec;

    fn output(state: OutputState, bytes_sent: u64) -> OutputStatus {
        OutputStatus {
            spec: OutputSpec::new("out0", "rtmp://h/live/k"),
            state,
            reason: None,
            bytes_sent,
        }
    }

    #[test]
    fn bitrate_follows_bytes_per_second() {
        let t0 = Instant::now();
        let mut meters = OutputMeters::default();
        meters.observe(t0, &[output(OutputState::Connecting, 0)]);
        assert_eq!(meters.metrics("out0", t0).bitrate_kbps, 0);
        // 2500 kbit/s = 312_500 bytes per second, reported once a second.
        for s in 1..=5u64 {
            let now = t0 + Duration::from_secs(s);
            meters.observe(now, &[output(OutputState::Live, s * 312_500)]);
        }
        let now = t0 + Duration::from_secs(5);
        let m = meters.metrics("out0", now);
        assert_eq!(m.bitrate_kbps, 2500);
        assert_eq!(m.live_seconds, Some(4.0));
    }

    #[test]
    fn a_stalled_output_decays_to_zero() {
        let t0 = Instant::now();
        let mut meters = OutputMeters::default();
        for s in 0..=3u64 {
            meters.observe(
                t0 + Duration::from_secs(s),
                &[output(OutputState::Live, s * 100_000)],
            );
        }
        // No progress for 10 s (heartbeats still arrive with the same count).
        for s in 4..=13u64 {
            meters.observe(
                t0 + Duration::from_secs(s),
                &[output(OutputState::Live, 300_000)],
            );
        }
        assert_eq!(
            meters
                .metrics("out0", t0 + Duration::from_secs(13))
                .bitrate_kbps,
            0
        );
    }

    #[test]
    fn reconnects_count_drops_and_reset_on_a_new_broadcast() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut meters = OutputMeters::default();
        meters.observe(at(0), &[output(OutputState::Connecting, 0)]);
        meters.observe(at(1), &[output(OutputState::Live, 10)]);
        meters.observe(at(2), &[output(OutputState::Reconnecting, 20)]);
        // Seen again: not a second drop.
        meters.observe(at(3), &[output(OutputState::Reconnecting, 20)]);
        let m = meters.metrics("out0", at(3));
        assert_eq!((m.reconnects, m.live_seconds), (1, None));
        // A mixer restart passes through "connecting" again: still the same broadcast.
        meters.observe(at(4), &[output(OutputState::Live, 30)]);
        meters.observe(at(6), &[output(OutputState::Reconnecting, 40)]);
        meters.observe(at(7), &[output(OutputState::Live, 50)]);
        let m = meters.metrics("out0", at(9));
        assert_eq!((m.reconnects, m.live_seconds), (2, Some(2.0)));
        // Stop, then go live again: a fresh broadcast.
        meters.observe(at(10), &[output(OutputState::Idle, 50)]);
        assert_eq!(meters.metrics("out0", at(10)).bitrate_kbps, 0);
        meters.observe(at(11), &[output(OutputState::Connecting, 0)]);
        assert_eq!(meters.metrics("out0", at(11)), OutputMetrics::default());
    }

    #[test]
    fn unknown_outputs_have_no_metrics() {
        let meters = OutputMeters::default();
        assert_eq!(
            meters.metrics("nope", Instant::now()),
            OutputMetrics::default()
        );
    }
}
