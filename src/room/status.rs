//! The room as `GET /api/v1/rooms/{id}` shows it: a pure projection of [`RoomState`].
//! Output URLs are always redacted here; nothing in this view is secret.

use std::time::Instant;

use costream_mixer::control::{AudioMix, Codec, LayoutSpec, MediaKind, OutputState, VideoSpec};
use costream_mixer::redact::redact_url;
use serde::Serialize;

use super::quality::{ParticipantQualityView, ProgramQualityView};
use super::state::{track_kind, Broadcast, MixerPhase, OutputStatus, RoomState};
use super::tokens::Role;

#[derive(Debug, Clone, Serialize)]
pub struct RoomStatus {
    pub room_id: String,
    pub name: String,
    /// `offline`, `live` or `failed`.
    pub broadcast: &'static str,
    /// Seconds since the room went live (absent when not live).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_seconds: Option<f64>,
    pub video: VideoSpec,
    pub participants: Vec<ParticipantStatus>,
    /// The layout of the mix (`PUT /api/v1/rooms/{id}/layout`).
    pub layout: LayoutSpec,
    /// The room's look (`PUT /api/v1/rooms/{id}/look`); the logo is shown as `has_logo`.
    pub look: LookStatus,
    /// Who the mixer hears speaking, while live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_speaker: Option<String>,
    pub mixer: MixerStatus,
    pub outputs: Vec<OutputStatusView>,
    /// Cores the mixer pool reserved for this room while it is live (admission by cost).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    /// The program's quality figures while live (README "Quality figures").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<ProgramQualityView>,
    /// The recording in progress (`POST /api/v1/rooms/{id}/recordings`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording: Option<super::RecordingStatus>,
}

/// A room's look without the logo's bytes (up to 256 KiB: not for every status poll).
#[derive(Debug, Clone, Serialize)]
pub struct LookStatus {
    pub labels: bool,
    pub background: String,
    pub title: String,
    pub has_logo: bool,
}

