//! Pure keyframe-request throttle: a decoder may ask for a keyframe on every lost packet, but a
//! publisher should get at most one PLI per input per interval.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Remembers when each input last got a keyframe request forwarded.
#[derive(Debug)]
pub struct KeyframeThrottle {
    min_interval: Duration,
    last: HashMap<String, Instant>,
}

impl KeyframeThrottle {
    pub fn new(min_interval: Duration) -> Self {
        Self {
            min_interval,
            last: HashMap::new(),
        }
    }

    /// Whether a request for `input_id` at `now` should be forwarded; records it if so.
    pub fn allow(&mut self, input_id: &str, now: Instant) -> bool {
        match self.last.get(input_id) {
            Some(&t) if now.saturating_duration_since(t) < self.min_interval => false,
            _ => {
                self.last.insert(input_id.to_string(), now);
                true
            }
        }
    }

    /// Forgets a removed input so a re-added one with the same id is asked at once.
    pub fn forget(&mut self, input_id: &str) {
        self.last.remove(input_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_one_per_interval_per_input() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut k = KeyframeThrottle::new(ms(500));
        assert!(k.allow("a", t0));
        assert!(!k.allow("a", t0 + ms(100)));
        assert!(
            k.allow("b", t0 + ms(100)),
            "inputs are throttled independently"
        );
        assert!(!k.allow("a", t0 + ms(499)));
        assert!(k.allow("a", t0 + ms(500)));
        assert!(!k.allow("a", t0 + ms(600)));
        k.forget("a");
        assert!(k.allow("a", t0 + ms(601)));
    }
}
