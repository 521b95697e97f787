//! When an unused room closes. Pure: the registry feeds it what each room's latest status says
//! and the time.
//!
//! Why: rooms used to live until someone ended them, so a burst of create requests filled
//! `limits.max_rooms` until a restart. As LiveKit does, a room nobody joined closes
//! `empty_timeout` after it was created, and a room everyone left closes `departure_timeout`
//! after the last one left. A live room never closes this way (its mixer keeps the outputs
//! going with a slate); once it stops, the departure countdown starts then.

use std::time::{Duration, Instant};

/// The two timeouts (`[rooms]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub empty_timeout: Duration,
    pub departure_timeout: Duration,
}

/// What the registry sees of a room at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occupancy {
    pub participants: usize,
    pub live: bool,
}

/// One room's countdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomClock {
    /// Someone has been in the room.
    ever_joined: bool,
    /// Since when the room has been empty and offline (`None`: occupied or live).
    idle_since: Option<Instant>,
}

impl RoomClock {
    /// A room created at `now`: empty from the start.
    pub fn new(now: Instant) -> Self {
        Self {
            ever_joined: false,
            idle_since: Some(now),
        }
    }

    /// Takes in the room's occupancy at `now`; returns when it closes (`None`: it stays).
    pub fn observe(
        &mut self,
        now: Instant,
        seen: Occupancy,
        lifetime: Lifetime,
    ) -> Option<Instant> {
        if seen.participants > 0 {
            self.ever_joined = true;
            self.idle_since = None;
            return None;
        }
        if seen.live {
            self.idle_since = None;
            return None;
        }
        let since = *self.idle_since.get_or_insert(now);
        Some(since + self.timeout(lifetime))
    }

    /// When the room closes if nothing changes (`None`: occupied or live).
    pub fn closes_at(&self, lifetime: Lifetime) -> Option<Instant> {
        self.idle_since.map(|since| since + self.timeout(lifetime))
    }

    fn timeout(&self, lifetime: Lifetime) -> Duration {
        if self.ever_joined {
            lifetime.departure_timeout
        } else {
            lifetime.empty_timeout
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIFETIME: Lifetime = Lifetime {
        empty_timeout: Duration::from_secs(600),
        departure_timeout: Duration::from_secs(300),
    };

    fn seen(participants: usize, live: bool) -> Occupancy {
        Occupancy { participants, live }
    }

    #[test]
    fn a_room_nobody_joins_closes_after_the_empty_timeout() {
        let t0 = Instant::now();
        let mut clock = RoomClock::new(t0);
        let at = clock.observe(t0 + Duration::from_secs(5), seen(0, false), LIFETIME);
        assert_eq!(at, Some(t0 + Duration::from_secs(600)));
    }

    #[test]
    fn the_departure_countdown_starts_when_the_last_one_leaves_and_stops_when_someone_comes() {
        let t0 = Instant::now();
        let mut clock = RoomClock::new(t0);
        assert_eq!(
            clock.observe(t0 + Duration::from_secs(10), seen(2, false), LIFETIME),
            None
        );
        let left = t0 + Duration::from_secs(3600);
        assert_eq!(
            clock.observe(left, seen(0, false), LIFETIME),
            Some(left + Duration::from_secs(300))
        );
        // Still counting from the departure, not from the latest look.
        assert_eq!(
            clock.observe(left + Duration::from_secs(100), seen(0, false), LIFETIME),
            Some(left + Duration::from_secs(300))
        );
        assert_eq!(
            clock.observe(left + Duration::from_secs(200), seen(1, false), LIFETIME),
            None
        );
        assert_eq!(clock.closes_at(LIFETIME), None);
    }

    #[test]
    fn a_live_room_stays_and_counts_down_from_when_it_stops() {
        let t0 = Instant::now();
        let mut clock = RoomClock::new(t0);
        clock.observe(t0, seen(1, false), LIFETIME);
        assert_eq!(
            clock.observe(t0 + Duration::from_secs(60), seen(0, true), LIFETIME),
            None
        );
        let stopped = t0 + Duration::from_secs(7200);
        assert_eq!(
            clock.observe(stopped, seen(0, false), LIFETIME),
            Some(stopped + Duration::from_secs(300))
        );
    }
}