impl LookStatus {
    pub fn of(look: &costream_mixer::control::Look) -> Self {
        Self {
            labels: look.labels,
            background: look.background.clone(),
            title: look.title.clone(),
            has_logo: look.logo.is_some(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ParticipantStatus {
    pub participant_id: String,
    pub role: Role,
    /// Who this is: the access token's `sub` (a personal invite's identity), or generated
    /// (`guest-…`) for someone who came through the shared guest link.
    pub identity: String,
    pub display_name: String,
    pub tracks: Vec<TrackStatus>,
    /// Gain and mute in the program (`PUT .../participants/{id}/audio`).
    pub audio: AudioMix,
    /// Active WHEP subscriptions to this participant's media.
    pub subscribers: usize,
    /// Reception (loss, jitter), A/V offset and join → visible of this publisher.
    pub quality: ParticipantQualityView,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrackStatus {
    pub track_id: String,
    pub kind: MediaKind,
    pub codec: Codec,
    /// True once the mixer receives this track.
    pub in_mix: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct MixerStatus {
    /// `none`, `starting`, `running`, `moving` (a planned move to another worker: the old
    /// mixer is on air until its successor takes the outputs over), `restarting` (the last one
    /// crashed or hung) or `failed`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub frames_out: u64,
    /// Mixers replaced after a crash or hang during this broadcast.
    pub restarts: u32,
    /// OS process id of the room's mixer, while one runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Executable of the room's mixer (rolling upgrades run several side by side).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
    /// Version the mixer reported when it became ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Whether the mixer came warm from the pool (false: started cold for this room).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warm: Option<bool>,
    /// The fleet worker running the mixer (absent when it runs on this server's machine).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutputStatusView {
    pub output_id: String,
    /// The URL with its stream key replaced by `***`.
    pub url: String,
    pub state: OutputState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub bytes_sent: u64,
    /// Recent send rate, kbit/s (see `room::meter`).
    pub bitrate_kbps: u64,
    /// How long the output has been `live` without interruption (absent unless live).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_seconds: Option<f64>,
    /// Times the output dropped into `reconnecting` during this broadcast.
    pub reconnects: u32,
}

impl OutputStatusView {
    pub fn of(o: &OutputStatus) -> Self {
        Self {
            output_id: o.spec.output_id.clone(),
            url: redact_url(&o.spec.url),
            state: o.state,
            reason: o.reason.clone(),
            bytes_sent: o.bytes_sent,
            // Filled by the room actor from its `OutputMeters`.
            bitrate_kbps: 0,
            live_seconds: None,
            reconnects: 0,
        }
    }
}

impl RoomStatus {
    pub fn of(room_id: &str, room: &RoomState, now: Instant) -> Self {
        let (broadcast, mixer) = match room.broadcast() {
            Broadcast::Offline => ("offline", mixer_status("none", None, 0)),
            Broadcast::Live {
                mixer,
                frames_out,
                restarts,
                ..
            } => {
                let phase = match mixer {
                    // The old mixer is on air while its successor takes over.
                    _ if room.is_moving() => "moving",
                    MixerPhase::Starting => "starting",
                    MixerPhase::Running => "running",
                    MixerPhase::Restarting => "restarting",
                };
                let mut status = mixer_status(phase, None, *frames_out);
                status.restarts = *restarts;
                ("live", status)
            }
            Broadcast::Failed { reason } => {
                ("failed", mixer_status("failed", Some(reason.clone()), 0))
            }
        };
        Self {
            room_id: room_id.to_string(),
            name: room.settings().name.clone(),
            broadcast,
            live_seconds: room.live_for(now).map(|d| d.as_secs_f64()),
            video: room.settings().video,
            participants: room
                .participants()
                .into_iter()
                .map(|(id, p)| ParticipantStatus {
                    participant_id: id.clone(),
                    role: p.role,
                    identity: p.identity.clone(),
                    display_name: p.display_name.clone(),
                    tracks: p
                        .tracks
                        .iter()
                        .map(|t| TrackStatus {
                            track_id: t.desc.track_id.clone(),
                            kind: track_kind(t),
                            codec: t.desc.codec,
                            in_mix: t.mixer_addr.is_some(),
                        })
                        .collect(),
                    audio: p.audio,
                    subscribers: room.subscriber_count(id),
                    quality: ParticipantQualityView::default(),
                })
                .collect(),
            layout: room.settings().layout.clone(),
            look: LookStatus::of(&room.settings().look),
            active_speaker: room.active_speaker().map(str::to_string),
            mixer,
            outputs: room.outputs().iter().map(OutputStatusView::of).collect(),
            cost: None,
            quality: None,
            recording: None,
        }
    }
}

fn mixer_status(state: &'static str, reason: Option<String>, frames_out: u64) -> MixerStatus {
    MixerStatus {
        state,
        reason,
        frames_out,
        restarts: 0,
        pid: None,
        binary: None,
        version: None,
        warm: None,
        worker: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::state::RoomSettings;
    use costream_mixer::control::OutputSpec;

    #[test]
    fn status_redacts_stream_keys_and_reports_offline() {
        let room = RoomState::new(RoomSettings {
            name: "show".into(),
            video: VideoSpec::default(),
            outputs: vec![OutputSpec::new("out0", "rtmp://cdn.example/live/SECRETKEY")],
            destinations: Default::default(),
            max_participants: 4,
            max_outputs: 8,
            max_subscriptions: 64,
            layout: Default::default(),
            look: Default::default(),
            record: false,
        });
        let status = RoomStatus::of("r1", &room, Instant::now());
        let json = serde_json::to_string(&status).unwrap();
        assert!(!json.contains("SECRETKEY"), "{json}");
        assert!(json.contains(r#""broadcast":"offline""#), "{json}");
        assert!(json.contains(r#""state":"idle""#), "{json}");
    }

    #[test]
    fn live_status_reports_live_seconds() {
        let t0 = Instant::now();
        let mut room = RoomState::new(RoomSettings {
            name: String::new(),
            video: VideoSpec::default(),
            outputs: vec![OutputSpec::new("out0", "rtmp://h/live/k")],
            destinations: Default::default(),
            max_participants: 4,
            max_outputs: 8,
            max_subscriptions: 64,
            layout: Default::default(),
            look: Default::default(),
            record: false,
        });
        crate::room::state::tests::go_live(&mut room, t0);
        let status = RoomStatus::of("r1", &room, t0 + std::time::Duration::from_secs(3));
        assert_eq!(status.broadcast, "live");
        assert_eq!(status.live_seconds, Some(3.0));
        assert_eq!(status.mixer.state, "starting");
        assert_eq!(status.outputs[0].state, OutputState::Connecting);
    }
}
