//! Where room records live: the embedded redb file on one node ([`super::db::RoomDb`]), or
//! Redis on a fleet ([`super::redis_db::RedisRoomDb`]). Both take whole batches of changes
//! from the journal's writer thread and read everything back at start.

use super::db::Change;
use super::StoreError;

pub trait RoomBackend: Send + Sync + 'static {
    /// Every record, by room id.
    fn load_all(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Writes `changes` all at once (one transaction); on an error none of them is kept as
    /// written, and the journal tries the batch again.
    fn apply(&self, changes: &[(&str, &Change)]) -> Result<(), StoreError>;

    /// Whether records written before may be gone (a Redis that restarted empty): the journal
    /// then writes every room it knows again. Asked between batches and every few seconds
    /// while idle, so it may cost a round trip. A file never loses what it committed.
    fn lost_writes(&self) -> bool {
        false
    }
}
