//! Reception quality of one incoming RTP stream, computed from the packets as they arrive:
//! loss (RFC 3550 A.3), interarrival jitter (RFC 3550 A.8), and the capture → arrival delay
//! on the sender's own clock (from its RTCP sender reports), which is what lip sync needs.
//!
//! Why the capture delay: the mixer's jitterbuffers stamp every stream by its arrival, so
//! whatever audio and video of one publisher differ in (capture → arrival) is exactly how far
//! apart the program plays them. A sender report maps the stream's RTP clock onto the sender's
//! wall clock, the same clock for both of its streams, so `video delay − audio delay` is the
//! publisher's A/V offset in the program, whatever the offset between the two machines' clocks.
//!
//! Pure: times are passed in, so the tests drive it with synthetic packets.

use std::time::Duration;

/// Seconds between the NTP epoch (1900) and the Unix epoch (1970).
const NTP_UNIX_OFFSET_SECS: f64 = 2_208_988_800.0;
/// The minimum delay is taken over this window (two halves, so it never drops to empty):
/// long enough to find the undelayed packets among paced ones, short enough to follow a change.
const DELAY_WINDOW: Duration = Duration::from_secs(2);
/// A sequence jump larger than this is a restarted sender, not loss (RFC 3550 A.1's
/// MAX_DROPOUT).
const MAX_DROPOUT: u16 = 3000;

/// One snapshot, for stats and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ReceptionStats {
    /// Packets the sequence numbers say were sent since the first one received.
    pub expected: u64,
    /// `expected` minus received; negative with duplicates (RFC 3550 keeps the sign).
    pub lost: i64,
    /// Interarrival jitter, in seconds.
    pub jitter_secs: f64,
    /// Minimum capture → arrival delay over the last ~2 s, in seconds on the sender's clock
    /// (so it includes the clocks' offset); `None` before the first sender report.
    pub capture_delay_secs: Option<f64>,
}

#[derive(Debug, Default)]
pub struct Reception {
    clock_rate: f64,
    /// Extended highest sequence number and the first one, once a packet arrived.
    seq: Option<SeqRange>,
    /// After a big sequence jump: the number that would confirm a sender restart.
    probation: Option<u16>,
    received: u64,
    /// RFC 3550's J, in RTP timestamp units.
    jitter: f64,
    /// Transit time of the previous packet (arrival in RTP units minus its timestamp).
    last_transit: Option<f64>,
    /// The latest sender report: (NTP time as Unix seconds, its RTP time).
    sender_clock: Option<(f64, u32)>,
    delay: MinWindow,
}

#[derive(Debug, Clone, Copy)]
struct SeqRange {
    first: u64,
    highest: u64,
}

