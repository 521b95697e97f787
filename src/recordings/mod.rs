//! Recordings of rooms' programs on this machine's disk: `<root>/<room_id>/<part>.mp4`, each
//! with `<part>.json` (its [`PartRecord`]). The mixer writes the media (it gets `<root>` as its
//! recordings directory and relative file names); serve keeps the records, lists, serves and
//! deletes them, and repairs the file of a part whose mixer died (see `repair`).
//!
//! Blocking file IO: callers on the runtime use `spawn_blocking` (a listing reads a few small
//! files per part).

pub mod part;
pub mod repair;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub use part::{PartRecord, PartState, RecordingView};

/// A part the records say is being written, whose file has not changed for this long, is
/// taken for one whose writer died with its serve (a live part writes every second).
const STALE_AFTER: Duration = Duration::from_secs(10);

/// Why a recording cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("no recording {0} in this room")]
    Unknown(String),
    #[error("recording {0} is still being written; stop it first (DELETE /api/v1/rooms/{{id}}/recordings/active)")]
    Busy(String),
    #[error("recordings directory: {0}")]
    Io(#[from] io::Error),
}

/// The recordings of every room under one directory.
#[derive(Debug)]
pub struct Catalog {
    root: PathBuf,
    /// One change of a record at a time: the room finishing a part, a listing finding it
    /// stale and a delete must not interleave (a record rewritten after its delete would bring
    /// it back; two writers of one record could tear it).
    records: std::sync::Mutex<()>,
}

impl Catalog {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            records: std::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What mixers get as their recordings directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The part's file name relative to the root, as the mixer's command carries it.
    pub fn relative_file(room_id: &str, recording_id: &str) -> String {
        format!("{room_id}/{recording_id}.mp4")
    }

    fn room_dir(&self, room_id: &str) -> PathBuf {
        self.root.join(room_id)
    }

    fn media_path(&self, room_id: &str, recording_id: &str) -> PathBuf {
        self.room_dir(room_id).join(format!("{recording_id}.mp4"))
    }

    fn record_path(&self, room_id: &str, recording_id: &str) -> PathBuf {
        self.room_dir(room_id).join(format!("{recording_id}.json"))
    }

    /// Writes a part's record (atomically: a crash leaves the old one or the new one).
    pub fn save(&self, room_id: &str, record: &PartRecord) -> io::Result<()> {
        let _one_at_a_time = self.lock();
        self.write_record(room_id, record)
    }

