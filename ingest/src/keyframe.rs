//! Keyframe-request throttle: a PLI makes the publisher send an expensive keyframe, and several
//! consumers (mixer restart, subscribers joining, loss) may ask at once. One request per track
//! per interval is enough; the rest are dropped. Pure: the caller passes `now`.

use std::time::{Duration, Instant};

/// Minimum spacing of PLIs to one publisher track.
pub(crate) const KEYFRAME_MIN_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub(crate) struct KeyframeThrottle {
    min_interval: Duration,
    last_sent: Option<Instant>,
}

impl KeyframeThrottle {
    pub fn new(min_interval: Duration) -> Self {
        Self {
            min_interval,
            last_sent: None,
        }
    }

    /// True if a request may be sent at `now` (and records it as sent).
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        match self.last_sent {
            Some(last) if now.saturating_duration_since(last) < self.min_interval => false,
            _ => {
                self.last_sent = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_request_passes_then_throttles_until_interval() {
        let t0 = Instant::now();
        let mut throttle = KeyframeThrottle::new(Duration::from_millis(500));
        assert!(throttle.try_acquire(t0));
        assert!(!throttle.try_acquire(t0));
        assert!(!throttle.try_acquire(t0 + Duration::from_millis(499)));
        assert!(throttle.try_acquire(t0 + Duration::from_millis(500)));
        assert!(!throttle.try_acquire(t0 + Duration::from_millis(700)));
        assert!(throttle.try_acquire(t0 + Duration::from_millis(1000)));
    }

    #[test]
    fn clock_going_backwards_does_not_unlock() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut throttle = KeyframeThrottle::new(Duration::from_millis(500));
        assert!(throttle.try_acquire(t0));
        assert!(!throttle.try_acquire(t0 - Duration::from_secs(5)));
    }
}
