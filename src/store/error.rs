//! What can go wrong with the store. Every message names the file, the key or the room.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The data directory (or a file in it) cannot be created, read or written.
    // The cause is in the message, not a `source`: one line, not repeated by error chains.
    #[error("data directory {}: {what}: {cause}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        cause: std::io::Error,
    },
    /// The database file cannot be opened, read or written.
    #[error("room database {}: {cause}", path.display())]
    Db {
        path: PathBuf,
        cause: Box<redb::Error>,
    },
    /// Redis (the store of a fleet's serve nodes) cannot be reached or refused a command.
    #[error("room store in Redis {url}: {cause}")]
    Redis { url: String, cause: String },
    /// A store key that is not 32 bytes of base64.
    #[error("{origin}: the store key must be 32 bytes in base64 (e.g. `openssl rand -base64 32`): {reason}")]
    BadKey { origin: String, reason: String },
    /// A sealed value that does not open with this key: another key sealed it (the key was
    /// changed or lost), or the record is damaged.
    #[error("room {room_id}: output {output_id}'s stream key does not decrypt with this store key (was [store] key changed, or store.key replaced?)")]
    WrongKey { room_id: String, output_id: String },
    /// A record that does not decode (damaged, or written by an incompatible version).
    #[error("room {room_id}: unreadable record: {reason}")]
    Unreadable { room_id: String, reason: String },
}

impl StoreError {
    pub(crate) fn db(path: &std::path::Path, source: impl Into<redb::Error>) -> Self {
        StoreError::Db {
            path: path.to_path_buf(),
            cause: Box::new(source.into()),
        }
    }
}
