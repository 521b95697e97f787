//! The control protocol between `costream serve` and a `costream mixer` child process.
//!
//! One JSON object per line: serve writes [`Command`]s to the child's stdin, the child writes
//! [`Event`]s to its stdout. Logs go to stderr, never stdout, so the event stream stays parseable.
//! Media never crosses this channel: it arrives as RTP over UDP on the ports the mixer reports
//! in [`Event::InputReady`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

pub use crate::destination::DestinationPolicy;
pub use crate::layout::{CustomTile, LayoutSpec};
pub use crate::looks::Look;

/// Version of this protocol, said in [`Event::Hello`]. Bumped when a message changes meaning;
/// adding optional fields is compatible and does not bump it. Serve and workers refuse a peer of
/// another version with a log line saying which.
///
/// 3: `Start` carries the room's [`DestinationPolicy`], which the mixer enforces before every
/// output connection, and [`OutputSpec::internal`] exempts serve's own origin. Not optional in
/// meaning: a v2 mixer would ignore the policy and connect anywhere, and a v3 mixer would refuse
/// a v2 serve's loopback origin output.
///
/// 4: [`Event::InputVisible`] events and heartbeat [`ProgramQuality`]; a v3 serve cannot decode
/// `InputVisible`.
///
/// 5: [`Command::StartRecording`] / [`Command::StopRecording`] and [`Event::Recording`]; a v4
/// mixer cannot decode the commands.
pub const PROTOCOL_VERSION: u32 = 5;

/// Where a mixer binds its RTP sockets: the environment variable its parent sets, and the
/// default (serve and mixer on one machine).
pub const RTP_BIND_ENV: &str = "COSTREAM_MIXER_RTP_BIND";
pub const DEFAULT_RTP_BIND: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Set by a fleet worker: a running mixer that hears no command (a [`Command::Keepalive`] at
/// least) for this many milliseconds stops pushing and exits. A worker that is frozen
/// (`SIGSTOP`) or cut off cannot stop its mixers itself, and the room has moved to another worker
/// by then: the CDN must not keep an orphan publisher on the room's stream key.
pub const WATCHDOG_ENV: &str = "COSTREAM_MIXER_WATCHDOG_MS";

/// Output video settings of one room's mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoSpec {
    /// Canvas width in pixels (even).
    pub width: u32,
    /// Canvas height in pixels (even).
    pub height: u32,
    /// Frames per second of the output.
    pub fps: u32,
    /// x264 target bitrate in kbit/s (CBR).
    pub bitrate_kbps: u32,
}

impl Default for VideoSpec {
    fn default() -> Self {
        Self {
            width: 1280,
            height: 720,
            fps: 30,
            bitrate_kbps: 2500,
        }
    }
}

/// One RTMP destination. `url` holds the stream key, so it is a secret: Debug redacts it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputSpec {
    /// Stable id chosen by serve (e.g. "out0"); events refer to the output by it.
    pub output_id: String,
    /// `rtmp://` or `rtmps://` URL including application and stream key.
    pub url: String,
    /// Set up by serve itself on its own network (the built-in origin, on loopback by design):
    /// the room's [`DestinationPolicy`] does not apply. Never set for a URL a user gave.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
}

impl OutputSpec {
    /// A destination a user gave: the room's destination policy applies.
    pub fn new(output_id: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            output_id: output_id.into(),
            url: url.into(),
            internal: false,
        }
    }
}

impl std::fmt::Debug for OutputSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputSpec")
            .field("output_id", &self.output_id)
            .field("url", &crate::redact::redact_url(&self.url))
            .field("internal", &self.internal)
            .finish()
    }
}

/// Media kind of one RTP input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Audio,
    Video,
}

/// Codec of one RTP input, as negotiated with the publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    Vp8,
    H264,
    Opus,
}

impl Codec {
    pub fn kind(self) -> MediaKind {
        match self {
            Codec::Vp8 | Codec::H264 => MediaKind::Video,
            Codec::Opus => MediaKind::Audio,
        }
    }
}

