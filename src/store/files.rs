//! The data directory and the secrets serve keeps in it when none are configured: the store
//! key (`store.key`) and, on an open server, the key its room tokens are signed with
//! (`signing.key`), so links handed out before a restart still verify after it. Both 0600.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::seal::StoreKey;
use super::StoreError;

pub const KEY_FILE: &str = "store.key";
pub const SIGNING_FILE: &str = "signing.key";
pub const NODE_ID_FILE: &str = "node.id";

/// `$XDG_DATA_HOME/costream`, else `$HOME/.local/share/costream`; `None` without either.
pub fn default_dir() -> Option<PathBuf> {
    let non_empty = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(data) = non_empty("XDG_DATA_HOME") {
        return Some(PathBuf::from(data).join("costream"));
    }
    non_empty("HOME").map(|home| PathBuf::from(home).join(".local/share/costream"))
}

/// Creates `dir` (0700) if needed and checks it is a directory.
pub fn prepare_dir(dir: &Path) -> Result<(), StoreError> {
    let io = |what, cause| StoreError::Io {
        path: dir.to_path_buf(),
        what,
        cause,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io("cannot create it", e))?;
    let meta = std::fs::metadata(dir).map_err(|e| io("cannot read it", e))?;
    if !meta.is_dir() {
        return Err(io(
            "not a directory",
            std::io::Error::from(std::io::ErrorKind::NotADirectory),
        ));
    }
    // An existing directory keeps its mode: tighten it (keys and records are in it).
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io("cannot make it private (chmod 0700)", e))?;
    }
    Ok(())
}

/// The store key in `<dir>/store.key`, made (random, 0600) on first start.
pub fn load_or_create_key(dir: &Path) -> Result<StoreKey, StoreError> {
    let path = dir.join(KEY_FILE);
    let origin = path.display().to_string();
    match read_secret(&path)? {
        Some(text) => StoreKey::from_base64(&text, &origin),
        None => {
            let key = StoreKey::generate();
            write_secret(&path, &key.to_base64())?;
            tracing::warn!(
                path = %path.display(),
                "made a new store key next to the rooms database; a backup of the database alone \
                 keeps stream keys safe only if this file is not in it: set [store] key \
                 (COSTREAM_STORE_KEY) instead"
            );
            Ok(key)
        }
    }
}

/// The API key and secret an open server signs its tokens with, kept in `<dir>/signing.key`
/// (made on first start) so tokens outlive a restart.
pub fn load_or_create_signing_key(
    dir: &Path,
    make: impl FnOnce() -> (String, String),
) -> Result<(String, String), StoreError> {
    let path = dir.join(SIGNING_FILE);
    if let Some(text) = read_secret(&path)? {
        return match text.split_once(':') {
            Some((key, secret)) if !key.is_empty() && !secret.is_empty() => {
                Ok((key.to_string(), secret.to_string()))
            }
            _ => Err(StoreError::Io {
                path,
                what: "not `<api key>:<secret>`",
                cause: std::io::Error::from(std::io::ErrorKind::InvalidData),
            }),
        };
    }
    let (key, secret) = make();
    write_secret(&path, &format!("{key}:{secret}"))?;
    Ok((key, secret))
}

/// This serve node's name among a fleet's serve nodes, kept in the data directory (which
/// belongs to one serve): a restart of the node is the same node, and takes its rooms back.
pub fn load_or_create_node_id(
    dir: &Path,
    make: impl FnOnce() -> String,
) -> Result<String, StoreError> {
    let path = dir.join(NODE_ID_FILE);
    if let Some(id) = read_secret(&path)? {
        if crate::fleet::record::validate_id("node id", &id).is_ok() {
            return Ok(id);
        }
        tracing::warn!(path = %path.display(), "unusable node id in the file; making a new one");
    }
    let id = make();
    write_secret(&path, &id)?;
    Ok(id)
}

/// The trimmed content of a secret file, `None` if there is none.
fn read_secret(path: &Path) -> Result<Option<String>, StoreError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), "secret file readable by others: chmod 600 it");
                }
            }
            Ok(Some(text.trim().to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(cause) => Err(StoreError::Io {
            path: path.to_path_buf(),
            what: "cannot read it",
            cause,
        }),
    }
}

/// Writes a new secret file, 0600 from its creation (never briefly readable by others).
fn write_secret(path: &Path, text: &str) -> Result<(), StoreError> {
    let io = |cause| StoreError::Io {
        path: path.to_path_buf(),
        what: "cannot write it",
        cause,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.write_all(b"\n").map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_made_once_private_and_read_back() {
        let dir = std::env::temp_dir().join(format!("costream-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        prepare_dir(&dir).unwrap();
        let key = load_or_create_key(&dir).unwrap();
        let again = load_or_create_key(&dir).unwrap();
        assert_eq!(key.to_base64(), again.to_base64());
        let mode = std::fs::metadata(dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let made =
            load_or_create_signing_key(&dir, || ("local-a".into(), "s3cret".into())).unwrap();
        let read = load_or_create_signing_key(&dir, || unreachable!()).unwrap();
        assert_eq!(made, read);
        // A file where the directory should be is named in the error.
        let file = dir.join("plain");
        std::fs::write(&file, "x").unwrap();
        let err = prepare_dir(&file).unwrap_err().to_string();
        assert!(err.contains("plain"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