    fn write_record(&self, room_id: &str, record: &PartRecord) -> io::Result<()> {
        let dir = self.room_dir(room_id);
        std::fs::create_dir_all(&dir)?;
        let path = self.record_path(room_id, &record.recording_id);
        // Only this process writes records, one at a time (the lock).
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)
    }

    fn load(&self, room_id: &str, recording_id: &str) -> Option<PartRecord> {
        let bytes = std::fs::read(self.record_path(room_id, recording_id)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Ends a part whose writer is gone: its final state, and the torn end of its file cut
    /// off (a no-op for a file closed cleanly), so it plays to its last whole fragment without
    /// errors. Only for a part no mixer writes any more: cutting a file being written would
    /// corrupt it.
    pub fn finish(
        &self,
        room_id: &str,
        recording_id: &str,
        state: PartState,
        reason: Option<String>,
        now: SystemTime,
    ) -> io::Result<()> {
        let _one_at_a_time = self.lock();
        self.finish_locked(room_id, recording_id, |_| true, state, reason, now)
    }

    /// [`Catalog::finish`] under the lock, when `still` holds for the record as it is now.
    fn finish_locked(
        &self,
        room_id: &str,
        recording_id: &str,
        still: impl Fn(&PartRecord) -> bool,
        state: PartState,
        reason: Option<String>,
        now: SystemTime,
    ) -> io::Result<()> {
        let Some(mut record) = self.load(room_id, recording_id) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no record of part {recording_id} (deleted?)"),
            ));
        };
        if !still(&record) {
            return Ok(());
        }
        self.cut_torn_end(room_id, recording_id);
        record.state = state;
        record.reason = reason.or(record.reason);
        record.ended_at_ms = Some(part::unix_ms(now));
        self.write_record(room_id, &record)
    }

    fn cut_torn_end(&self, room_id: &str, recording_id: &str) {
        let path = self.media_path(room_id, recording_id);
        match repair::cut_torn_end(&path) {
            Ok(0) => {}
            Ok(cut) => {
                tracing::info!(room = %room_id, recording = %recording_id, bytes = cut,
                    "cut the torn last fragment off an interrupted recording")
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(room = %room_id, recording = %recording_id, "cannot repair the recording: {e}")
            }
        }
    }

    /// Every part of the room's recordings, oldest first. `active` are the parts a mixer is
    /// writing now; a part recorded as running but not active (its serve died) is finished as
    /// interrupted here, once its file has been still for a while.
    pub fn list(&self, room_id: &str, active: &[String], now: SystemTime) -> Vec<RecordingView> {
        let Ok(entries) = std::fs::read_dir(self.room_dir(room_id)) else {
            return Vec::new();
        };
        let mut views = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let Some(id) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let Some(mut record) = self.load(room_id, id) else {
                tracing::warn!(path = %path.display(), "skipping an unreadable recording record");
                continue;
            };
            let media = std::fs::metadata(self.media_path(room_id, id)).ok();
            let last_write = media.as_ref().and_then(|m| m.modified().ok());
            // The part's last sign of life: its file's last write, or its start (a mixer
            // creates the file a moment after the record is made).
            let started = SystemTime::UNIX_EPOCH + Duration::from_millis(record.started_at_ms);
            let last_sign = last_write.map_or(started, |t| t.max(started));
            let still_for = now.duration_since(last_sign).unwrap_or(Duration::ZERO);
            if record.state == PartState::Recording
                && !active.contains(&record.recording_id)
                && still_for >= STALE_AFTER
            {
                let reason = "its mixer stopped without closing it (serve restarted)".to_string();
                let ended = last_write.unwrap_or(now);
                let _one_at_a_time = self.lock();
                // The room may have finished it meanwhile: only a part still running is.
                let running = |r: &PartRecord| r.state == PartState::Recording;
                if let Err(e) = self.finish_locked(
                    room_id,
                    id,
                    running,
                    PartState::Interrupted,
                    Some(reason),
                    ended,
                ) {
                    tracing::warn!(room = %room_id, recording = %id, "cannot update the record: {e}");
                }
                record = self.load(room_id, id).unwrap_or(record);
            }
            let size = std::fs::metadata(self.media_path(room_id, id))
                .map(|m| m.len())
                .unwrap_or(0);
            views.push(record.view(size, last_write, now));
        }
        views.sort_by(|a, b| (a.started_at.as_str(), a.part).cmp(&(b.started_at.as_str(), b.part)));
        views
    }

    /// The number the next part of recording `session_id` takes: one past its parts on disk
    /// (a recording resumed after a serve restart goes on where it was).
    pub fn next_part(&self, room_id: &str, session_id: &str) -> u32 {
        let prefix = format!("{session_id}-");
        let Ok(entries) = std::fs::read_dir(self.room_dir(room_id)) else {
            return 1;
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let stem = name.strip_suffix(".json")?;
                stem.strip_prefix(&prefix)?.parse::<u32>().ok()
            })
            .max()
            .map_or(1, |last| last + 1)
    }

    /// The file of a part, for download.
    pub fn media_of(&self, room_id: &str, recording_id: &str) -> Result<PathBuf, CatalogError> {
        if self.load(room_id, recording_id).is_none() {
            return Err(CatalogError::Unknown(recording_id.to_string()));
        }
        Ok(self.media_path(room_id, recording_id))
    }

    /// Deletes a part (file and record); one being written is refused.
    pub fn delete(
        &self,
        room_id: &str,
        recording_id: &str,
        active: &[String],
    ) -> Result<(), CatalogError> {
        let _one_at_a_time = self.lock();
        if self.load(room_id, recording_id).is_none() {
            return Err(CatalogError::Unknown(recording_id.to_string()));
        }
        if active.iter().any(|a| a == recording_id) {
            return Err(CatalogError::Busy(recording_id.to_string()));
        }
        match std::fs::remove_file(self.media_path(room_id, recording_id)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        std::fs::remove_file(self.record_path(room_id, recording_id))?;
        Ok(())
    }
}

