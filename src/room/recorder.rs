//! The room's recordings on the IO side: turns the state's `RecordPart` / `EndRecordingPart`
//! into mixer commands and part records, follows the mixers' `Recording` events and exits, and
//! finishes each part in the catalog (complete, failed or interrupted). The state decides
//! which mixer records which part; this keeps the files' books.

use std::sync::Arc;
use std::time::SystemTime;

use costream_mixer::control::{Command, RecordingState};
use serde::Serialize;

use crate::recordings::{part::unix_ms, Catalog, PartRecord, PartState};

/// A part a mixer writes (or is closing).
#[derive(Debug, Clone)]
struct ActivePart {
    /// The mixer writing it.
    epoch: u64,
    recording_id: String,
    session_id: String,
    /// The mixer said it writes (`Recording` event).
    writing: bool,
    /// It was asked to close cleanly (a stop, or its mixer's shutdown): an exit then
    /// completes it.
    stopping: bool,
}

/// The recording as the room status shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RecordingStatus {
    pub session_id: String,
    /// The part being written now (`GET …/recordings/{recording_id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_id: Option<String>,
    pub state: RecordingPhase,
    /// Why the last part failed (host only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Where the recording in progress stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecordingPhase {
    /// The mixer is opening the file (or the broadcast is starting).
    Starting,
    Recording,
    /// The last part could not be written (`reason`); the next mixer tries again.
    Failed,
}

pub struct Recorder {
    /// Names the room's directory in the catalog.
    room_id: String,
    /// Where parts and their records go (`None`: recording is refused here).
    catalog: Option<Arc<Catalog>>,
    /// Parts being written or closing, oldest first; a mixer may have a closing part and a new
    /// one at once (stop, then start again).
    parts: Vec<ActivePart>,
    /// Why the latest part failed, for the status (cleared by a new part).
    last_failure: Option<String>,
}

impl Recorder {
    pub fn new(room_id: &str, catalog: Option<Arc<Catalog>>) -> Self {
        Self {
            room_id: room_id.to_string(),
            catalog,
            parts: Vec::new(),
            last_failure: None,
        }
    }

    /// Why recording cannot start here, if it cannot.
    pub fn unavailable(&self) -> Option<&'static str> {
        self.catalog.is_none().then_some(
            "recording is not available on this server: it needs a data directory (--data-dir, \
             COSTREAM_DATA_DIR or HOME) on the machine running the mixers, and is not yet \
             supported with mixers on a fleet's workers",
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
    /// for the mixer returned. `None` when it cannot be recorded (no catalog, or its record
    /// cannot be written: a file nobody could list or delete is not made).
    ///
    /// The record is written here, on the room's task, before the mixer hears of the part: a
    /// few hundred bytes, so that a listing never finds a file without its record.
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
            let reason = format!("cannot write the recording's record: {e}");
            tracing::warn!(room = %self.room_id, recording = %recording_id, "{reason}");
            self.last_failure = Some(reason);
            return None;
        }
        self.last_failure = None;
        self.parts.push(ActivePart {
            epoch,
            recording_id: recording_id.clone(),
            session_id: session_id.to_string(),
            writing: false,
            stopping: false,
        });
        tracing::info!(room = %self.room_id, recording = %recording_id, epoch, "recording part");
        Some(Command::StartRecording {
            file: Catalog::relative_file(&self.room_id, &recording_id),
            recording_id,
        })
    }

    /// The commands that close the parts mixer `epoch` writes (the recording was stopped).
    pub fn end(&mut self, epoch: u64) -> Vec<Command> {
        self.parts
            .iter_mut()
            .filter(|p| p.epoch == epoch && !p.stopping)
            .map(|part| {
                part.stopping = true;
                Command::StopRecording {
                    recording_id: part.recording_id.clone(),
                }
            })
            .collect()
    }

    /// Mixer `epoch` is being stopped cleanly (its EOS closes its files).
    pub fn mixer_stopping(&mut self, epoch: u64) {
        for part in self.parts.iter_mut().filter(|p| p.epoch == epoch) {
            part.stopping = true;
        }
    }

    /// A mixer's `Recording` event.
    pub fn on_event(&mut self, recording_id: &str, state: RecordingState, reason: Option<String>) {
        let Some(pos) = self
            .parts
            .iter()
            .position(|p| p.recording_id == recording_id)
        else {
            return;
        };
        match state {
            RecordingState::Recording => self.parts[pos].writing = true,
            RecordingState::Stopped => {
                let part = self.parts.remove(pos);
                // A reason: the stop was cut short (its last fragment may be torn).
                let state = match reason {
                    None => PartState::Complete,
                    Some(_) => PartState::Interrupted,
                };
                self.finish(&part, state, reason);
            }
            RecordingState::Failed => {
                tracing::warn!(room = %self.room_id, recording = %recording_id, reason = ?reason,
                    "recording failed (the broadcast goes on)");
                self.last_failure = reason.clone();
                let part = self.parts.remove(pos);
                self.finish(&part, PartState::Failed, reason);
            }
        }
    }

    /// Mixer `epoch` is gone: its parts end complete if they were being closed cleanly, else
    /// interrupted (crash, kill, lost worker).
    pub fn mixer_exited(&mut self, epoch: u64, reason: &str) {
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parts)
            .into_iter()
            .partition(|p| p.epoch == epoch);
        self.parts = kept;
        for part in gone {
            if part.stopping {
                self.finish(&part, PartState::Complete, None);
            } else {
                let why =
                    format!("its mixer ended: {reason}; the recording goes on in the next part");
                self.finish(&part, PartState::Interrupted, Some(why));
            }
        }
    }

    /// Parts being written now.
    pub fn active_ids(&self) -> Vec<String> {
        self.parts.iter().map(|p| p.recording_id.clone()).collect()
    }

    /// The status of the recording `session` (the state's), with its newest part.
    pub fn status(&self, session: Option<&str>) -> Option<RecordingStatus> {
        let session_id = session?.to_string();
        let part = self
            .parts
            .iter()
            .rev()
            .find(|p| p.session_id == session_id && !p.stopping);
        let (state, reason) = match (part, &self.last_failure) {
            (Some(p), _) if p.writing => (RecordingPhase::Recording, None),
            (None, Some(reason)) => (RecordingPhase::Failed, Some(reason.clone())),
            _ => (RecordingPhase::Starting, None),
        };
        Some(RecordingStatus {
            session_id,
            recording_id: part.map(|p| p.recording_id.clone()),
            state,
            reason,
        })
    }

    /// A new recording starts: an old failure is not its own.
    pub fn session_started(&mut self) {
        self.last_failure = None;
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
