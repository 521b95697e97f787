//! The RTMP origin's connection slots: a server-wide bound on connections in which viewers and
//! clients that have not published cannot take the places the mixers need to publish.
//!
//! At accept time nothing tells a mixer from a stranger (the publish key arrives a few round
//! trips later, with `publish`), so a plain reserve that only publishers may enter cannot be
//! entered at all. Instead:
//!
//! - `max_connections - publisher_slots` connections are *shared*: any client, until it
//!   publishes or for as long as it plays.
//! - The `publisher_slots` left are the *reserve*. While the shared part is full, a new
//!   connection enters the reserve as a *candidate*: it may publish (with a valid key) but not
//!   play, and when the reserve is full a candidate is closed to make room: the oldest one of
//!   the client address (IPv4, or IPv6 /64) holding the most candidates, newcomer included. A
//!   flood from a few addresses thus only churns through its own candidates; a mixer's
//!   connection, between its accept and its `publish` (a few milliseconds), is evicted only
//!   if its own address holds as many candidates as the busiest other one.
//! - A connection whose publish key is valid becomes a *publisher*, in the reserve. At most
//!   `publisher_slots` publish at once; beyond that the publish is refused.
//!
//! [`Accounting`] is the pure bookkeeping; [`Slots`] shares it between connection tasks and
//! closes evicted candidates through a [`CancellationToken`].

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// Bounds of the origin's connections (`[origin] max_connections`, `publisher_slots`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotLimits {
    /// Most connections at once, publishers included.
    pub max_connections: usize,
    /// Of those, the places only publishers (and would-be publishers) may hold.
    pub publisher_slots: usize,
}

impl Default for SlotLimits {
    fn default() -> Self {
        Self {
            max_connections: 2048,
            publisher_slots: 256,
        }
    }
}

impl SlotLimits {
    /// Connections not publishing (unauthenticated clients and players) may hold this many.
    fn shared(&self) -> usize {
        self.max_connections.saturating_sub(self.publisher_slots)
    }
}

/// Identifies one connection in the accounting.
pub type ConnId = u64;

/// Where a connection is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The shared part: not (yet) publishing, or playing.
    Shared,
    /// A candidate in the reserve: may publish, may not play, the first to be evicted.
    Candidate,
    /// Publishing with a valid key.
    Publisher,
}

/// The answer to a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted {
        place: Place,
        /// A candidate to close to make room for this one.
        evict: Option<ConnId>,
    },
    /// Full of publishers and shared connections: close it at once.
    Refused,
}

/// Why a connection may not take the role it asked for; it is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SlotRefused {
    #[error("all publisher slots are taken")]
    PublishersFull,
    #[error("the origin is full: only publishers may connect now")]
    SharedFull,
    #[error("the connection was evicted to make room")]
    Evicted,
}

/// Counters, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotCounts {
    pub shared: usize,
    pub candidates: usize,
    pub publishers: usize,
    /// New connections closed at once because everything was taken, since start.
    pub refused: u64,
    /// Candidates closed to make room for newer connections, since start.
    pub evicted: u64,
}

/// The bookkeeping. Invariants: `shared <= limits.shared()` and
/// `publishers + candidates.len() <= limits.publisher_slots`.
#[derive(Debug)]
pub struct Accounting {
    limits: SlotLimits,
    shared: usize,
    /// Oldest first, with their client key ([`crate::per_ip::client_key`]).
    candidates: VecDeque<(ConnId, IpAddr)>,
    publishers: usize,
    refused: u64,
    evicted: u64,
}

impl Accounting {
    pub fn new(limits: SlotLimits) -> Self {
        Self {
            limits,
            shared: 0,
            candidates: VecDeque::new(),
            publishers: 0,
            refused: 0,
            evicted: 0,
        }
    }