/// serve → mixer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Build the pipeline and start pushing to every output. Sent once, first.
    Start {
        video: VideoSpec,
        outputs: Vec<OutputSpec>,
        /// Where outputs may connect: checked again before every connection attempt of every
        /// output, these and those added later, except [`OutputSpec::internal`] ones (a name
        /// may resolve elsewhere by then). Missing: the strictest policy.
        #[serde(default)]
        destinations: DestinationPolicy,
    },
    /// A new RTP stream to mix. The mixer binds a UDP port for it and answers `InputReady`.
    AddInput {
        /// Unique per input (one per track), chosen by serve.
        input_id: String,
        /// Inputs with the same participant share one tile (video) and are mixed (audio).
        participant_id: String,
        /// Display name of the participant (for later labels); may be empty.
        #[serde(default)]
        display_name: String,
        codec: Codec,
        /// RTP payload type negotiated with the publisher.
        payload_type: u8,
        /// RTP clock rate (90000 for video, 48000 for Opus).
        clock_rate: u32,
    },
    /// Stop mixing an input; its tile disappears and the layout closes up.
    RemoveInput { input_id: String },
    /// Switch the layout while live: applied between two output frames, no reconnect, no
    /// keyframe. Sent after `Start` (also to a replacement mixer) and whenever the host changes it.
    SetLayout { layout: LayoutSpec },
    /// The room's look (background, name labels, logo, idle slate title), applied live. Sent
    /// after `Start` (also to a replacement mixer) and whenever the host changes it.
    SetLook { look: Look },
    /// A participant's level in the mix (the host's controls): kept for inputs added later.
    SetAudio {
        participant_id: String,
        #[serde(flatten)]
        audio: AudioMix,
    },
    /// Push to one more RTMP destination while live: a new branch on the running tee, with a
    /// forced keyframe so the new server can decode at once. The other outputs are untouched.
    /// The destination policy of `Start` applies to it.
    AddOutput { output: OutputSpec },
    /// Stop pushing to one destination (its server sees the publisher leave); the others and
    /// the encode keep running.
    RemoveOutput { output_id: String },
    /// Record the program to `file`, a relative `.mp4` name under the mixer's recordings
    /// directory (see `recording::RECORDINGS_DIR_ENV`); answered with `Event::Recording`.
    StartRecording { recording_id: String, file: String },
    /// Close the recording (its last fragment is written) and answer `Event::Recording`
    /// `stopped`. The broadcast goes on.
    StopRecording { recording_id: String },
    /// Send EOS, stop every output and recording (their files are closed), exit 0.
    Shutdown,
    /// Nothing to do: the parent is alive (see [`WATCHDOG_ENV`]).
    Keepalive,
}

/// How loud one participant is in the program.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AudioMix {
    /// Linear gain, 0.0 ..= MAX_GAIN (1.0 = as sent).
    pub gain: f64,
    pub muted: bool,
}

impl AudioMix {
    /// +12 dB: enough to lift a quiet microphone, not enough to turn a mistake into noise.
    pub const MAX_GAIN: f64 = 4.0;

    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=Self::MAX_GAIN).contains(&self.gain) {
            return Err(format!(
                "gain must be between 0 and {} (got {})",
                Self::MAX_GAIN,
                self.gain
            ));
        }
        Ok(())
    }
}

impl Default for AudioMix {
    fn default() -> Self {
        Self {
            gain: 1.0,
            muted: false,
        }
    }
}

/// State of one RTMP output, as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputState {
    Idle,
    Connecting,
    Live,
    Reconnecting,
    Failed,
}

/// State of one recording in a mixer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordingState {
    /// Writing.
    Recording,
    /// Closed cleanly (a stop): the file is complete.
    Stopped,
    /// Could not start, or a write failed (`reason` says why): the file holds what was
    /// written before.
    Failed,
}

