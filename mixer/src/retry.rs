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

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(8),
            max_attempts: 10,
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
        assert_eq!(b.delay(0), ms(500));
        assert_eq!(b.delay(1), ms(1000));
        assert_eq!(b.delay(4), ms(8000));
        assert_eq!(b.delay(9), ms(8000));
        assert_eq!(b.delay(10), None);
        let long = Backoff {
            max_attempts: 100,
            ..b
        };
        assert_eq!(long.delay(64), ms(8000), "no overflow on large attempts");
    }
}