    /// A new connection `id` from `ip`: shared while there is room, else a candidate in the
    /// reserve (evicting one if the reserve is full), else refused.
    pub fn admit(&mut self, id: ConnId, ip: IpAddr) -> Admission {
        if self.shared < self.limits.shared() {
            self.shared += 1;
            return Admission::Admitted {
                place: Place::Shared,
                evict: None,
            };
        }
        if self.publishers >= self.limits.publisher_slots {
            self.refused += 1;
            return Admission::Refused;
        }
        let key = crate::per_ip::client_key(ip);
        let evict = self.make_room_in_reserve(Some(key));
        self.candidates.push_back((id, key));
        Admission::Admitted {
            place: Place::Candidate,
            evict,
        }
    }

    /// Connection `id`, counted at `from`, presented a valid publish key: it becomes a
    /// publisher (a shared connection evicts the oldest candidate if the reserve is full).
    pub fn publish(&mut self, id: ConnId, from: Place) -> Result<Option<ConnId>, SlotRefused> {
        match from {
            Place::Publisher => Ok(None),
            Place::Candidate => {
                // Its place in the reserve becomes its publisher slot.
                self.remove_candidate(id)?;
                self.publishers += 1;
                Ok(None)
            }
            Place::Shared => {
                if self.publishers >= self.limits.publisher_slots {
                    return Err(SlotRefused::PublishersFull);
                }
                let evict = self.make_room_in_reserve(None);
                self.shared -= 1;
                self.publishers += 1;
                Ok(evict)
            }
        }
    }

    /// Connection `id`, counted at `from`, asked to play: a candidate moves to the shared part
    /// if it has room (it would otherwise hold a publisher's place while playing).
    pub fn play(&mut self, id: ConnId, from: Place) -> Result<Place, SlotRefused> {
        match from {
            Place::Shared => Ok(Place::Shared),
            Place::Publisher => Err(SlotRefused::PublishersFull),
            Place::Candidate => {
                if self.shared >= self.limits.shared() {
                    return Err(SlotRefused::SharedFull);
                }
                self.remove_candidate(id)?;
                self.shared += 1;
                Ok(Place::Shared)
            }
        }
    }

    /// Connection `id`, counted at `place`, closed.
    pub fn release(&mut self, id: ConnId, place: Place) {
        match place {
            Place::Shared => self.shared = self.shared.saturating_sub(1),
            // Already gone if it was evicted.
            Place::Candidate => {
                let _ = self.remove_candidate(id);
            }
            Place::Publisher => self.publishers = self.publishers.saturating_sub(1),
        }
    }

    pub fn counts(&self) -> SlotCounts {
        SlotCounts {
            shared: self.shared,
            candidates: self.candidates.len(),
            publishers: self.publishers,
            refused: self.refused,
            evicted: self.evicted,
        }
    }

    /// With the reserve full (and not all publishers), a candidate goes: the oldest of the
    /// client key with the most candidates (counting `newcomer`'s key with it), so one
    /// address's flood evicts its own connections before anyone else's. Candidates from
    /// 127.0.0.1 / ::1 are never evicted: this machine's mixers connect from there (and only
    /// local users can flood from it), so a flood spread over many addresses cannot push a
    /// mixer out between its connect and its publish.
    fn make_room_in_reserve(&mut self, newcomer: Option<IpAddr>) -> Option<ConnId> {
        if self.publishers + self.candidates.len() < self.limits.publisher_slots {
            return None;
        }
        // This machine's own address only: tests (and the fleet script) stand other machines
        // in on 127.0.0.2, 127.0.0.3, …, which must count as strangers.
        let evictable = |key: &IpAddr| match key {
            IpAddr::V4(v4) => *v4 != std::net::Ipv4Addr::LOCALHOST,
            IpAddr::V6(v6) => !v6.is_loopback(),
        };
        let mut per_key: HashMap<IpAddr, usize> = HashMap::new();
        for key in self.candidates.iter().map(|&(_, key)| key).chain(newcomer) {
            *per_key.entry(key).or_default() += 1;
        }
        let most = per_key
            .iter()
            .filter(|(key, _)| evictable(key))
            .map(|(_, &n)| n)
            .max()
            .unwrap_or(0);
        let at = self
            .candidates
            .iter()
            .position(|(_, key)| evictable(key) && per_key[key] == most)
            // The newcomer's key alone has the most: its own oldest is not here; take the
            // oldest that may go.
            .or_else(|| self.candidates.iter().position(|(_, key)| evictable(key)))?;
        let (evicted, _) = self.candidates.remove(at)?;
        self.evicted += 1;
        Some(evicted)
    }

