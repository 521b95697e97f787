//! When a room's mixer dies or hangs: restart it, backing off in a crash loop, and give up after
//! too many crashes in a short window. Pure: the caller passes `now`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Limits of automatic mixer recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashPolicy {
    /// Crashes are counted within this sliding window.
    pub window: Duration,
    /// This many crashes within `window` end the broadcast as `failed`.
    pub max_crashes: usize,
    /// Delay before the second restart in a window; doubles per crash up to `max_delay`.
    /// The first restart is immediate: a one-off crash should cost as little output as possible.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// A running mixer that reports nothing (no heartbeat, ~1/s) for this long is hung.
    pub heartbeat_timeout: Duration,
    /// A starting mixer gets this long to report anything (pipeline start can be slow under load).
    pub startup_timeout: Duration,
    /// A running mixer whose heartbeats go on while its program frame count stands still for
    /// this long has stalled (its pipeline stopped flowing): it is replaced like a hung one.
    /// One that has not put out its first frame gets `startup_timeout` from its first heartbeat.
    pub output_stall_timeout: Duration,
}

impl Default for CrashPolicy {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(60),
            max_crashes: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(4),
            startup_timeout: Duration::from_secs(15),
            output_stall_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// Restart after this delay.
    RestartAfter(Duration),
    /// Too many crashes: `count` within the window.
    GiveUp { count: usize },
}

#[derive(Debug, Default)]
pub struct CrashHistory {
    crashes: VecDeque<Instant>,
}

impl CrashHistory {
    /// Records a crash at `now` and decides what to do.
    pub fn record(&mut self, now: Instant, policy: &CrashPolicy) -> RestartDecision {
        while self
            .crashes
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > policy.window)
        {
            self.crashes.pop_front();
        }
        self.crashes.push_back(now);
        let count = self.crashes.len();
        if count >= policy.max_crashes {
            return RestartDecision::GiveUp { count };
        }
        let delay = match count {
            1 => Duration::ZERO,
            n => policy
                .base_delay
                .saturating_mul(1 << (n - 2).min(16))
                .min(policy.max_delay),
        };
        RestartDecision::RestartAfter(delay)
    }

    /// A broadcast that was stopped on purpose starts with a clean slate.
    pub fn clear(&mut self) {
        self.crashes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_restart_is_immediate_then_backs_off_then_gives_up() {
        let policy = CrashPolicy::default();
        let mut history = CrashHistory::default();
        let t0 = Instant::now();
        let decisions: Vec<_> = (0..5)
            .map(|i| history.record(t0 + Duration::from_secs(i), &policy))
            .collect();
        assert_eq!(
            decisions,
            vec![
                RestartDecision::RestartAfter(Duration::ZERO),
                RestartDecision::RestartAfter(Duration::from_millis(500)),
                RestartDecision::RestartAfter(Duration::from_millis(1000)),
                RestartDecision::RestartAfter(Duration::from_millis(2000)),
                RestartDecision::GiveUp { count: 5 },
            ]
        );
    }

    #[test]
    fn crashes_outside_the_window_are_forgotten() {
        let policy = CrashPolicy::default();
        let mut history = CrashHistory::default();
        let t0 = Instant::now();
        for i in 0..4 {
            history.record(t0 + Duration::from_secs(i), &policy);
        }
        let later = t0 + policy.window + Duration::from_secs(10);
        assert_eq!(
            history.record(later, &policy),
            RestartDecision::RestartAfter(Duration::ZERO)
        );
    }

    #[test]
    fn delay_is_capped() {
        let policy = CrashPolicy {
            max_crashes: 100,
            ..CrashPolicy::default()
        };
        let mut history = CrashHistory::default();
        let t0 = Instant::now();
        let mut last = RestartDecision::RestartAfter(Duration::ZERO);
        for i in 0..30 {
            last = history.record(t0 + Duration::from_millis(i), &policy);
        }
        assert_eq!(last, RestartDecision::RestartAfter(policy.max_delay));
    }
}
