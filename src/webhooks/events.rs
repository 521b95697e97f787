//! Which webhook events a room's status change means. Pure: two snapshots of the status in,
//! the events between them out.
//!
//! Why from status snapshots: the room already republishes its status on every change, so
//! webhooks need no hook inside the room's state machine and cannot slow it down. The price:
//! a change undone before the next snapshot (a participant joining and leaving within a few
//! milliseconds) is not reported.

use costream_mixer::control::OutputState;
use serde::Serialize;

use crate::room::status::{OutputStatusView, ParticipantStatus, RoomStatus};
use crate::room::tokens::Role;

/// What happened, with the part of the room it concerns.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    RoomStarted,
    RoomFinished,
    ParticipantJoined(ParticipantRef),
    ParticipantLeft(ParticipantRef),
    BroadcastStarted,
    BroadcastEnded,
    BroadcastFailed { reason: Option<String> },
    OutputUpdated(OutputRef),
}

impl Change {
    /// The event's name (LiveKit's where LiveKit has one).
    pub fn name(&self) -> &'static str {
        match self {
            Change::RoomStarted => "room_started",
            Change::RoomFinished => "room_finished",
            Change::ParticipantJoined(_) => "participant_joined",
            Change::ParticipantLeft(_) => "participant_left",
            Change::BroadcastStarted => "broadcast_started",
            Change::BroadcastEnded => "broadcast_ended",
            Change::BroadcastFailed { .. } => "broadcast_failed",
            Change::OutputUpdated(_) => "output_updated",
        }
    }
}

/// A participant as LiveKit's webhooks name one (`sid`, `identity`, `name`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParticipantRef {
    pub sid: String,
    pub identity: String,
    pub name: String,
    pub role: Role,
}

impl ParticipantRef {
    fn of(p: &ParticipantStatus) -> Self {
        Self {
            sid: p.participant_id.clone(),
            identity: p.identity.clone(),
            name: p.display_name.clone(),
            role: p.role,
        }
    }
}

/// An output's state and counters; the URL with its stream key redacted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutputRef {
    pub output_id: String,
    pub url: String,
    pub state: OutputState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub reconnects: u32,
    pub bytes_sent: u64,
}

impl OutputRef {
    fn of(o: &OutputStatusView) -> Self {
        Self {
            output_id: o.output_id.clone(),
            url: o.url.clone(),
            state: o.state,
            reason: o.reason.clone(),
            reconnects: o.reconnects,
            bytes_sent: o.bytes_sent,
        }
    }
}

/// The events between two snapshots of one room's status; `prev` is `None` for the first
/// one (the room was just created). Order: participants joining, the broadcast, outputs,
/// participants leaving — so a receiver sees people arrive before the show that uses them.
pub fn changes(prev: Option<&RoomStatus>, next: &RoomStatus) -> Vec<Change> {
    let mut changes = Vec::new();
    let no_one: &[ParticipantStatus] = &[];
    let before = prev.map_or(no_one, |p| &p.participants);
    if prev.is_none() {
        changes.push(Change::RoomStarted);
    }
    for p in &next.participants {
        if !before.iter().any(|b| b.participant_id == p.participant_id) {
            changes.push(Change::ParticipantJoined(ParticipantRef::of(p)));
        }
    }
    let was = prev.map_or("offline", |p| p.broadcast);
    match (was, next.broadcast) {
        (was, "live") if was != "live" => changes.push(Change::BroadcastStarted),
        ("live", "offline") => changes.push(Change::BroadcastEnded),
        (was, "failed") if was != "failed" => changes.push(Change::BroadcastFailed {
            reason: next.mixer.reason.clone(),
        }),
        _ => {}
    }
    for output in &next.outputs {
        let old = prev.and_then(|p| p.outputs.iter().find(|o| o.output_id == output.output_id));
        let moved = match old {
            Some(old) => old.state != output.state,
            // A new output is news once it does something.
            None => output.state != OutputState::Idle,
        };
        if moved {
            changes.push(Change::OutputUpdated(OutputRef::of(output)));
        }
    }
    for p in before {
        if !next
            .participants
            .iter()
            .any(|n| n.participant_id == p.participant_id)
        {
            changes.push(Change::ParticipantLeft(ParticipantRef::of(p)));
        }
    }
    changes
}