    fn remove_candidate(&mut self, id: ConnId) -> Result<(), SlotRefused> {
        let at = self
            .candidates
            .iter()
            .position(|&(c, _)| c == id)
            .ok_or(SlotRefused::Evicted)?;
        self.candidates.remove(at);
        Ok(())
    }
}

/// [`Accounting`] shared by the listener and its connection tasks.
#[derive(Clone)]
pub struct Slots(Arc<Mutex<Shared>>);

struct Shared {
    accounting: Accounting,
    next_id: ConnId,
    /// Candidates' eviction signals (only candidates can be evicted).
    evictors: HashMap<ConnId, CancellationToken>,
}

/// One connection's place; released on drop.
pub struct Slot {
    slots: Slots,
    id: ConnId,
    place: Place,
    evicted: CancellationToken,
}

impl Slots {
    pub fn new(limits: SlotLimits) -> Self {
        Self(Arc::new(Mutex::new(Shared {
            accounting: Accounting::new(limits),
            next_id: 0,
            evictors: HashMap::new(),
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // Plain counters: a panic elsewhere leaves nothing half-done worth refusing service for.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a new connection from `ip`, or `None` (close it; counted in
    /// [`SlotCounts::refused`]).
    pub fn admit(&self, ip: IpAddr) -> Option<Slot> {
        let mut shared = self.lock();
        let id = shared.next_id;
        shared.next_id += 1;
        let Admission::Admitted { place, evict } = shared.accounting.admit(id, ip) else {
            return None;
        };
        shared.evict(evict);
        let evicted = CancellationToken::new();
        if place == Place::Candidate {
            shared.evictors.insert(id, evicted.clone());
        }
        Some(Slot {
            slots: self.clone(),
            id,
            place,
            evicted,
        })
    }

    pub fn counts(&self) -> SlotCounts {
        self.lock().accounting.counts()
    }
}

impl Shared {
    fn evict(&mut self, evict: Option<ConnId>) {
        if let Some(token) = evict.and_then(|id| self.evictors.remove(&id)) {
            token.cancel();
        }
    }
}

impl Slot {
    /// The connection presented a valid publish key.
    pub fn to_publisher(&mut self) -> Result<(), SlotRefused> {
        let mut shared = self.slots.lock();
        let evict = shared.accounting.publish(self.id, self.place)?;
        shared.evict(evict);
        shared.evictors.remove(&self.id);
        self.place = Place::Publisher;
        Ok(())
    }

    /// The connection asked to play.
    pub fn to_player(&mut self) -> Result<(), SlotRefused> {
        let mut shared = self.slots.lock();
        self.place = shared.accounting.play(self.id, self.place)?;
        shared.evictors.remove(&self.id);
        Ok(())
    }

    /// Cancelled when this candidate is evicted to make room.
    pub fn evicted(&self) -> CancellationToken {
        self.evicted.clone()
    }

    pub fn place(&self) -> Place {
        self.place
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut shared = self.slots.lock();
        shared.accounting.release(self.id, self.place);
        shared.evictors.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATTACKER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const MIXER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 5));

    fn limits(max_connections: usize, publisher_slots: usize) -> SlotLimits {
        SlotLimits {
            max_connections,
            publisher_slots,
        }
    }

    fn admitted(place: Place, evict: Option<ConnId>) -> Admission {
        Admission::Admitted { place, evict }
    }

    #[test]
    fn the_shared_part_fills_then_candidates_churn_through_the_reserve() {
        let mut a = Accounting::new(limits(5, 2));
        for id in 0..3 {
            assert_eq!(a.admit(id, ATTACKER), admitted(Place::Shared, None));
        }
        assert_eq!(a.admit(3, ATTACKER), admitted(Place::Candidate, None));
        assert_eq!(a.admit(4, ATTACKER), admitted(Place::Candidate, None));
        // The reserve is full of candidates: each newcomer evicts the oldest.
        assert_eq!(a.admit(5, ATTACKER), admitted(Place::Candidate, Some(3)));
        assert_eq!(a.admit(6, ATTACKER), admitted(Place::Candidate, Some(4)));
        let counts = a.counts();
        assert_eq!(
            (counts.shared, counts.candidates, counts.evicted),
            (3, 2, 2)
        );
        // An evicted candidate can no longer publish; a current one can.
        assert_eq!(a.publish(3, Place::Candidate), Err(SlotRefused::Evicted));
        assert_eq!(a.publish(6, Place::Candidate), Ok(None));
        assert_eq!(a.counts().publishers, 1);
    }

    #[test]
    fn players_and_strangers_never_take_publisher_slots() {
        let mut a = Accounting::new(limits(6, 2));
        let mut next = 0..;
        let mut id = || next.next().unwrap();
        // Fill the shared part with players and the reserve with idle candidates, many times.
        for _ in 0..4 {
            let p = id();
            assert_eq!(a.admit(p, ATTACKER), admitted(Place::Shared, None));
            assert_eq!(a.play(p, Place::Shared), Ok(Place::Shared));
        }
        for _ in 0..100 {
            let c = id();
            assert!(matches!(
                a.admit(c, ATTACKER),
                Admission::Admitted {
                    place: Place::Candidate,
                    ..
                }
            ));
            // A candidate may not play while the shared part is full.
            assert_eq!(a.play(c, Place::Candidate), Err(SlotRefused::SharedFull));
        }
        // The mixer's connection still gets in and publishes, twice.
        for _ in 0..2 {
            let mixer = id();
            assert!(matches!(
                a.admit(mixer, MIXER),
                Admission::Admitted {
                    place: Place::Candidate,
                    ..
                }
            ));
            assert_eq!(a.publish(mixer, Place::Candidate), Ok(None));
        }
        assert_eq!(a.counts().publishers, 2);
        // Everything is taken now: newcomers are refused, a third publisher too.
        assert_eq!(a.admit(id(), ATTACKER), Admission::Refused);
        assert_eq!(a.counts().refused, 1);
        let c = a.counts();
        assert_eq!(c.shared + c.candidates + c.publishers, 6);
    }

    #[test]
    fn a_flood_from_many_addresses_never_evicts_a_loopback_mixer() {
        let local_mixer = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        let mut a = Accounting::new(limits(3, 2));
        a.admit(0, ATTACKER); // the shared part is full
        assert_eq!(a.admit(1, local_mixer), admitted(Place::Candidate, None));
        // Each attacker address holds one candidate: a tie, in which the mixer is the oldest.
        for id in 2..50u64 {
            let spread = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, id as u8));
            let Admission::Admitted { evict, .. } = a.admit(id, spread) else {
                panic!("refused");
            };
            assert_ne!(evict, Some(1), "the loopback mixer was evicted");
        }
        assert_eq!(a.publish(1, Place::Candidate), Ok(None));
    }

    #[test]
    fn a_flood_from_one_client_evicts_its_own_candidates_not_a_mixers() {
        let mut a = Accounting::new(limits(4, 3));
        for id in 0..4 {
            a.admit(id, ATTACKER);
        }
        assert_eq!(a.admit(10, MIXER), admitted(Place::Candidate, Some(1)));
        // Addresses across one IPv6 /64 count as one client.
        for id in 100..200 {
            let ip = IpAddr::V6(std::net::Ipv6Addr::new(
                0x2001, 0xdb8, 0, 0, 0, 0, 0, id as u16,
            ));
            let Admission::Admitted { evict, .. } = a.admit(id, ip) else {
                panic!("refused");
            };
            assert_ne!(
                evict,
                Some(10),
                "the mixer's candidate was evicted by newcomer {id}"
            );
        }
        assert_eq!(a.publish(10, Place::Candidate), Ok(None));
        assert_eq!(a.counts().publishers, 1);
        // Among equals, the oldest goes: two lone clients and a newcomer.
        let mut a = Accounting::new(limits(2, 2));
        a.admit(0, ATTACKER);
        a.admit(1, ATTACKER);
        a.admit(2, MIXER);
        let other = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7));
        assert_eq!(a.admit(3, other), admitted(Place::Candidate, Some(1)));
    }

