//! The one writer of the database. Room actors must never wait for a disk (a redb commit
//! fsyncs), so they leave the newest record of their room in a pending map and go on; a
//! dedicated thread takes whatever is pending and commits it in one transaction. Per room only
//! the newest change is kept, so writes cannot reorder (last write wins) and memory is bounded
//! by the number of rooms, however fast they change.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::watch;

use super::backend::RoomBackend;
use super::db::Change;

/// Ended rooms remembered so a save racing the end (the actor answering one last command)
/// does not bring the record back. Room ids are random and never reused, so a bounded memory
/// of the latest ends is enough: a racing save arrives within moments of its end.
const REMEMBERED_ENDS: usize = 4096;

#[derive(Default)]
struct Pending {
    changes: HashMap<String, Change>,
    ended: HashSet<String>,
    ended_order: VecDeque<String>,
    /// Count of changes handed in so far; `committed` catches up with it.
    seq: u64,
    /// Rooms this process let go of (another serve node owns them now): no longer its to
    /// write, not even after the backend lost its writes, until it owns them again.
    disowned: HashSet<String>,
    /// Of those, the ones the writer has not yet dropped from what it would write again.
    newly_disowned: HashSet<String>,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    /// The `seq` the writer has committed (or given up on) up to.
    committed: watch::Sender<u64>,
}

#[derive(Clone)]
pub struct Journal {
    shared: Arc<Shared>,
}

impl Journal {
    /// Starts the writer thread; it runs as long as the process (it holds the database).
    /// `stored` is what the backend holds at start (room id → record), which it may have to
    /// write again (see [`RoomBackend::lost_writes`]).
    pub fn start(db: Arc<dyn RoomBackend>, stored: HashMap<String, Vec<u8>>) -> Self {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            committed: watch::channel(0).0,
        });
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("room-store".into())
            .spawn(move || write_forever(db.as_ref(), &writer, stored))
            .expect("spawn the room store's writer thread");
        Self { shared }
    }

    pub fn put(&self, room_id: &str, bytes: Vec<u8>) {
        let mut pending = self.shared.pending.lock().expect("store lock");
        if pending.ended.contains(room_id) || pending.disowned.contains(room_id) {
            return;
        }
        pending
            .changes
            .insert(room_id.to_string(), Change::Put(bytes));
        pending.seq += 1;
        drop(pending);
        self.shared.wake.notify_one();
    }

    pub fn delete(&self, room_id: &str) {
        let mut pending = self.shared.pending.lock().expect("store lock");
        pending.changes.insert(room_id.to_string(), Change::Delete);
        if pending.ended.insert(room_id.to_string()) {
            pending.ended_order.push_back(room_id.to_string());
            while pending.ended_order.len() > REMEMBERED_ENDS {
                if let Some(oldest) = pending.ended_order.pop_front() {
                    pending.ended.remove(&oldest);
                }
            }
        }
        pending.seq += 1;
        drop(pending);
        self.shared.wake.notify_one();
    }

    /// Forgets `room_id` here without deleting it: another serve node owns it now. A change of
    /// it not yet written is dropped, and it is not written again after the backend lost its
    /// writes.
    pub fn disown(&self, room_id: &str) {
        let mut pending = self.shared.pending.lock().expect("store lock");
        pending.changes.remove(room_id);
        pending.disowned.insert(room_id.to_string());
        pending.newly_disowned.insert(room_id.to_string());
        drop(pending);
        self.shared.wake.notify_one();
    }

    /// `room_id` is this process's to write again (see [`Journal::disown`]).
    pub fn own(&self, room_id: &str) {
        let mut pending = self.shared.pending.lock().expect("store lock");
        pending.disowned.remove(room_id);
        pending.newly_disowned.remove(room_id);
    }

    /// Waits until every change handed in before this call is committed, or at most
    /// [`FLUSH_WAIT`] while the disk refuses writes (the writer keeps retrying after that).
    pub async fn flushed(&self) {
        let target = self.shared.pending.lock().expect("store lock").seq;
        let mut committed = self.shared.committed.subscribe();
        // The sender lives in `shared`, which we hold: the channel cannot close.
        let done = committed.wait_for(|done| *done >= target);
        if tokio::time::timeout(FLUSH_WAIT, done).await.is_err() {
            tracing::warn!("room store: changes not on disk after {FLUSH_WAIT:?}; still retrying");
        }
    }
}