/// The events of a room that ended, given its last status: the broadcast ends if it was on,
/// then the room finishes.
pub fn finished(last: &RoomStatus) -> Vec<Change> {
    let mut changes = Vec::new();
    if last.broadcast == "live" {
        changes.push(Change::BroadcastEnded);
    }
    changes.push(Change::RoomFinished);
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::state::tests::settings;
    use crate::room::state::RoomState;
    use std::time::Instant;

    fn status() -> RoomStatus {
        RoomStatus::of("r1", &RoomState::new(settings(0)), Instant::now())
    }

    fn participant(id: &str) -> ParticipantStatus {
        ParticipantStatus {
            participant_id: id.into(),
            role: Role::Guest,
            identity: format!("id-{id}"),
            display_name: id.to_uppercase(),
            tracks: Vec::new(),
            audio: Default::default(),
            subscribers: 0,
            quality: Default::default(),
        }
    }

    fn output(state: OutputState) -> OutputStatusView {
        OutputStatusView {
            output_id: "out0".into(),
            url: "rtmp://cdn.example/live/***".into(),
            state,
            reason: None,
            bytes_sent: 0,
            bitrate_kbps: 0,
            live_seconds: None,
            reconnects: 0,
        }
    }

    fn names(changes: &[Change]) -> Vec<&'static str> {
        changes.iter().map(Change::name).collect()
    }

    #[test]
    fn a_room_starts_people_come_and_go_and_it_finishes() {
        let first = status();
        assert_eq!(names(&changes(None, &first)), ["room_started"]);
        assert!(
            changes(Some(&first), &first).is_empty(),
            "no change, no event"
        );

        let mut joined = first.clone();
        joined.participants = vec![participant("a"), participant("b")];
        let events = changes(Some(&first), &joined);
        assert_eq!(names(&events), ["participant_joined", "participant_joined"]);
        let Change::ParticipantJoined(a) = &events[0] else {
            unreachable!()
        };
        assert_eq!((a.sid.as_str(), a.identity.as_str()), ("a", "id-a"));

        let mut left = joined.clone();
        left.participants.remove(0);
        assert_eq!(
            changes(Some(&joined), &left),
            [Change::ParticipantLeft(ParticipantRef::of(&participant(
                "a"
            )))]
        );
        assert_eq!(names(&finished(&left)), ["room_finished"]);
    }

    #[test]
    fn the_broadcast_and_its_outputs_report_state_changes_only() {
        let offline = status();
        let mut live = offline.clone();
        live.broadcast = "live";
        live.outputs = vec![output(OutputState::Connecting)];
        assert_eq!(
            names(&changes(Some(&offline), &live)),
            ["broadcast_started", "output_updated"]
        );
        let mut streaming = live.clone();
        streaming.outputs[0].state = OutputState::Live;
        streaming.outputs[0].bytes_sent = 1_000;
        let mut more_bytes = streaming.clone();
        more_bytes.outputs[0].bytes_sent = 9_000;
        assert_eq!(names(&changes(Some(&live), &streaming)), ["output_updated"]);
        assert!(
            changes(Some(&streaming), &more_bytes).is_empty(),
            "counters alone are no event"
        );
        assert_eq!(
            names(&finished(&streaming)),
            ["broadcast_ended", "room_finished"]
        );

        let mut failed = streaming.clone();
        failed.broadcast = "failed";
        assert_eq!(
            names(&changes(Some(&streaming), &failed)),
            ["broadcast_failed"]
        );
        let mut stopped = streaming.clone();
        stopped.broadcast = "offline";
        assert_eq!(
            names(&changes(Some(&streaming), &stopped)),
            ["broadcast_ended"]
        );
        // An idle output added offline is not news yet.
        let mut added = offline.clone();
        added.outputs = vec![output(OutputState::Idle)];
        assert!(changes(Some(&offline), &added).is_empty());
    }
}