    #[test]
    fn a_shared_connection_publishing_takes_a_reserve_place_and_frees_its_own() {
        let mut a = Accounting::new(limits(4, 1));
        for id in 0..3 {
            a.admit(id, ATTACKER);
        }
        assert_eq!(a.admit(3, ATTACKER), admitted(Place::Candidate, None));
        // Shared 0 publishes: the candidate makes way, a shared place frees.
        assert_eq!(a.publish(0, Place::Shared), Ok(Some(3)));
        assert_eq!(a.counts().shared, 2);
        assert_eq!(a.counts().candidates, 0);
        // Only one publisher slot: a second publisher is refused.
        assert_eq!(
            a.publish(1, Place::Shared),
            Err(SlotRefused::PublishersFull)
        );
        a.release(0, Place::Publisher);
        assert_eq!(a.publish(1, Place::Shared), Ok(None));
    }

    #[test]
    fn a_candidate_may_play_once_the_shared_part_has_room_and_release_is_exact() {
        let mut a = Accounting::new(limits(3, 1));
        a.admit(0, ATTACKER);
        a.admit(1, ATTACKER);
        assert_eq!(a.admit(2, ATTACKER), admitted(Place::Candidate, None));
        a.release(0, Place::Shared);
        assert_eq!(a.play(2, Place::Candidate), Ok(Place::Shared));
        assert_eq!(a.counts().candidates, 0);
        assert_eq!(a.counts().shared, 2);
        // Releasing an evicted candidate changes nothing.
        assert_eq!(a.admit(3, ATTACKER), admitted(Place::Candidate, None));
        assert_eq!(a.admit(4, ATTACKER), admitted(Place::Candidate, Some(3)));
        a.release(3, Place::Candidate);
        assert_eq!(a.counts().candidates, 1);
        a.release(4, Place::Candidate);
        a.release(1, Place::Shared);
        a.release(2, Place::Shared);
        let c = a.counts();
        assert_eq!((c.shared, c.candidates, c.publishers), (0, 0, 0));
    }

    #[test]
    fn slots_signal_evicted_candidates_and_free_places_on_drop() {
        let slots = Slots::new(limits(2, 1));
        let shared = slots.admit(ATTACKER).unwrap();
        let first = slots.admit(ATTACKER).unwrap();
        assert_eq!(first.place(), Place::Candidate);
        let second = slots.admit(ATTACKER).unwrap();
        assert!(first.evicted().is_cancelled());
        assert!(!second.evicted().is_cancelled());
        drop(first);
        let mut second = second;
        second.to_publisher().unwrap();
        assert_eq!(second.place(), Place::Publisher);
        // Full: a shared connection and a publisher.
        assert!(slots.admit(ATTACKER).is_none());
        assert_eq!(slots.counts().refused, 1);
        drop(shared);
        drop(second);
        let c = slots.counts();
        assert_eq!((c.shared, c.candidates, c.publishers), (0, 0, 0));
    }
}