impl Reception {
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate: f64::from(clock_rate.max(1)),
            ..Self::default()
        }
    }

    /// One packet: its sequence number and RTP timestamp, and its arrival as Unix time.
    pub fn on_packet(&mut self, seq: u16, rtp_time: u32, arrival_unix: Duration) {
        self.received += 1;
        self.track_sequence(seq);
        let arrival = arrival_unix.as_secs_f64();
        // Jitter: transit differences in RTP units; only the differences matter, so the
        // arrival's epoch does not.
        let transit = arrival * self.clock_rate - f64::from(rtp_time);
        if let Some(last) = self.last_transit {
            let mut d = (transit - last).abs();
            // A timestamp wrap or a sender restart is not jitter.
            if d > self.clock_rate * 10.0 {
                d = 0.0;
            }
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
        if let Some(capture) = self.capture_time(rtp_time) {
            self.delay.push(arrival_unix, arrival - capture);
        }
    }

    /// A sender report for this stream: `ntp` is the 64-bit NTP timestamp.
    pub fn on_sender_report(&mut self, ntp: u64, rtp_time: u32) {
        let secs = (ntp >> 32) as f64 + (ntp & 0xFFFF_FFFF) as f64 / 4_294_967_296.0;
        self.sender_clock = Some((secs - NTP_UNIX_OFFSET_SECS, rtp_time));
    }

    pub fn stats(&self) -> ReceptionStats {
        let expected = self.seq.map_or(0, |s| s.highest - s.first + 1);
        ReceptionStats {
            expected,
            lost: expected as i64 - self.received as i64,
            jitter_secs: self.jitter / self.clock_rate,
            capture_delay_secs: self.delay.min(),
        }
    }

    /// The sender's wall-clock time (Unix seconds) at which `rtp_time` was captured.
    fn capture_time(&self, rtp_time: u32) -> Option<f64> {
        let (sr_secs, sr_rtp) = self.sender_clock?;
        // Signed distance: the packet may be a little before or after the report.
        let ticks = rtp_time.wrapping_sub(sr_rtp) as i32;
        Some(sr_secs + f64::from(ticks) / self.clock_rate)
    }

    fn track_sequence(&mut self, seq: u16) {
        let Some(range) = &mut self.seq else {
            let first = u64::from(seq) + (1 << 16);
            self.seq = Some(SeqRange {
                first,
                highest: first,
            });
            return;
        };
        let highest_low = range.highest as u16;
        let ahead = seq.wrapping_sub(highest_low);
        if ahead == 0 {
            return;
        }
        if ahead < MAX_DROPOUT {
            range.highest += u64::from(ahead);
        } else if ahead > u16::MAX - MAX_DROPOUT {
            // Late or reordered: older than the highest, nothing to extend.
        } else if self.probation == Some(seq) {
            // Two in a row after a big jump: the sender restarted its sequence; count from
            // the first of them (in a later cycle, so the extended numbers keep growing).
            let first = (((range.highest >> 16) + 1) << 16) + u64::from(seq.wrapping_sub(1));
            *range = SeqRange {
                first,
                highest: first + 1,
            };
            self.received = 2;
            self.probation = None;
        } else {
            // A big jump once is a stray packet (or a hostile one), not a restart: it must not
            // wipe the figures (RFC 3550 A.1 waits for a second packet in sequence).
            self.probation = Some(seq.wrapping_add(1));
            self.received -= 1;
        }
    }
}

/// Minimum of the values pushed in the last one to two windows.
#[derive(Debug, Default)]
struct MinWindow {
    started: Option<Duration>,
    current: Option<f64>,
    previous: Option<f64>,
}

impl MinWindow {
    fn push(&mut self, at: Duration, value: f64) {
        let half = DELAY_WINDOW / 2;
        match self.started {
            Some(start) if at.saturating_sub(start) < half => {}
            Some(start) if at.saturating_sub(start) < 2 * half => {
                self.previous = self.current.take();
                self.started = Some(start + half);
            }
            _ => {
                self.previous = None;
                self.current = None;
                self.started = Some(at);
            }
        }
        self.current = Some(self.current.map_or(value, |c| c.min(value)));
    }

