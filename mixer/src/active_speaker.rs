//! Active speaker from audio levels, without flapping: a challenger takes over only after being
//! clearly louder than the current speaker for a whole hold time. Pure: levels and `now` come in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Tuning of the detector.
#[derive(Debug, Clone, Copy)]
pub struct SpeakerTuning {
    /// A challenger must stay the loudest for this long before it becomes the speaker.
    pub hold: Duration,
    /// Below this smoothed level (dBFS) a participant counts as silent.
    pub threshold_db: f64,
    /// A challenger must be this much louder than the current speaker (dB).
    pub margin_db: f64,
    /// Weight of a new level in the exponential moving average (0..1].
    pub smoothing: f64,
}

impl Default for SpeakerTuning {
    fn default() -> Self {
        Self {
            hold: Duration::from_millis(1500),
            threshold_db: -50.0,
            margin_db: 6.0,
            smoothing: 0.3,
        }
    }
}

/// Silence, as a smoothed level; what a participant starts at.
const FLOOR_DB: f64 = -127.0;

#[derive(Debug)]
pub struct ActiveSpeaker {
    tuning: SpeakerTuning,
    levels: HashMap<String, f64>,
    current: Option<String>,
    /// Who is louder than the current speaker, and since when.
    challenger: Option<(String, Instant)>,
}

impl ActiveSpeaker {
    pub fn new(tuning: SpeakerTuning) -> Self {
        Self {
            tuning,
            levels: HashMap::new(),
            current: None,
            challenger: None,
        }
    }

    pub fn current(&self) -> Option<&str> {
        self.current.as_deref()
    }

    /// Feeds one level reading (RMS dBFS, e.g. the loudest channel of a `level` message).
    /// Returns the new speaker when it changed.
    pub fn update(&mut self, now: Instant, participant: &str, rms_db: f64) -> Option<String> {
        let rms_db = if rms_db.is_finite() {
            rms_db.max(FLOOR_DB)
        } else {
            FLOOR_DB
        };
        let a = self.tuning.smoothing;
        let level = self
            .levels
            .entry(participant.to_string())
            .or_insert(FLOOR_DB);
        *level = a * rms_db + (1.0 - a) * *level;
        self.decide(now)
    }

    /// A participant left: it can no longer be the speaker. True if it was the speaker.
    pub fn forget(&mut self, participant: &str) -> bool {
        self.levels.remove(participant);
        if self
            .challenger
            .as_ref()
            .is_some_and(|(c, _)| c == participant)
        {
            self.challenger = None;
        }
        let was_speaking = self.current.as_deref() == Some(participant);
        if was_speaking {
            self.current = None;
        }
        was_speaking
    }

    fn decide(&mut self, now: Instant) -> Option<String> {
        let loudest = self
            .levels
            .iter()
            .filter(|(_, &db)| db >= self.tuning.threshold_db)
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(id, db)| (id.clone(), *db));
        let Some((loudest, loudest_db)) = loudest else {
            // Everyone is quiet: keep the last speaker on screen.
            self.challenger = None;
            return None;
        };
        if self.current.as_deref() == Some(loudest.as_str()) {
            self.challenger = None;
            return None;
        }
        let current_db = self
            .current
            .as_ref()
            .and_then(|c| self.levels.get(c))
            .copied()
            .unwrap_or(FLOOR_DB);
        if loudest_db < current_db + self.tuning.margin_db {
            self.challenger = None;
            return None;
        }
        match &self.challenger {
            Some((c, since)) if *c == loudest => {
                // Nobody spoke before: the first voice is the speaker at once.
                if self.current.is_none() || now.duration_since(*since) >= self.tuning.hold {
                    self.current = Some(loudest.clone());
                    self.challenger = None;
                    return Some(loudest);
                }
                None
            }
            _ => {
                if self.current.is_none() {
                    self.current = Some(loudest.clone());
                    return Some(loudest);
                }
                self.challenger = Some((loudest, now));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STEP: Duration = Duration::from_millis(100);

    /// Feeds `levels` (one reading per participant) every 100 ms for `ticks`; returns changes.
    fn run(
        det: &mut ActiveSpeaker,
        t: &mut Instant,
        ticks: u32,
        levels: &[(&str, f64)],
    ) -> Vec<String> {
        let mut changes = Vec::new();
        for _ in 0..ticks {
            *t += STEP;
            for (p, db) in levels {
                changes.extend(det.update(*t, p, *db));
            }
        }
        changes
    }

    #[test]
    fn first_voice_becomes_the_speaker_quickly() {
        let mut det = ActiveSpeaker::new(SpeakerTuning::default());
        let mut t = Instant::now();
        let changes = run(&mut det, &mut t, 5, &[("a", -20.0), ("b", -90.0)]);
        assert_eq!(changes, vec!["a".to_string()]);
    }

    #[test]
    fn a_challenger_needs_the_whole_hold_time() {
        let mut det = ActiveSpeaker::new(SpeakerTuning::default());
        let mut t = Instant::now();
        run(&mut det, &mut t, 10, &[("a", -20.0), ("b", -90.0)]);
        // b talks over a for 1.0 s: not long enough.
        assert!(run(&mut det, &mut t, 10, &[("a", -90.0), ("b", -15.0)]).is_empty());
        assert_eq!(det.current(), Some("a"));
        // ...and keeps talking: b takes over within hold + smoothing.
        let changes = run(&mut det, &mut t, 10, &[("a", -90.0), ("b", -15.0)]);
        assert_eq!(changes, vec!["b".to_string()]);
    }

    #[test]
    fn silence_keeps_the_last_speaker_and_leaving_clears_it() {
        let mut det = ActiveSpeaker::new(SpeakerTuning::default());
        let mut t = Instant::now();
        run(&mut det, &mut t, 10, &[("a", -20.0)]);
        assert!(run(&mut det, &mut t, 50, &[("a", -100.0), ("b", -100.0)]).is_empty());
        assert_eq!(det.current(), Some("a"));
        assert!(det.forget("a"));
        assert_eq!(det.current(), None);
    }

    proptest! {
        /// Two people alternating faster than the hold time never cause a switch per burst.
        #[test]
        fn alternating_bursts_shorter_than_hold_do_not_flap(burst in 1u32..10, rounds in 2usize..20) {
            let mut det = ActiveSpeaker::new(SpeakerTuning::default());
            let mut t = Instant::now();
            run(&mut det, &mut t, 10, &[("a", -20.0), ("b", -90.0)]);
            let mut switches = 0;
            for r in 0..rounds {
                let (la, lb) = if r % 2 == 0 { (-90.0, -20.0) } else { (-20.0, -90.0) };
                switches += run(&mut det, &mut t, burst, &[("a", la), ("b", lb)]).len();
            }
            prop_assert_eq!(switches, 0);
        }

        #[test]
        fn garbage_levels_never_panic(levels in proptest::collection::vec(proptest::num::f64::ANY, 1..50)) {
            let mut det = ActiveSpeaker::new(SpeakerTuning::default());
            let mut t = Instant::now();
            for (i, db) in levels.into_iter().enumerate() {
                t += STEP;
                det.update(t, if i % 2 == 0 { "a" } else { "b" }, db);
            }
        }
    }
}
