//! What the room measures of its own quality while it runs (issue 14): the mixer's figures
//! (added latency, frozen or black program) from its heartbeats, each guest's join → visible
//! time from `InputVisible`, and the reception of each publisher (loss, jitter, A/V offset)
//! from its session. Pure: the actor feeds it and the status view reads it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use costream_ingest::{MediaKind, SessionStats};
use costream_mixer::control::ProgramQuality;
use serde::Serialize;

use super::state::ParticipantId;

/// A heartbeat's figures older than this are not shown (the mixer is gone or stuck).
const PROGRAM_FIGURES_TTL: Duration = Duration::from_secs(5);

/// The program's figures in the room status (while live).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ProgramQualityView {
    /// Mixer-added latency (input arrival at the mixer → program frame leaving the muxer),
    /// median and maximum over the last second, in ms.
    pub latency_ms: u32,
    pub latency_max_ms: u32,
    /// The largest A/V offset among the publishers, in ms (positive: the picture trails the
    /// sound); absent until a publisher sent both media with sender reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub av_offset_ms: Option<f64>,
    /// The program has not changed for `still_ms` while a shown input moved (3 s or more).
    pub frozen: bool,
    /// The program has been black for 3 s or more while a shown input was not.
    pub black: bool,
    /// How long the program picture has been unchanged, in ms.
    pub still_ms: u64,
}

/// One publisher's figures in the room status.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default, utoipa::ToSchema)]
pub struct ParticipantQualityView {
    pub packets_received: u64,
    pub bytes_received: u64,
    /// RFC 3550 cumulative loss over all this participant's tracks.
    pub packets_lost: i64,
    /// Interarrival jitter of the video (else audio) track, in ms.
    pub jitter_ms: f64,
    /// This publisher's A/V offset in the program, in ms (positive: the picture trails).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub av_offset_ms: Option<f64>,
    /// From the WHIP request reaching serve to the first program frame showing this guest,
    /// in ms; absent until it happened (or for audio-only guests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_to_visible_ms: Option<f64>,
}

#[derive(Debug, Default)]
pub struct QualityTracker {
    /// When each participant's WHIP request arrived (until it is visible).
    joining: HashMap<ParticipantId, Instant>,
    /// Join → visible per participant, once.
    visible: HashMap<ParticipantId, Duration>,
    /// The latest heartbeat figures and when they came.
    program: Option<(ProgramQuality, Instant)>,
}

impl QualityTracker {
    pub fn joined(&mut self, participant_id: &str, requested_at: Instant) {
        self.joining
            .insert(participant_id.to_string(), requested_at);
        self.visible.remove(participant_id);
    }

    /// The broadcast starts: whoever joined before waits for the mixer, not for their own
    /// connection, so their join → visible counts from now.
    pub fn went_live(&mut self, now: Instant) {
        for since in self.joining.values_mut() {
            *since = (*since).max(now);
        }
    }

    pub fn left(&mut self, participant_id: &str) {
        self.joining.remove(participant_id);
        self.visible.remove(participant_id);
    }

    /// The participant's picture is in the program; returns join → visible the first time.
    pub fn visible(&mut self, participant_id: &str, now: Instant) -> Option<Duration> {
        let requested_at = self.joining.remove(participant_id)?;
        let took = now.saturating_duration_since(requested_at);
        self.visible.insert(participant_id.to_string(), took);
        Some(took)
    }

    pub fn program(&mut self, quality: ProgramQuality, now: Instant) {
        self.program = Some((quality, now));
    }

    /// The mixer stopped (room offline or mixer restarting): its figures no longer hold.
    pub fn program_ended(&mut self) {
        self.program = None;
    }

    pub fn participant_view(
        &self,
        participant_id: &str,
        session: Option<&SessionStats>,
    ) -> ParticipantQualityView {
        let mut view = ParticipantQualityView {
            join_to_visible_ms: self.visible.get(participant_id).map(millis),
            ..Default::default()
        };
        let Some(stats) = session else {
            return view;
        };
        for track in stats.tracks.iter().filter(|t| t.kind.is_some()) {
            view.packets_received += track.packets_received;
            view.bytes_received += track.bytes_received;
            view.packets_lost += track.reception.lost;
        }
        let jitter_of = |kind| {
            stats
                .live_track(kind)
                .map(|t| t.reception.jitter_secs * 1000.0)
        };
        view.jitter_ms = round_ms(
            jitter_of(MediaKind::Video)
                .or_else(|| jitter_of(MediaKind::Audio))
                .unwrap_or(0.0),
        );
        view.av_offset_ms = stats.av_offset_secs().map(|s| round_ms(s * 1000.0));
        view
    }