    fn min(&self) -> Option<f64> {
        match (self.current, self.previous) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The A/V offset of one publisher in the program, in seconds: how much later its picture
/// plays than its sound (positive: the picture trails). `None` until both streams had a sender
/// report.
pub fn av_offset_secs(video: &ReceptionStats, audio: &ReceptionStats) -> Option<f64> {
    Some(video.capture_delay_secs? - audio.capture_delay_secs?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// NTP timestamp for a Unix time in seconds.
    fn ntp(unix_secs: f64) -> u64 {
        let secs = unix_secs + NTP_UNIX_OFFSET_SECS;
        ((secs.trunc() as u64) << 32) | ((secs.fract() * 4_294_967_296.0) as u64)
    }

    #[test]
    fn counts_lost_packets_across_the_sequence_wrap() {
        let mut r = Reception::new(90_000);
        for (i, seq) in [65_533u16, 65_534, 0, 1, 3].into_iter().enumerate() {
            r.on_packet(seq, 0, ms(i as u64 * 10));
        }
        let s = r.stats();
        // 65533..=3 is 7 packets; 65535 and 2 never came.
        assert_eq!(s.expected, 7);
        assert_eq!(s.lost, 2);
    }

    #[test]
    fn reordered_packets_are_not_lost() {
        let mut r = Reception::new(90_000);
        for seq in [10u16, 12, 11, 13] {
            r.on_packet(seq, 0, ms(0));
        }
        assert_eq!(r.stats().lost, 0);
        assert_eq!(r.stats().expected, 4);
    }

    #[test]
    fn a_restarted_sequence_is_not_counted_as_loss() {
        let mut r = Reception::new(90_000);
        r.on_packet(100, 0, ms(0));
        r.on_packet(101, 0, ms(10));
        r.on_packet(40_000, 0, ms(20));
        r.on_packet(40_001, 0, ms(30));
        r.on_packet(40_003, 0, ms(40));
        assert_eq!(r.stats().expected, 4);
        assert_eq!(r.stats().lost, 1);
    }

    #[test]
    fn a_stray_packet_far_off_does_not_wipe_the_figures() {
        let mut r = Reception::new(90_000);
        for seq in [100u16, 101, 103] {
            r.on_packet(seq, 0, ms(0));
        }
        r.on_packet(30_000, 0, ms(10));
        r.on_packet(104, 0, ms(20));
        let s = r.stats();
        assert_eq!(s.expected, 5);
        assert_eq!(s.lost, 1);
    }

    #[test]
    fn steady_packets_have_no_jitter_and_uneven_ones_some() {
        let mut steady = Reception::new(48_000);
        let mut uneven = Reception::new(48_000);
        for i in 0..200u32 {
            // 20 ms audio frames: 960 ticks apart.
            steady.on_packet(i as u16, i * 960, ms(u64::from(i) * 20));
            let wobble = if i % 2 == 0 { 0 } else { 8 };
            uneven.on_packet(i as u16, i * 960, ms(u64::from(i) * 20 + wobble));
        }
        assert!(steady.stats().jitter_secs < 1e-6, "{:?}", steady.stats());
        // Every transit difference is 8 ms, so J converges to 8 ms.
        let j = uneven.stats().jitter_secs;
        assert!((j - 0.008).abs() < 0.0005, "jitter {j}");
    }

    #[test]
    fn capture_delay_needs_a_sender_report_and_takes_the_minimum() {
        let mut r = Reception::new(90_000);
        let t0 = 1_800_000_000.0;
        r.on_packet(1, 0, Duration::from_secs_f64(t0 + 0.050));
        assert_eq!(r.stats().capture_delay_secs, None);
        // The sender's clock says RTP time 0 was captured at t0.
        r.on_sender_report(ntp(t0), 0);
        // Frames every 33 ms (2970 ticks), arriving 40 ms after capture, one of them 10 ms late.
        for i in 1..30u32 {
            let late = if i == 7 { 0.010 } else { 0.0 };
            let arrival = t0 + f64::from(i) * 0.033 + 0.040 + late;
            r.on_packet(1 + i as u16, i * 2970, Duration::from_secs_f64(arrival));
        }
        let d = r.stats().capture_delay_secs.expect("delay");
        assert!((d - 0.040).abs() < 0.001, "delay {d}");
    }

    #[test]
    fn the_delay_window_forgets_old_minimums() {
        let mut w = MinWindow::default();
        w.push(ms(0), 0.010);
        w.push(ms(500), 0.050);
        assert_eq!(w.min(), Some(0.010));
        w.push(ms(1_200), 0.050);
        // The first half window (with 0.010) is now the previous one: still counted.
        assert_eq!(w.min(), Some(0.010));
        w.push(ms(2_300), 0.050);
        assert_eq!(w.min(), Some(0.050));
        // A long silence starts afresh.
        w.push(ms(10_000), 0.070);
        assert_eq!(w.min(), Some(0.070));
    }

    #[test]
    fn av_offset_is_video_delay_minus_audio_delay() {
        let t0 = 1_800_000_000.0;
        let mut video = Reception::new(90_000);
        let mut audio = Reception::new(48_000);
        video.on_sender_report(ntp(t0), 1_000);
        audio.on_sender_report(ntp(t0), 5_000);
        for i in 0..20u32 {
            let capture = f64::from(i) * 0.020;
            // Video leaves the sender 30 ms after capture (encode), audio 5 ms.
            video.on_packet(
                i as u16,
                1_000 + i * 1_800,
                Duration::from_secs_f64(t0 + capture + 0.030),
            );
            audio.on_packet(
                i as u16,
                5_000 + i * 960,
                Duration::from_secs_f64(t0 + capture + 0.005),
            );
        }
        let offset = av_offset_secs(&video.stats(), &audio.stats()).unwrap();
        assert!((offset - 0.025).abs() < 0.001, "offset {offset}");
        assert_eq!(
            av_offset_secs(&video.stats(), &ReceptionStats::default()),
            None
        );
    }
}