/// A recording or part id as the API takes it: what serve makes (`rec-…`), nothing that could
/// name another file.
pub fn valid_id(id: &str) -> bool {
    (1..=80).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_catalog(name: &str) -> Catalog {
        let dir = std::env::temp_dir().join(format!("costream-cat-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Catalog::new(dir)
    }

    fn record(id: &str, part: u32, started_at_ms: u64) -> PartRecord {
        PartRecord {
            recording_id: id.into(),
            session_id: "rec-a".into(),
            part,
            started_at_ms,
            ended_at_ms: None,
            state: PartState::Recording,
            reason: None,
        }
    }

    #[test]
    fn parts_are_listed_finished_and_deleted() {
        let catalog = temp_catalog("basic");
        let room = "room1";
        let now = SystemTime::now();
        let start = part::unix_ms(now) - 5000;
        catalog.save(room, &record("rec-a-1", 1, start)).unwrap();
        catalog
            .save(room, &record("rec-a-2", 2, start + 1000))
            .unwrap();
        let file = catalog.media_of(room, "rec-a-1").unwrap();
        std::fs::write(&file, b"0123456789").unwrap();
        let active = vec!["rec-a-1".to_string(), "rec-a-2".to_string()];
        let list = catalog.list(room, &active, now);
        assert_eq!(list.len(), 2);
        assert_eq!((list[0].part, list[0].size_bytes), (1, 10));
        assert_eq!(list[0].state, PartState::Recording);
        assert!(matches!(
            catalog.delete(room, "rec-a-1", &active),
            Err(CatalogError::Busy(_))
        ));
        catalog
            .finish(room, "rec-a-1", PartState::Complete, None, now)
            .unwrap();
        let list = catalog.list(room, &active[1..], now);
        assert_eq!(list[0].state, PartState::Complete);
        assert!((list[0].duration_s - 5.0).abs() < 0.01, "{:?}", list[0]);
        assert_eq!(catalog.next_part(room, "rec-a"), 3);
        assert_eq!(catalog.next_part(room, "rec-b"), 1);
        catalog.delete(room, "rec-a-1", &active[1..]).unwrap();
        assert!(!file.exists());
        assert!(matches!(
            catalog.media_of(room, "rec-a-1"),
            Err(CatalogError::Unknown(_))
        ));
        assert_eq!(catalog.list("other", &[], now), Vec::new());
        let _ = std::fs::remove_dir_all(catalog.root());
    }

    #[test]
    fn a_part_left_running_by_a_dead_serve_is_listed_interrupted() {
        let catalog = temp_catalog("stale");
        let room = "room1";
        let start = SystemTime::now();
        catalog
            .save(room, &record("rec-a-1", 1, part::unix_ms(start)))
            .unwrap();
        std::fs::write(catalog.media_of(room, "rec-a-1").unwrap(), b"x").unwrap();
        // Just written: still taken for running (its mixer may be starting).
        let list = catalog.list(room, &[], start);
        assert_eq!(list[0].state, PartState::Recording);
        let later = start + STALE_AFTER + Duration::from_secs(1);
        let list = catalog.list(room, &[], later);
        assert_eq!(list[0].state, PartState::Interrupted);
        assert!(list[0].reason.as_deref().unwrap().contains("serve"));
        let _ = std::fs::remove_dir_all(catalog.root());
    }

    #[test]
    fn ids_cannot_name_other_files() {
        assert!(valid_id("rec-20261206T101952-ab12-1"));
        for bad in ["", "../x", "a/b", "a.json", &"x".repeat(81)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }
}
