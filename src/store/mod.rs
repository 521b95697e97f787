//! Durable rooms: what a room needs to come back after serve restarts (a crash, `kill -9`, an
//! upgrade), kept in one embedded database file under the data directory (`[store] dir`), or
//! in Redis when serve is part of a fleet (`cluster.redis_url`).
//!
//! Pure: [`record`] (the record and its encoding) and [`seal`] (stream keys encrypted at rest).
//! IO: [`db`] (the redb file) or [`redis_db`] (Redis, for a fleet's serve nodes) behind
//! [`backend::RoomBackend`], [`journal`] (the one writer thread, off the room actors' path),
//! [`files`] (the data directory and the secrets kept in it). This module knows nothing of
//! rooms' internals: the room actor builds a [`RoomRecord`], `room::restore` turns one back.

pub mod backend;
pub mod db;
pub mod error;
pub mod files;
pub mod journal;
pub mod record;
pub mod redis_db;
pub mod seal;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::StoreError;
pub use record::{OutputRecord, RoomRecord};
pub use seal::StoreKey;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "rooms.redb";

/// One record read back at start: the room's id, and the record or why it is unusable.
pub type Loaded = (String, Result<RoomRecord, StoreError>);

/// The open store: where records go (through the writer thread) and the key that seals and
/// opens their stream keys. Shared by every room (`Arc`).
pub struct RoomStore {
    dir: PathBuf,
    key: StoreKey,
    journal: journal::Journal,
}

impl std::fmt::Debug for RoomStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl RoomStore {
    /// Opens (creating if needed) the store in `dir` and reads every record in it. `key` is the
    /// configured store key (base64); without one, the key in `<dir>/store.key` (made on first
    /// start). Every failure names the path or the key it is about.
    pub fn open(dir: &Path, key: Option<&str>) -> Result<(Arc<Self>, Vec<Loaded>), StoreError> {
        files::prepare_dir(dir)?;
        let db = db::RoomDb::open(&dir.join(DB_FILE))?;
        Self::open_on(Arc::new(db), dir, key)
    }

    /// As [`RoomStore::open`], with the records in Redis at `url` (the data directory still
    /// holds the store key when none is configured: serve nodes sharing rooms must share
    /// `[store] key`).
    /// `node_id` is this serve node's name: a record is written only while the room's owner
    /// key names this node (or nobody), so a node that lost a room cannot overwrite the new
    /// owner's record.
    pub fn open_redis(
        url: &str,
        dir: &Path,
        key: Option<&str>,
        node_id: &str,
    ) -> Result<(Arc<Self>, Vec<Loaded>), StoreError> {
        files::prepare_dir(dir)?;
        let db = redis_db::RedisRoomDb::new(url, node_id)?;
        Self::open_on(Arc::new(db), dir, key)
    }

    fn open_on(
        db: Arc<dyn backend::RoomBackend>,
        dir: &Path,
        key: Option<&str>,
    ) -> Result<(Arc<Self>, Vec<Loaded>), StoreError> {
        let key = match key {
            Some(encoded) => StoreKey::from_base64(encoded, "[store] key")?,
            None => files::load_or_create_key(dir)?,
        };
        let stored = db.load_all()?;
        let loaded = stored
            .iter()
            .cloned()
            .map(|(id, bytes)| {
                let record = RoomRecord::decode(&bytes).and_then(|record| {
                    // Any stream key that does not open is a wrong key (or a damaged record):
                    // found now, the room is skipped whole rather than coming back without it.
                    record.check_key(&key).map(|()| record)
                });
                (id, record)
            })
            .collect();
        let journal = journal::Journal::start(db, stored.into_iter().collect());
        Ok((
            Arc::new(Self {
                dir: dir.to_path_buf(),
                key,
                journal,
            }),
            loaded,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key that seals stream keys (for building records).
    pub fn key(&self) -> &StoreKey {
        &self.key
    }

    /// Writes `record` soon (never blocks: the writer thread commits it; a newer record of the
    /// same room replaces one not yet written).
    pub fn save(&self, record: &RoomRecord) {
        self.journal.put(&record.room_id, record.encode());
    }

    /// Deletes room `room_id`'s record soon (the room ended); later saves of it are ignored.
    pub fn forget(&self, room_id: &str) {
        self.journal.delete(room_id);
    }

    /// Forgets `room_id` in this process without deleting its record: another serve node owns
    /// it (see [`journal::Journal::disown`]).
    pub fn disown(&self, room_id: &str) {
        self.journal.disown(room_id);
    }

    /// `room_id` is this process's to write again (adopted back after it was disowned).
    pub fn own(&self, room_id: &str) {
        self.journal.own(room_id);
    }

    /// Resolves once everything saved or forgotten before the call is on disk (or failed and
    /// was logged).
    pub async fn flushed(&self) {
        self.journal.flushed().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("costream-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn records_survive_a_reopen_and_stream_keys_never_reach_the_file() {
        let dir = temp_dir("reopen");
        let configured = StoreKey::generate().to_base64();
        {
            let (store, loaded) = RoomStore::open(&dir, Some(&configured)).unwrap();
            assert!(loaded.is_empty());
            let record = record::tests::sample(store.key());
            store.save(&record);
            let mut gone = record.clone();
            gone.room_id = "ended".into();
            store.save(&gone);
            store.forget("ended");
            store.flushed().await;
        }
        // redb's lock is released when the writer's handle goes; a second open in the same
        // process needs the first closed, which only happens at exit: read the bytes instead.
        let bytes = std::fs::read(dir.join(DB_FILE)).unwrap();
        let hay = String::from_utf8_lossy(&bytes);
        assert!(hay.contains("Friday show"), "the record is in the file");
        for secret in ["SECRETKEY123", "QSECRET", "ORIGINKEY"] {
            assert!(!hay.contains(secret), "{secret} in the database file");
        }
        assert!(
            !std::fs::exists(dir.join(files::KEY_FILE)).unwrap(),
            "configured key: no key file"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_wrong_key_skips_the_room_with_a_clear_error() {
        let dir = temp_dir("wrongkey");
        let key = StoreKey::generate();
        {
            files::prepare_dir(&dir).unwrap();
            let db = db::RoomDb::open(&dir.join(DB_FILE)).unwrap();
            let mut bare = record::tests::sample(&key);
            bare.room_id = "r2".into();
            bare.outputs.clear();
            let good = record::tests::sample(&key);
            db.apply([
                ("r1", &db::Change::Put(good.encode())),
                ("r2", &db::Change::Put(bare.encode())),
                ("r3", &db::Change::Put(b"garbage".to_vec())),
            ])
            .unwrap();
        }
        let other = StoreKey::generate().to_base64();
        let (_store, mut loaded) = RoomStore::open(&dir, Some(&other)).unwrap();
        loaded.sort_by(|a, b| a.0.cmp(&b.0));
        let outcome: Vec<_> = loaded
            .iter()
            .map(|(id, r)| (id.as_str(), r.is_ok()))
            .collect();
        assert_eq!(outcome, [("r1", false), ("r2", true), ("r3", false)]);
        let err = loaded[0].1.as_ref().unwrap_err().to_string();
        assert!(
            err.contains("does not decrypt") && err.contains("[store] key"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