    /// The program's figures, if a heartbeat brought them recently; `av_offset_ms` is the
    /// largest offset (by size) among `participants`.
    pub fn program_view(
        &self,
        now: Instant,
        participants: &[ParticipantQualityView],
    ) -> Option<ProgramQualityView> {
        let (q, at) = self.program.as_ref()?;
        if now.saturating_duration_since(*at) > PROGRAM_FIGURES_TTL {
            return None;
        }
        let av_offset_ms = participants
            .iter()
            .filter_map(|p| p.av_offset_ms)
            .max_by(|a, b| a.abs().total_cmp(&b.abs()));
        Some(ProgramQualityView {
            latency_ms: q.latency_ms,
            latency_max_ms: q.latency_max_ms,
            av_offset_ms,
            frozen: q.frozen,
            black: q.black,
            still_ms: q.still_ms,
        })
    }
}

fn millis(d: &Duration) -> f64 {
    round_ms(d.as_secs_f64() * 1000.0)
}

/// Tenths of a millisecond: more would be noise.
fn round_ms(ms: f64) -> f64 {
    (ms * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use costream_ingest::{ReceptionStats, TrackStats};

    fn track(kind: MediaKind, lost: i64, jitter_secs: f64, delay: Option<f64>) -> TrackStats {
        TrackStats {
            track_id: format!("{kind:?}"),
            kind: Some(kind),
            codec: None,
            ssrc: 1,
            live: true,
            targets: 1,
            packets_received: 100,
            bytes_received: 0,
            packets_forwarded: 0,
            bytes_forwarded: 0,
            packets_dropped: 0,
            keyframe_requests: 0,
            subscriber_packets: 0,
            forward_delay_us_sum: 0,
            forward_delay_us_max: 0,
            forward_delay_samples: 0,
            reception: ReceptionStats {
                expected: 100,
                lost,
                jitter_secs,
                capture_delay_secs: delay,
            },
        }
    }

    #[test]
    fn join_to_visible_is_counted_once_per_join() {
        let t0 = Instant::now();
        let mut q = QualityTracker::default();
        q.joined("p1", t0);
        assert_eq!(
            q.visible("p1", t0 + Duration::from_millis(250)),
            Some(Duration::from_millis(250))
        );
        // A mixer restart shows the guest again: not a new join.
        assert_eq!(q.visible("p1", t0 + Duration::from_secs(9)), None);
        let view = q.participant_view("p1", None);
        assert_eq!(view.join_to_visible_ms, Some(250.0));
        q.left("p1");
        assert_eq!(q.participant_view("p1", None).join_to_visible_ms, None);
        // Someone never joined through WHIP: nothing to measure.
        assert_eq!(q.visible("ghost", t0), None);
    }

    #[test]
    fn whoever_joined_before_going_live_counts_from_the_go_live() {
        let t0 = Instant::now();
        let mut q = QualityTracker::default();
        q.joined("host", t0);
        q.went_live(t0 + Duration::from_secs(60));
        assert_eq!(
            q.visible("host", t0 + Duration::from_millis(60_400)),
            Some(Duration::from_millis(400))
        );
    }

    #[test]
    fn participant_view_sums_loss_and_prefers_video_jitter() {
        let q = QualityTracker::default();
        let stats = SessionStats {
            session_id: "p1".into(),
            tracks: vec![
                track(MediaKind::Audio, 2, 0.004, Some(1.005)),
                track(MediaKind::Video, 3, 0.0123, Some(1.030)),
            ],
        };
        let view = q.participant_view("p1", Some(&stats));
        assert_eq!(view.packets_received, 200);
        assert_eq!(view.packets_lost, 5);
        assert_eq!(view.jitter_ms, 12.3);
        assert_eq!(view.av_offset_ms, Some(25.0));
    }

    #[test]
    fn program_view_picks_the_worst_offset_and_expires() {
        let t0 = Instant::now();
        let mut q = QualityTracker::default();
        assert_eq!(q.program_view(t0, &[]), None);
        q.program(
            ProgramQuality {
                latency_ms: 70,
                latency_max_ms: 90,
                latency_samples: 30,
                still_ms: 0,
                frozen: false,
                black: false,
            },
            t0,
        );
        let people = [
            ParticipantQualityView {
                av_offset_ms: Some(20.0),
                ..Default::default()
            },
            ParticipantQualityView {
                av_offset_ms: Some(-45.0),
                ..Default::default()
            },
            ParticipantQualityView::default(),
        ];
        let view = q.program_view(t0, &people).unwrap();
        assert_eq!(view.latency_ms, 70);
        assert_eq!(view.av_offset_ms, Some(-45.0));
        assert_eq!(q.program_view(t0 + Duration::from_secs(6), &people), None);
        q.program_ended();
        assert_eq!(q.program_view(t0, &people), None);
    }
}
