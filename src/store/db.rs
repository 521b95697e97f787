//! The database file: one redb table, room id → encoded [`super::RoomRecord`]. redb is pure
//! Rust (nothing to install), crash-safe (copy-on-write with checksummed commits, so a
//! `kill -9` mid-write leaves the last committed state), and locks its file so two servers
//! cannot share one data directory by mistake.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};

use super::backend::RoomBackend;
use super::StoreError;

const ROOMS: TableDefinition<&str, &[u8]> = TableDefinition::new("rooms");

/// One write of the writer thread: the newest record of a room, or its removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Put(Vec<u8>),
    Delete,
}

pub struct RoomDb {
    db: Database,
    path: PathBuf,
}

impl RoomDb {
    /// Opens or creates the file (and its table).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // Created 0600 before redb opens it: room names and bans are nobody else's business
        // (the directory is 0700 too).
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| StoreError::db(path, e))?;
        let db = Database::create(path).map_err(|e| StoreError::db(path, e))?;
        let this = Self {
            db,
            path: path.to_path_buf(),
        };
        this.apply(std::iter::empty())?;
        Ok(this)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every record, by room id.
    pub fn load_all(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let err = |e: redb::Error| StoreError::db(&self.path, e);
        let txn = self.db.begin_read().map_err(|e| err(e.into()))?;
        let table = txn.open_table(ROOMS).map_err(|e| err(e.into()))?;
        let mut all = Vec::new();
        for item in table.iter().map_err(|e| err(e.into()))? {
            let (id, bytes) = item.map_err(|e| err(e.into()))?;
            all.push((id.value().to_string(), bytes.value().to_vec()));
        }
        Ok(all)
    }

    /// Writes `changes` in one transaction (one fsync however many rooms changed).
    pub fn apply<'a>(
        &self,
        changes: impl IntoIterator<Item = (&'a str, &'a Change)>,
    ) -> Result<(), StoreError> {
        let err = |e: redb::Error| StoreError::db(&self.path, e);
        let txn = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut table = txn.open_table(ROOMS).map_err(|e| err(e.into()))?;
            for (id, change) in changes {
                match change {
                    Change::Put(bytes) => {
                        table
                            .insert(id, bytes.as_slice())
                            .map_err(|e| err(e.into()))?;
                    }
                    Change::Delete => {
                        table.remove(id).map_err(|e| err(e.into()))?;
                    }
                }
            }
        }
        txn.commit().map_err(|e| err(e.into()))
    }
}

impl RoomBackend for RoomDb {
    fn load_all(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        RoomDb::load_all(self)
    }

    fn apply(&self, changes: &[(&str, &Change)]) -> Result<(), StoreError> {
        RoomDb::apply(self, changes.iter().copied())
    }
}
