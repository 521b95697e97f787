//! Which worker runs a room's mixer: the same cost as one-box admission
//! ([`crate::pool::admission::room_cost`]), against each worker's free capacity. Pure.
//!
//! Rooms go to the worker with the most free capacity left after them (spread, not packed): a
//! worker lost then takes the fewest rooms with it, and each mixer gets the most CPU headroom for
//! its peaks. Packing would let idle workers be scaled away sooner; with KEDA scaling on the
//! fleet's free capacity, spreading still leaves whole workers free when the fleet is quiet.

use std::collections::HashMap;

use super::record::{WorkerRecord, WorkerState};

/// The outcome of placing one room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Run it on `worker_id`; `free_after` millicores remain there.
    On { worker_id: String, free_after: u64 },
    /// No worker can take it now.
    NoFit(NoFit),
}

/// Why no worker fits, for the `503` message and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoFit {
    pub cost: u64,
    /// Most free millicores on any worker that could otherwise take rooms.
    pub best_free: u64,
    /// Workers taking rooms (serving, right protocol, not avoided).
    pub candidates: usize,
    /// Workers known at all.
    pub known: usize,
}

/// Places a room costing `cost` millicores. `pending` holds what this serve has placed but the
/// workers' records do not show yet (by worker id); `avoid` lists workers that just failed this
/// room (their record may outlive them by a TTL).
pub fn place(
    workers: &[WorkerRecord],
    pending: &HashMap<String, u64>,
    cost: u64,
    avoid: &[String],
    protocol: u32,
) -> Placement {
    let candidates: Vec<(&WorkerRecord, u64)> = workers
        .iter()
        .filter(|w| w.state == WorkerState::Serving && w.protocol == protocol)
        .filter(|w| !avoid.contains(&w.worker_id))
        .map(|w| {
            let held = pending.get(&w.worker_id).copied().unwrap_or(0);
            (w, w.free.saturating_sub(held))
        })
        .collect();
    let best = candidates
        .iter()
        .filter(|(_, free)| *free >= cost)
        // Most free first; equal free: the lexically smallest id, so placement is deterministic.
        .max_by(|(a, fa), (b, fb)| fa.cmp(fb).then_with(|| b.worker_id.cmp(&a.worker_id)));
    match best {
        Some((worker, free)) => Placement::On {
            worker_id: worker.worker_id.clone(),
            free_after: free - cost,
        },
        None => Placement::NoFit(NoFit {
            cost,
            best_free: candidates.iter().map(|(_, f)| *f).max().unwrap_or(0),
            candidates: candidates.len(),
            known: workers.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn worker(id: &str, free: u64) -> WorkerRecord {
        WorkerRecord {
            worker_id: id.into(),
            advertise_ip: "127.0.0.2".parse().unwrap(),
            control_addr: "127.0.0.2:7700".parse().unwrap(),
            version: "test".into(),
            protocol: 1,
            capacity: free.max(1800),
            used: free.max(1800) - free,
            free,
            warm: 1,
            state: WorkerState::Serving,
            rooms: vec![],
        }
    }

    fn on(p: Placement) -> String {
        match p {
            Placement::On { worker_id, .. } => worker_id,
            Placement::NoFit(n) => panic!("no fit: {n:?}"),
        }
    }

    #[test]
    fn rooms_go_to_the_most_free_worker_and_spread() {
        let workers = vec![worker("a", 1000), worker("b", 1500)];
        let mut pending = HashMap::new();
        assert_eq!(on(place(&workers, &pending, 600, &[], 1)), "b");
        // This serve's own placement counts until the record shows it: the next room goes to a.
        pending.insert("b".to_string(), 600);
        assert_eq!(on(place(&workers, &pending, 600, &[], 1)), "a");
    }

    #[test]
    fn draining_avoided_and_other_protocols_take_nothing() {
        let mut draining = worker("a", 1800);
        draining.state = WorkerState::Draining;
        let mut old = worker("b", 1800);
        old.protocol = 0;
        let workers = vec![draining, old, worker("c", 1800), worker("d", 100)];
        assert_eq!(on(place(&workers, &HashMap::new(), 500, &[], 1)), "c");
        match place(&workers, &HashMap::new(), 500, &["c".to_string()], 1) {
            Placement::NoFit(n) => {
                assert_eq!(
                    (n.cost, n.best_free, n.candidates, n.known),
                    (500, 100, 1, 4)
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_empty_fleet_fits_nothing() {
        assert!(matches!(
            place(&[], &HashMap::new(), 1, &[], 1),
            Placement::NoFit(NoFit { known: 0, .. })
        ));
    }

    proptest! {
        #[test]
        fn a_placement_always_fits_and_is_the_best(
            frees in proptest::collection::vec(0u64..3000, 0..8),
            cost in 1u64..2000,
        ) {
            let workers: Vec<_> = frees.iter().enumerate()
                .map(|(i, f)| worker(&format!("w{i}"), *f)).collect();
            match place(&workers, &HashMap::new(), cost, &[], 1) {
                Placement::On { worker_id, free_after } => {
                    let chosen = workers.iter().find(|w| w.worker_id == worker_id).unwrap();
                    prop_assert!(chosen.free >= cost);
                    prop_assert_eq!(free_after, chosen.free - cost);
                    prop_assert!(workers.iter().all(|w| w.free <= chosen.free));
                }
                Placement::NoFit(n) => prop_assert!(frees.iter().all(|f| *f < cost) && n.best_free < cost),
            }
        }
    }
}
