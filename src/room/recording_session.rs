//! Recording the program while live (sans IO, a child module of `state`): which recording
//! runs, and which part each mixer writes. A recording outlives mixers: every mixer of the
//! broadcast (a replacement after a crash, a move's successor) writes a new part of it, so a
//! killed mixer costs at most its torn last fragment, never the recording.

use super::{Broadcast, Effect, RoomError, RoomState};

/// The recording in progress in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingSession {
    /// Chosen by the caller (the API makes it unique); names the parts' files.
    pub session_id: String,
    /// Number of the next part (1-based).
    pub next_part: u32,
}

impl RoomState {
    /// The recording in progress, if any.
    pub fn recording(&self) -> Option<&RecordingSession> {
        self.recording.as_ref()
    }

    /// Starts recording the program: live (or about to be), the current mixer begins a part at
    /// once and every later mixer of this broadcast its own. It ends with the broadcast or
    /// [`RoomState::stop_recording`].
    pub(super) fn start_recording(
        &mut self,
        session_id: String,
        first_part: u32,
    ) -> Result<(), RoomError> {
        if let Some(active) = &self.recording {
            return Err(RoomError::AlreadyRecording(active.session_id.clone()));
        }
        let live = matches!(self.broadcast, Broadcast::Live { .. });
        if !live && !self.awaiting_admission {
            return Err(RoomError::NotLive);
        }
        self.recording = Some(RecordingSession {
            session_id,
            next_part: first_part.max(1),
        });
        // Restarting (no mixer): the replacement records from its start.
        if self.restart_at.is_none() {
            if let Some(epoch) = self.live_epoch() {
                self.record_part(epoch);
            }
        }
        Ok(())
    }

    /// Ends the recording in progress: every mixer writing a part of it closes its file.
    pub(super) fn stop_recording(&mut self) -> Result<(), RoomError> {
        if self.recording.take().is_none() {
            return Err(RoomError::NotRecording);
        }
        for epoch in [self.live_epoch(), self.old_mixer_epoch()]
            .into_iter()
            .flatten()
        {
            self.effects.push_back(Effect::EndRecordingPart { epoch });
        }
        Ok(())
    }

    /// Mixer `epoch` (just started) writes the next part of the recording in progress.
    pub(super) fn record_part(&mut self, epoch: u64) {
        let Some(session) = self.recording.as_mut() else {
            return;
        };
        let part = session.next_part;
        session.next_part += 1;
        self.effects.push_back(Effect::RecordPart {
            epoch,
            session_id: session.session_id.clone(),
            part,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::tests::{drain, go_live, ready, settings};
    use super::super::*;

    fn parts(effects: &[Effect]) -> Vec<(u64, u32)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::RecordPart { epoch, part, .. } => Some((*epoch, *part)),
                _ => None,
            })
            .collect()
    }

    fn ended(effects: &[Effect]) -> Vec<u64> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::EndRecordingPart { epoch } => Some(*epoch),
                _ => None,
            })
            .collect()
    }

    fn start(room: &mut RoomState, now: Instant) -> Result<(), RoomError> {
        room.handle(
            now,
            Input::StartRecording {
                session_id: "rec-a".into(),
                first_part: 1,
            },
        )
    }

    #[test]
    fn a_recording_needs_a_broadcast_and_runs_one_at_a_time() {
        let now = Instant::now();
        let mut room = RoomState::new(settings(1));
        assert_eq!(start(&mut room, now), Err(RoomError::NotLive));
        assert_eq!(
            room.handle(now, Input::StopRecording),
            Err(RoomError::NotRecording)
        );
        go_live(&mut room, now);
        drain(&mut room);
        start(&mut room, now).unwrap();
        let fx = drain(&mut room);
        assert!(
            matches!(&fx[..], [Effect::RecordPart { epoch: 1, session_id, part: 1 }] if session_id == "rec-a"),
            "{fx:?}"
        );
        assert_eq!(
            start(&mut room, now),
            Err(RoomError::AlreadyRecording("rec-a".into()))
        );
        room.handle(now, Input::StopRecording).unwrap();
        assert_eq!(ended(&drain(&mut room)), [1]);
        assert!(room.recording().is_none());
    }

    #[test]
    fn every_new_mixer_records_the_next_part_until_the_broadcast_stops() {
        let now = Instant::now();
        let mut room = RoomState::new(settings(1));
        // Asked while going live (`record: true`): the first mixer records from its start.
        room.handle(now, Input::GoLive).unwrap();
        start(&mut room, now).unwrap();
        assert!(parts(&drain(&mut room)).is_empty(), "no mixer yet");
        room.handle(now, Input::Admitted).unwrap();
        let fx = drain(&mut room);
        assert_eq!(parts(&fx), [(1, 1)]);
        let start_at = fx
            .iter()
            .position(|e| {
                matches!(
                    e,
                    Effect::ToMixer {
                        command: Command::Start { .. },
                        ..
                    }
                )
            })
            .unwrap();
        let part_at = fx
            .iter()
            .position(|e| matches!(e, Effect::RecordPart { .. }))
            .unwrap();
        assert!(start_at < part_at, "the mixer is started before it records");

        // The mixer crashes: its successor records part 2 of the same recording.
        room.handle(
            now,
            Input::MixerExited {
                epoch: 1,
                reason: "killed".into(),
                worker_lost: false,
            },
        )
        .unwrap();
        assert_eq!(parts(&drain(&mut room)), [(2, 2)]);
        assert_eq!(room.recording().unwrap().next_part, 3);

        // Stopping the broadcast ends the recording (the mixer's EOS closes the file).
        room.handle(now, Input::StopLive).unwrap();
        assert!(room.recording().is_none());
        drain(&mut room);
        go_live(&mut room, now);
        assert!(
            parts(&drain(&mut room)).is_empty(),
            "a new broadcast is not recorded"
        );
    }

    #[test]
    fn a_planned_move_records_on_the_successor_and_a_stop_reaches_both_mixers() {
        let now = Instant::now();
        let mut room = RoomState::new(settings(1));
        go_live(&mut room, now);
        room.handle(
            now,
            Input::Mixer {
                epoch: 1,
                event: ready(),
            },
        )
        .unwrap();
        start(&mut room, now).unwrap();
        drain(&mut room);
        room.handle(now, Input::MoveMixer { epoch: 1 }).unwrap();
        assert_eq!(parts(&drain(&mut room)), [(2, 2)]);
        room.handle(now, Input::StopRecording).unwrap();
        let mut stopped = ended(&drain(&mut room));
        stopped.sort_unstable();
        assert_eq!(stopped, [1, 2]);
    }

    #[test]
    fn a_refused_go_live_forgets_the_recording_it_was_asked_for() {
        let now = Instant::now();
        let mut room = RoomState::new(settings(1));
        room.handle(now, Input::GoLive).unwrap();
        start(&mut room, now).unwrap();
        room.handle(
            now,
            Input::Refused {
                reason: "full".into(),
            },
        )
        .unwrap();
        assert!(room.recording().is_none());
    }
}
