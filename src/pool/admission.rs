//! Admission by cost: one pure cost model of a room's mixer, and a ledger that decides whether a
//! room fits and reserves its share with the same function (so the decision and the bookkeeping
//! can never disagree). No clocks, no IO: the caller logs the returned [`Decision`].
//!
//! Units are millicores (1000 = one fully busy core) in integers, so reserve/release are exact.
//!
//! Calibration (2-core development machine, x264 `veryfast` `tune=zerolatency`, benches/):
//! the reference room R4 (720p30 at 2.5 Mbit/s, one 720p host + three 360p guests, VP8 + Opus)
//! measured 0.42–0.47 core per mixer (one x264 thread, FFmpeg's VP8 decoder on one thread;
//! `perf`: x264 ≈ 45 %, VP8 decode ≈ 12 %, compositing and scaling ≈ 15 %, the rest threads,
//! copies and audio); 3 rooms ran in real time on the 2 cores, 4 did not. The constants below
//! split that into a fixed part, an encoder part that grows with output pixels per second (and
//! a little with bitrate), and a per-input part (decode + scale to its tile + audio).
//! [`room_cost`] of R4 is 470, so 2 cores at 0.9 admit 3 R4 rooms and refuse the fourth.

use std::collections::BTreeMap;

use costream_mixer::control::VideoSpec;
use serde::Serialize;

/// Process, muxing, RTMP and the audio encoder: paid once per room.
const BASE_MILLICORES: u64 = 30;
/// x264 veryfast zerolatency per million output pixels per second (720p30 = 27.6 Mpx/s → 263).
const ENCODE_PER_MPX_S: f64 = 9.5;
/// x264's entropy coding grows with bitrate: per Mbit/s (2.5 Mbit/s → 10).
const ENCODE_PER_MBIT: f64 = 4.0;
/// Per input: decoding (≈ 11 for the R4 mix of one 720p and three 360p VP8) and Opus decode +
/// mix (≈ 6), independent of the output.
const INPUT_FIXED: f64 = 17.0;
/// Per input: scaling to its tile and blending, per million output pixels per second (≈ 25 at
/// 720p30). Scaling is most of compositing's cost and is paid at the output rate.
const INPUT_PER_MPX_S: f64 = 0.9;

/// What a room's mixer will have to do: the inputs of the cost function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RoomLoad {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_kbps: u32,
    /// Participants mixed (each one video + one audio track). See [`expected_inputs`].
    pub inputs: u32,
}

impl RoomLoad {
    pub fn new(video: &VideoSpec, inputs: u32) -> Self {
        Self {
            width: video.width,
            height: video.height,
            fps: video.fps,
            bitrate_kbps: video.bitrate_kbps,
            inputs,
        }
    }
}

/// How many inputs a room going live is charged for: at least `reserve_for`, so guests who join
/// a live room later are already paid for and a newcomer room cannot take their share; a room
/// that grows past it is re-charged (see [`Ledger::resize`]).
pub fn expected_inputs(current: u32, reserve_for: u32) -> u32 {
    current.max(reserve_for).max(1)
}

/// The cost model: millicores one room's mixer uses. Monotone in every field.
pub fn room_cost(load: &RoomLoad) -> u64 {
    let mpx_s = f64::from(load.width) * f64::from(load.height) * f64::from(load.fps) / 1e6;
    let encode = mpx_s * ENCODE_PER_MPX_S + f64::from(load.bitrate_kbps) / 1000.0 * ENCODE_PER_MBIT;
    let per_input = INPUT_FIXED + mpx_s * INPUT_PER_MPX_S;
    let total = BASE_MILLICORES as f64 + encode + f64::from(load.inputs) * per_input;
    total.round() as u64
}

/// What the machine may spend on mixers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Capacity {
    pub cores: f64,
    /// Share of `cores` mixers may use; the rest is headroom for serve (WebRTC, forwarding).
    pub max_utilization: f64,
}

impl Capacity {
    pub fn millicores(&self) -> u64 {
        (self.cores * self.max_utilization * 1000.0)
            .floor()
            .max(0.0) as u64
    }
}

/// The outcome of one admission, with everything it was based on (for the log).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub room_id: String,
    pub load: RoomLoad,
    pub cost: u64,
    /// Reserved by other rooms before this decision.
    pub used_before: u64,
    pub capacity: u64,
    pub admitted: bool,
}

/// Reservations of admitted rooms against a fixed capacity.
#[derive(Debug, Clone)]
pub struct Ledger {
    capacity: u64,
    rooms: BTreeMap<String, u64>,
}