fn write_forever(db: &dyn RoomBackend, shared: &Shared, mut stored: HashMap<String, Vec<u8>>) {
    // Asked once at start, so a later restart of the backend is told from this one.
    db.lost_writes();
    loop {
        let (mut changes, seq) = {
            let mut pending = shared.pending.lock().expect("store lock");
            while pending.changes.is_empty() && pending.newly_disowned.is_empty() {
                let (next, waited) = shared
                    .wake
                    .wait_timeout(pending, CHECK_LOST_EVERY)
                    .expect("store lock");
                pending = next;
                if waited.timed_out() && pending.changes.is_empty() {
                    break;
                }
            }
            for id in std::mem::take(&mut pending.newly_disowned) {
                stored.remove(&id);
            }
            (std::mem::take(&mut pending.changes), pending.seq)
        };
        if db.lost_writes() {
            // Everything known goes again, under whatever is newer.
            for (id, bytes) in &stored {
                changes
                    .entry(id.clone())
                    .or_insert_with(|| Change::Put(bytes.clone()));
            }
        }
        if changes.is_empty() {
            continue;
        }
        let batch: Vec<(&str, &Change)> = changes
            .iter()
            .map(|(id, change)| (id.as_str(), change))
            .collect();
        match db.apply(&batch) {
            Ok(()) => {
                drop(batch);
                let pending = shared.pending.lock().expect("store lock");
                for (id, change) in changes {
                    match change {
                        // Disowned while it was being written: not this process's to write again.
                        _ if pending.disowned.contains(&id) => stored.remove(&id),
                        Change::Put(bytes) => stored.insert(id, bytes),
                        Change::Delete => stored.remove(&id),
                    };
                }
                drop(pending);
                shared.committed.send_replace(seq);
            }
            Err(e) => {
                // The rooms go on. The batch goes back (behind anything newer handed in
                // meanwhile) and is tried again: a lost delete would bring an ended room back
                // at the next start, a lost save would restore stale settings.
                drop(batch);
                tracing::error!(rooms = changes.len(), "cannot save rooms (retrying): {e}");
                let mut pending = shared.pending.lock().expect("store lock");
                for (id, change) in changes {
                    if !pending.disowned.contains(&id) {
                        pending.changes.entry(id).or_insert(change);
                    }
                }
                drop(pending);
                std::thread::sleep(RETRY_AFTER_FAILURE);
            }
        }
    }
}

/// How long a caller waits for the disk (an API `DELETE`, shutdown) before going on.
const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// While idle, how often the writer asks whether the backend lost what it held.
const CHECK_LOST_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Pause between attempts while the disk refuses writes (full, read-only).
const RETRY_AFTER_FAILURE: std::time::Duration = std::time::Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_newest_change_wins_and_an_end_sticks() {
        let dir = std::env::temp_dir().join(format!("costream-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("j.redb");
        let _ = std::fs::remove_file(&path);
        let db = Arc::new(super::super::db::RoomDb::open(&path).unwrap());
        let journal = Journal::start(db.clone(), HashMap::new());
        journal.put("a", b"1".to_vec());
        journal.put("a", b"2".to_vec());
        journal.put("b", b"1".to_vec());
        journal.delete("b");
        journal.put("b", b"late".to_vec());
        journal.flushed().await;
        assert_eq!(
            db.load_all().unwrap(),
            vec![("a".to_string(), b"2".to_vec())]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
