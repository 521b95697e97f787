//! When `costream publish` reconnects, and how often: pure, so the policy is tested without a
//! server.

use std::time::Duration;

use costream_ingest::IngestError;

/// The first retry comes this soon after a failed attempt.
const FIRST_DELAY: Duration = Duration::from_millis(200);
/// Retries never wait longer than this. A restarting serve refuses connections for a second or
/// two and answers at once when it is back; capping at 1 s keeps the wait after it is back
/// under a second (the goal: back in the room ≤ 3 s after serve answers), at the cost
/// of one refused TCP connection a second while it is down.
const MAX_DELAY: Duration = Duration::from_secs(1);

/// Doubling delays from [`FIRST_DELAY`] up to [`MAX_DELAY`].
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: FIRST_DELAY }
    }
}

impl Backoff {
    /// The wait before the next attempt; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(MAX_DELAY);
        delay
    }
}

/// Whether a failed WHIP attempt can never succeed by trying again: the server answered that
/// the token, the room or this participant is not (or no longer) welcome, or that the offer
/// itself is wrong. Everything else — connection refused, timeouts, 5xx, 429 rate limits, 409
/// room full — may pass, so it is retried.
pub fn is_permanent(error: &IngestError) -> bool {
    match error {
        IngestError::Http { status, .. } => matches!(status, 400 | 401 | 403 | 404 | 410 | 415),
        IngestError::InvalidSdp(_) | IngestError::NoMedia | IngestError::UnsupportedCodec(_) => {
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let mut backoff = Backoff::default();
        let delays: Vec<u64> = (0..6)
            .map(|_| backoff.next_delay().as_millis() as u64)
            .collect();
        assert_eq!(delays, [200, 400, 800, 1000, 1000, 1000]);
    }

    #[test]
    fn gone_tokens_and_rooms_stop_retrying_the_rest_goes_on() {
        let http = |status| IngestError::Http {
            status,
            body: String::new(),
        };
        for status in [401, 403, 404] {
            assert!(is_permanent(&http(status)), "{status}");
        }
        for status in [409, 429, 500, 502, 503] {
            assert!(!is_permanent(&http(status)), "{status}");
        }
        assert!(!is_permanent(&IngestError::Whip(
            "POST http://127.0.0.1:8080/whip/r: connection refused".into()
        )));
        assert!(!is_permanent(&IngestError::Closed));
    }
}