impl Ledger {
    pub fn new(capacity: u64) -> Self {
        Self {
            capacity,
            rooms: BTreeMap::new(),
        }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn used(&self) -> u64 {
        self.rooms.values().sum()
    }

    pub fn free(&self) -> u64 {
        self.capacity.saturating_sub(self.used())
    }

    /// The reservation of `room_id`, if it holds one.
    pub fn cost_of(&self, room_id: &str) -> Option<u64> {
        self.rooms.get(room_id).copied()
    }

    pub fn rooms(&self) -> impl Iterator<Item = (&str, u64)> {
        self.rooms.iter().map(|(id, c)| (id.as_str(), *c))
    }

    /// Decides whether `room_id` with `load` fits next to the rooms already admitted, and if so
    /// reserves its cost. A room that already holds a reservation keeps it (idempotent go-live).
    pub fn admit(&mut self, room_id: &str, load: RoomLoad) -> Decision {
        let cost = room_cost(&load);
        let used_before = self.used() - self.cost_of(room_id).unwrap_or(0);
        let admitted = self.rooms.contains_key(room_id) || used_before + cost <= self.capacity;
        if admitted && !self.rooms.contains_key(room_id) {
            self.rooms.insert(room_id.to_string(), cost);
        }
        Decision {
            room_id: room_id.to_string(),
            load,
            cost,
            used_before,
            capacity: self.capacity,
            admitted,
        }
    }

    /// Re-charges an admitted room whose load changed (guests joined or left). Never refuses:
    /// a room that is live is never cut down; if it outgrows its share, newcomers see less free
    /// capacity instead. Returns the new cost, or None if the room holds no reservation.
    pub fn resize(&mut self, room_id: &str, load: RoomLoad) -> Option<u64> {
        let cost = room_cost(&load);
        let slot = self.rooms.get_mut(room_id)?;
        *slot = cost;
        Some(cost)
    }

    /// Frees a room's reservation; returns what it held.
    pub fn release(&mut self, room_id: &str) -> Option<u64> {
        self.rooms.remove(room_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r4() -> RoomLoad {
        RoomLoad::new(&VideoSpec::default(), 4)
    }

    #[test]
    fn r4_costs_what_the_reference_measurement_says() {
        let cost = room_cost(&r4());
        assert!((420..=500).contains(&cost), "R4 cost {cost}");
        assert_eq!(cost, 470);
    }

    #[test]
    fn this_machine_admits_three_r4_rooms_and_refuses_the_fourth() {
        let capacity = Capacity {
            cores: 2.0,
            max_utilization: 0.9,
        };
        let mut ledger = Ledger::new(capacity.millicores());
        for room in ["a", "b", "c"] {
            assert!(ledger.admit(room, r4()).admitted, "{room}");
        }
        let refused = ledger.admit("d", r4());
        assert!(!refused.admitted);
        assert_eq!(refused.used_before, 3 * 470);
        assert_eq!(ledger.cost_of("d"), None, "a refusal reserves nothing");
        ledger.release("b");
        assert!(ledger.admit("d", r4()).admitted);
    }

    #[test]
    fn going_live_twice_keeps_one_reservation() {
        let mut ledger = Ledger::new(600);
        assert!(ledger.admit("a", r4()).admitted);
        assert!(ledger.admit("a", r4()).admitted);
        assert_eq!(ledger.used(), 470);
    }

    #[test]
    fn a_growing_live_room_is_never_refused_but_newcomers_see_it() {
        let mut ledger = Ledger::new(900);
        assert!(ledger.admit("a", r4()).admitted);
        let big = RoomLoad { inputs: 16, ..r4() };
        assert!(ledger.resize("a", big).unwrap() > 900 - 470);
        assert_eq!(ledger.free(), 0);
        assert!(
            !ledger
                .admit("b", RoomLoad::new(&VideoSpec::default(), 1))
                .admitted
        );
        assert_eq!(ledger.resize("nobody", big), None);
    }

    #[test]
    fn expected_inputs_reserve_for_later_guests() {
        assert_eq!(expected_inputs(0, 4), 4);
        assert_eq!(expected_inputs(6, 4), 6);
        assert_eq!(expected_inputs(0, 0), 1);
    }

    fn load() -> impl Strategy<Value = RoomLoad> {
        (
            (80u32..=1920).prop_map(|w| w * 2),
            (45u32..=1080).prop_map(|h| h * 2),
            1u32..=60,
            100u32..=20_000,
            0u32..=16,
        )
            .prop_map(|(width, height, fps, bitrate_kbps, inputs)| RoomLoad {
                width,
                height,
                fps,
                bitrate_kbps,
                inputs,
            })
    }

    proptest! {
        #[test]
        fn admitted_rooms_never_exceed_capacity(
            capacity in 0u64..5000,
            steps in proptest::collection::vec((0usize..6, load(), any::<bool>()), 0..40),
        ) {
            let mut ledger = Ledger::new(capacity);
            for (room, load, release) in steps {
                let id = format!("r{room}");
                if release {
                    ledger.release(&id);
                } else {
                    let d = ledger.admit(&id, load);
                    prop_assert_eq!(d.cost, room_cost(&load));
                }
                prop_assert!(ledger.used() <= capacity);
                prop_assert_eq!(ledger.used() + ledger.free(), capacity);
            }
        }

        #[test]
        fn admit_then_release_restores_the_ledger(capacity in 0u64..5000, l in load()) {
            let mut ledger = Ledger::new(capacity);
            ledger.admit("other", RoomLoad { inputs: 1, ..l });
            let before = ledger.used();
            let d = ledger.admit("x", l);
            prop_assert_eq!(d.admitted, before + room_cost(&l) <= capacity);
            ledger.release("x");
            prop_assert_eq!(ledger.used(), before);
        }

        #[test]
        fn cost_grows_with_every_input_of_the_model(l in load()) {
            let c = room_cost(&l);
            let more_inputs = room_cost(&RoomLoad { inputs: l.inputs + 1, ..l });
            let more_fps = room_cost(&RoomLoad { fps: l.fps + 1, ..l });
            let wider = room_cost(&RoomLoad { width: l.width + 2, ..l });
            let faster = room_cost(&RoomLoad { bitrate_kbps: l.bitrate_kbps + 100, ..l });
            prop_assert!(more_inputs > c);
            prop_assert!(more_fps >= c && wider >= c && faster >= c);
            prop_assert!(c >= BASE_MILLICORES);
        }
    }
}