/// mixer → serve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// First line of every mixer, before any `Start`: GStreamer is initialized and the plugins a
    /// room needs are loaded, so this process is warm and a `Start` costs only the pipeline.
    /// serve keeps such processes in its warm pool.
    Hello {
        version: String,
        binary: String,
        /// [`PROTOCOL_VERSION`] of the mixer (0: a build older than the field).
        #[serde(default)]
        protocol: u32,
    },
    /// The pipeline is PLAYING (answer to `Start`). `version` and `binary` say which mixer build
    /// runs this room (rolling upgrades run several side by side).
    Ready {
        #[serde(default)]
        version: String,
        #[serde(default)]
        binary: String,
    },
    /// The mixer listens for this input's RTP on `rtp_addr` (UDP; its port is `rtp_port`).
    /// Mixers older than `rtp_addr` listened on loopback only.
    InputReady {
        input_id: String,
        rtp_port: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rtp_addr: Option<SocketAddr>,
    },
    /// The input's element chain is gone (answer to `RemoveInput`).
    InputRemoved { input_id: String },
    /// A decoder needs a keyframe from this input (new input, loss, decode error). Throttled by
    /// the mixer; serve turns it into an RTCP PLI to the publisher.
    KeyframeRequest { input_id: String },
    /// An output changed state. `bytes_sent` counts bytes written to the RTMP connection (the
    /// larger of rtmp2sink's written and acknowledged counters: nginx-rtmp acknowledges only
    /// once per 5 MB window, far too coarse for progress).
    Output {
        output_id: String,
        state: OutputState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        bytes_sent: u64,
    },
    /// The output's branch is gone (answer to `RemoveOutput`).
    OutputRemoved { output_id: String },
    /// Periodic liveness and progress (about once a second).
    Heartbeat {
        /// Video frames the encoder has produced since start.
        frames_out: u64,
        /// Per output: bytes written so far (see `Event::Output`).
        outputs: Vec<OutputBytes>,
        /// The program's quality since the previous heartbeat (mixers older than protocol 4
        /// and a mixer not yet started say nothing).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        quality: Option<ProgramQuality>,
    },
    /// The input's first frame is in the program leaving the muxer: the guest can be seen by
    /// viewers from now on (join → visible). Once per input, and only once the layout shows it
    /// (an input the layout hides never reports until it is shown).
    InputVisible { input_id: String },
    /// The participant the speaker/pip layouts feature by voice changed (`None`: nobody yet).
    ActiveSpeaker {
        #[serde(default)]
        participant_id: Option<String>,
    },
    /// A recording started, stopped or failed. The broadcast is never affected.
    Recording {
        recording_id: String,
        state: RecordingState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        bytes_written: u64,
    },
    /// The mixer cannot go on (e.g. a missing GStreamer element); it exits after this.
    Fatal { reason: String },
}

/// The program as measured inside the mixer, reported with each heartbeat. Integers only (see
/// [`encode_line`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProgramQuality {
    /// Median mixer-added latency of the video frames muxed since the previous heartbeat:
    /// input frame arrival at the mixer (its jitterbuffer's timestamp) → program frame leaving
    /// the FLV muxer, in ms. Up to one input frame interval of the compositor's alignment is not
    /// counted. 0 without samples.
    pub latency_ms: u32,
    /// The largest of those samples, ms.
    pub latency_max_ms: u32,
    /// How many video frames were measured (0: nothing left the muxer, the mix is stalled).
    pub latency_samples: u32,
    /// How long the program picture has been unchanged, ms (a still slate is normal).
    pub still_ms: u64,
    /// The program has been unchanged for 3 s while a camera it shows kept changing.
    pub frozen: bool,
    /// The program has been black for 3 s while a camera it shows is bright.
    pub black: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputBytes {
    pub output_id: String,
    pub bytes_sent: u64,
}

/// Encodes one message as a JSON line (with the trailing newline).
pub fn encode_line<T: Serialize>(msg: &T) -> String {
    // Serializing these plain enums cannot fail: no maps with non-string keys, no floats.
    let mut line = serde_json::to_string(msg).expect("control message serializes");
    line.push('\n');
    line
}

