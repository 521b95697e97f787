//! A server-wide cap on open peer connections (WHIP sessions and WHEP subscriptions together):
//! every connection holds UDP ports, DTLS state and tasks, so beyond the cap an offer is refused
//! at once (`IngestError::AtCapacity`) instead of hanging when ports run out.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Open peer connections and their cap. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PeerConnectionBudget {
    open: Arc<AtomicUsize>,
    max: usize,
}

/// One connection's place in the budget: freed when the connection closes (or on drop).
#[derive(Debug)]
pub struct PcSlot(Arc<AtomicUsize>);

impl Drop for PcSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl PeerConnectionBudget {
    pub fn new(max: usize) -> Self {
        Self {
            open: Arc::default(),
            max,
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// A place for one more connection, unless the budget is spent.
    pub fn take(&self) -> Option<PcSlot> {
        self.open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| PcSlot(self.open.clone()))
    }
}

/// Where a session keeps its slot: released when it closes, not when the last handle goes.
#[derive(Debug, Default)]
pub(crate) struct HeldSlot(Mutex<Option<PcSlot>>);

impl HeldSlot {
    pub(crate) fn hold(&self, slot: PcSlot) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(slot);
    }

    pub(crate) fn release(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_and_come_back() {
        let budget = PeerConnectionBudget::new(2);
        let a = budget.take().unwrap();
        let held = HeldSlot::default();
        held.hold(budget.take().unwrap());
        assert!(budget.take().is_none());
        assert_eq!(budget.open(), 2);
        held.release();
        assert_eq!(budget.open(), 1);
        drop(a);
        assert_eq!(budget.open(), 0);
        assert!(budget.take().is_some());
    }
}
