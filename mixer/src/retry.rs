//! Pure RTMP reconnect policy: exponential backoff with a cap and a give-up count.

use std::time::Duration;

/// Delay before reconnect attempt `n` (0-based): `initial * 2^n`, capped at `max`; `None` once
/// `max_attempts` have been used, meaning: give up and report the output Failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub max_attempts: u32,
}

/// Short and capped at 1 s: an output must be back within ~1 s of its server returning, and a
/// reconnect attempt costs almost nothing (one TCP connect). Giving up only after ~2 minutes of
/// continuous failure rides out a CDN edge restart; an output that never connected is failed
/// at once elsewhere (see `output_state`), so this never retries a wrong URL forever.
impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(1),
            max_attempts: 120,
        }
    }
}

impl Backoff {
    pub fn delay(&self, attempt: u32) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        Some(self.initial.saturating_mul(factor).min(self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_gives_up() {
        let b = Backoff::default();
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(b.delay(0), ms(250));
        assert_eq!(b.delay(1), ms(500));
        assert_eq!(b.delay(2), ms(1000));
        assert_eq!(b.delay(9), ms(1000));
        assert_eq!(b.delay(119), ms(1000));
        assert_eq!(b.delay(120), None);
        let long = Backoff {
            max_attempts: 100,
            ..b
        };
        assert_eq!(long.delay(64), ms(1000), "no overflow on large attempts");
    }
}