/// Decodes one JSON line.
pub fn decode_line<T: for<'de> Deserialize<'de>>(line: &str) -> Result<T, serde_json::Error> {
    serde_json::from_str(line.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_as_tagged_json() {
        let cmd = Command::AddInput {
            input_id: "p1-video".into(),
            participant_id: "p1".into(),
            display_name: "Ann".into(),
            codec: Codec::Vp8,
            payload_type: 96,
            clock_rate: 90_000,
        };
        let line = encode_line(&cmd);
        assert!(line.ends_with('\n'));
        assert!(line.contains(r#""type":"add_input""#), "{line}");
        assert!(line.contains(r#""codec":"vp8""#), "{line}");
        assert_eq!(decode_line::<Command>(&line).unwrap(), cmd);
    }

    #[test]
    fn events_round_trip_and_omit_empty_reason() {
        let ev = Event::Output {
            output_id: "out0".into(),
            state: OutputState::Live,
            reason: None,
            bytes_sent: 42,
        };
        let line = encode_line(&ev);
        assert!(!line.contains("reason"), "{line}");
        assert_eq!(decode_line::<Event>(&line).unwrap(), ev);
    }

    #[test]
    fn heartbeat_quality_round_trips_and_is_optional() {
        let ev = Event::Heartbeat {
            frames_out: 90,
            outputs: vec![OutputBytes {
                output_id: "out0".into(),
                bytes_sent: 7,
            }],
            quality: Some(ProgramQuality {
                latency_ms: 310,
                latency_max_ms: 420,
                latency_samples: 30,
                still_ms: 3_200,
                frozen: true,
                black: false,
            }),
        };
        let line = encode_line(&ev);
        assert!(
            line.contains(
                r#""quality":{"latency_ms":310,"latency_max_ms":420,"latency_samples":30,"still_ms":3200,"frozen":true,"black":false}"#
            ),
            "{line}"
        );
        assert_eq!(decode_line::<Event>(&line).unwrap(), ev);
        // A v3 mixer's heartbeat, and a heartbeat without quality, look the same.
        let old = r#"{"type":"heartbeat","frames_out":1,"outputs":[]}"#;
        let bare = Event::Heartbeat {
            frames_out: 1,
            outputs: vec![],
            quality: None,
        };
        assert_eq!(decode_line::<Event>(old).unwrap(), bare);
        assert_eq!(encode_line(&bare).trim_end(), old);
    }

    #[test]
    fn input_visible_round_trips() {
        let ev = Event::InputVisible {
            input_id: "p1-video".into(),
        };
        let line = encode_line(&ev);
        assert_eq!(
            line,
            "{\"type\":\"input_visible\",\"input_id\":\"p1-video\"}\n"
        );
        assert_eq!(decode_line::<Event>(&line).unwrap(), ev);
    }

    #[test]
    fn output_spec_debug_hides_the_stream_key() {
        let spec = OutputSpec::new("out0", "rtmp://cdn.example/live/sk_secret123");
        let shown = format!("{spec:?}");
        assert!(!shown.contains("sk_secret123"), "{shown}");
    }

    #[test]
    fn set_layout_carries_the_tagged_spec() {
        let line = encode_line(&Command::SetLayout {
            layout: LayoutSpec::Pip {
                pin: Some("p1".into()),
            },
        });
        assert!(
            line.contains(r#""layout":{"type":"pip","pin":"p1"}"#),
            "{line}"
        );
        let back: Command = decode_line(&line).unwrap();
        assert!(matches!(back, Command::SetLayout { .. }));
    }

    #[test]
    fn add_output_line_never_shows_the_key_in_debug_but_round_trips() {
        let cmd = Command::AddOutput {
            output: OutputSpec::new("out1", "rtmp://cdn.example/live/sk_secret"),
        };
        assert!(!format!("{cmd:?}").contains("sk_secret"));
        let line = encode_line(&cmd);
        assert!(line.contains(r#""type":"add_output""#), "{line}");
        assert_eq!(decode_line::<Command>(&line).unwrap(), cmd);
        let rm = encode_line(&Command::RemoveOutput {
            output_id: "out1".into(),
        });
        assert_eq!(rm, "{\"type\":\"remove_output\",\"output_id\":\"out1\"}\n");
    }

    #[test]
    fn start_carries_the_destination_policy_and_internal_outputs() {
        let cmd = Command::Start {
            video: VideoSpec::default(),
            outputs: vec![
                OutputSpec::new("out0", "rtmp://cdn.example/live/k"),
                OutputSpec {
                    internal: true,
                    ..OutputSpec::new("origin", "rtmp://127.0.0.1:1935/live/r?key=k")
                },
            ],
            destinations: DestinationPolicy {
                allow_private: false,
                allow_hosts: vec!["*.cdn.example".into()],
            },
        };
        let line = encode_line(&cmd);
        assert!(
            line.contains(
                r#""destinations":{"allow_private":false,"allow_hosts":["*.cdn.example"]}"#
            ),
            "{line}"
        );
        // Only the origin says `internal`; a user's output looks as it did in version 2.
        assert_eq!(line.matches(r#""internal":true"#).count(), 1, "{line}");
        assert!(line.contains(r#"{"output_id":"out0","url":"rtmp://cdn.example/live/k"}"#));
        assert_eq!(decode_line::<Command>(&line).unwrap(), cmd);
        // A Start that says nothing about destinations gets the strictest policy.
        let bare = r#"{"type":"start","video":{"width":640,"height":360,"fps":30,"bitrate_kbps":800},"outputs":[{"output_id":"out0","url":"rtmp://x/a/k"}]}"#;
        let Command::Start {
            outputs,
            destinations,
            ..
        } = decode_line::<Command>(bare).unwrap()
        else {
            panic!("a start");
        };
        assert_eq!(destinations, DestinationPolicy::default());
        assert!(!outputs[0].internal);
    }

    #[test]
    fn ready_without_identity_still_decodes() {
        let ev: Event = decode_line(r#"{"type":"ready"}"#).unwrap();
        assert_eq!(
            ev,
            Event::Ready {
                version: String::new(),
                binary: String::new()
            }
        );
    }

    #[test]
    fn unknown_command_is_an_error_not_a_panic() {
        assert!(decode_line::<Command>(r#"{"type":"explode"}"#).is_err());
        assert!(decode_line::<Command>("not json").is_err());
    }
}
