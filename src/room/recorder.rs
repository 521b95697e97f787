//! The room's recordings on the IO side: turns the state's `RecordPart` / `EndRecordingPart`
//! into mixer commands and part records, follows the mixers' `Recording` events and exits, and
//! finishes each part in the catalog (complete, failed or interrupted). The state decides
//! which mixer records which part; this keeps the files' books.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use costream_mixer::control::{Command, RecordingState};
use serde::Serialize;

use crate::recordings::{part::unix_ms, Catalog, PartRecord, PartState};

/// A part a mixer writes.
#[derive(Debug, Clone)]
struct ActivePart {
    recording_id: String,
    session_id: String,
    /// The mixer said it writes (`Recording` event).
    writing: bool,
    /// Its mixer was asked to stop (cleanly): an exit then completes the part.
    stopping: bool,
}

/// The recording as the room status shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RecordingStatus {
    pub session_id: String,
    /// The part being written now (`GET …/recordings/{recording_id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_id: Option<String>,
    /// `starting` (the mixer is opening the file), `recording`, or `failed` (the last part
    /// could not be written: `reason` says why; the next mixer tries again).
    #[schema(value_type = String)]
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

pub struct Recorder {
    room_id: String,
    catalog: Option<Arc<Catalog>>,
    /// By mixer epoch.
    parts: BTreeMap<u64, ActivePart>,
    /// Why the latest part failed, for the status (cleared by the next part that writes).
    last_failure: Option<String>,
}

impl Recorder {
    pub fn new(room_id: &str, catalog: Option<Arc<Catalog>>) -> Self {
        Self {
            room_id: room_id.to_string(),
            catalog,
            parts: BTreeMap::new(),
            last_failure: None,
        }
    }

    /// Why recording cannot start here, if it cannot.
    pub fn unavailable(&self) -> Option<&'static str> {
        self.catalog.is_none().then_some(
            "recording needs a data directory (--data-dir or COSTREAM_DATA_DIR, or HOME)",
        )
    }

    pub fn catalog(&self) -> Option<&Arc<Catalog>> {
        self.catalog.as_ref()
    }

    /// A new recording's id: sortable by time, unique by its random tail.
    pub fn new_session_id() -> String {
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let stamp: String = now.chars().filter(char::is_ascii_alphanumeric).collect();
        format!("rec-{}-{:04x}", stamp.to_lowercase(), rand::random::<u16>())
    }

    /// Mixer `epoch` starts part `part` of `session_id`: its record is made, and the command
    /// for the mixer returned. `None` when nothing can be recorded here (no catalog).
    pub fn begin(&mut self, epoch: u64, session_id: &str, part: u32) -> Option<Command> {
        let catalog = self.catalog.as_ref()?;
        let recording_id = format!("{session_id}-{part}");
        let record = PartRecord {
            recording_id: recording_id.clone(),
            session_id: session_id.to_string(),
            part,
            started_at_ms: unix_ms(SystemTime::now()),
            ended_at_ms: None,
            state: PartState::Recording,
            reason: None,
        };
        if let Err(e) = catalog.save(&self.room_id, &record) {
            tracing::warn!(room = %self.room_id, recording = %recording_id,
                "cannot write the recording's record: {e}");
        }
        // A mixer writes one part at a time; a stale entry would be a bug, not a file.
        if let Some(old) = self.parts.insert(
            epoch,
            ActivePart {
                recording_id: recording_id.clone(),
                session_id: session_id.to_string(),
                writing: false,
                stopping: false,
            },
        ) {
            self.finish(&old, PartState::Interrupted, None);
        }
        tracing::info!(room = %self.room_id, recording = %recording_id, epoch, "recording part");
        Some(Command::StartRecording {
            file: Catalog::relative_file(&self.room_id, &recording_id),
            recording_id,
        })
    }

    /// The command that closes mixer `epoch`'s part, if it writes one.
    pub fn end(&mut self, epoch: u64) -> Option<Command> {
        let part = self.parts.get_mut(&epoch)?;
        part.stopping = true;
        Some(Command::StopRecording {
            recording_id: part.recording_id.clone(),
        })
    }

    /// Mixer `epoch` is being stopped cleanly (its EOS closes its file).
    pub fn mixer_stopping(&mut self, epoch: u64) {
        if let Some(part) = self.parts.get_mut(&epoch) {
            part.stopping = true;
        }
    }

    /// A mixer's `Recording` event.
    pub fn on_event(
        &mut self,
        epoch: u64,
        recording_id: &str,
        state: RecordingState,
        reason: Option<String>,
    ) {
        let Some(part) = self
            .parts
            .get_mut(&epoch)
            .filter(|p| p.recording_id == recording_id)
        else {
            return;
        };
        match state {
            RecordingState::Recording => {
                part.writing = true;
                self.last_failure = None;
            }
            RecordingState::Stopped => {
                if let Some(part) = self.parts.remove(&epoch) {
                    self.finish(&part, PartState::Complete, reason);
                }
            }
            RecordingState::Failed => {
                tracing::warn!(room = %self.room_id, recording = %recording_id, reason = ?reason,
                    "recording failed (the broadcast goes on)");
                self.last_failure = reason.clone();
                if let Some(part) = self.parts.remove(&epoch) {
                    self.finish(&part, PartState::Failed, reason);
                }
            }
        }
    }

    /// Mixer `epoch` is gone: its part ends complete if it was stopped cleanly, else
    /// interrupted (crash, kill, lost worker).
    pub fn mixer_exited(&mut self, epoch: u64, reason: &str) {
        let Some(part) = self.parts.remove(&epoch) else {
            return;
        };
        if part.stopping {
            self.finish(&part, PartState::Complete, None);
        } else {
            let why = format!("its mixer ended: {reason}; the recording goes on in the next part");
            self.finish(&part, PartState::Interrupted, Some(why));
        }
    }

    /// Parts being written now.
    pub fn active_ids(&self) -> Vec<String> {
        self.parts
            .values()
            .map(|p| p.recording_id.clone())
            .collect()
    }

    /// The status of the recording `session` (the state's), with the newest part of it.
    pub fn status(&self, session: Option<&str>) -> Option<RecordingStatus> {
        let session_id = session?.to_string();
        let part = self
            .parts
            .values()
            .rev()
            .find(|p| p.session_id == session_id && !p.stopping);
        let (state, reason) = match (part, &self.last_failure) {
            (Some(p), _) if p.writing => ("recording", None),
            (None, Some(reason)) => ("failed", Some(reason.clone())),
            _ => ("starting", None),
        };
        Some(RecordingStatus {
            session_id,
            recording_id: part.map(|p| p.recording_id.clone()),
            state,
            reason,
        })
    }

    /// Records the part's end off the room's task (a torn file is repaired first, which reads
    /// through the file's box headers).
    fn finish(&self, part: &ActivePart, state: PartState, reason: Option<String>) {
        let Some(catalog) = self.catalog.clone() else {
            return;
        };
        let room_id = self.room_id.clone();
        let recording_id = part.recording_id.clone();
        tracing::info!(room = %room_id, recording = %recording_id, ?state, "recording part ended");
        let ended = SystemTime::now();
        let work = move || {
            if let Err(e) = catalog.finish(&room_id, &recording_id, state, reason, ended) {
                tracing::warn!(room = %room_id, recording = %recording_id,
                    "cannot finish the recording's record: {e}");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(work);
            }
            Err(_) => work(),
        }
    }
}
