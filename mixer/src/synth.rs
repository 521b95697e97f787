//! A synthetic encoded video source (a solid colour or a moving test pattern, optionally with
//! the capture time burnt in, see [`crate::timecode`]) for `costream publish`, the test
//! publisher: raw VP8 frames or H.264 byte-stream access units, ready to packetize.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::control::Codec;
use crate::error::MixerError;
use crate::gst_util::{capsfilter, force_key_unit_event, link_chain, make, set_state_bounded};
use crate::pipeline::PipelineGuard;

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynthVideoSpec {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// Solid colour as 0xRRGGBB.
    pub rgb: u32,
    /// `Vp8` or `H264` (`Opus` is rejected).
    pub codec: Codec,
    /// What the picture shows.
    pub pattern: Pattern,
    /// Pixels per frame the pattern scrolls left (motion, so encoders have real work).
    pub scroll: i32,
    /// Burn the wall-clock capture time into the top of every frame ([`crate::timecode`]).
    pub timecode: bool,
}

/// The picture of a synthetic source (`videotestsrc` patterns). Solid colour is nearly free to
/// encode; benchmarks use a pattern with motion so the numbers mean something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pattern {
    /// The spec's `rgb` colour.
    #[default]
    Solid,
    /// SMPTE colour bars.
    Smpte,
    /// A moving ball.
    Ball,
    /// Random noise (worst case for an encoder).
    Snow,
}

impl FromStr for Pattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Pattern, String> {
        match s.to_ascii_lowercase().as_str() {
            "solid" => Ok(Pattern::Solid),
            "smpte" => Ok(Pattern::Smpte),
            "ball" => Ok(Pattern::Ball),
            "snow" => Ok(Pattern::Snow),
            other => Err(format!("pattern {other:?}: use solid, smpte, ball or snow")),
        }
    }
}

impl Pattern {
    fn videotestsrc_name(self) -> &'static str {
        match self {
            Pattern::Solid => "solid-color",
            Pattern::Smpte => "smpte",
            Pattern::Ball => "ball",
            Pattern::Snow => "snow",
        }
    }
}

/// One encoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// VP8: one raw VP8 frame (no container). H.264: one Annex-B access unit, SPS/PPS included
    /// before every keyframe.
    pub data: Vec<u8>,
    /// Frame duration (1/fps).
    pub duration: Duration,
    pub keyframe: bool,
}

/// A running live encoder; dropping it stops the pipeline.
pub struct SynthVideo {
    // Field order matters for Drop: the sink handle goes before the pipeline stops.
    sink: gst_app::AppSink,
    encoder: gst::Element,
    pipeline: PipelineGuard,
    frame_duration: Duration,
}

impl SynthVideo {
    pub fn start(spec: SynthVideoSpec) -> Result<SynthVideo, MixerError> {
        gst::init().map_err(|e| MixerError::Init(e.to_string()))?;
        if spec.fps == 0 || spec.width < 2 || spec.height < 2 {
            return Err(MixerError::Invalid(format!("bad synth spec {spec:?}")));
        }
        let pipeline = gst::Pipeline::with_name("synth");
        let src = make("videotestsrc", "synth-src")?;
        src.set_property("is-live", true);
        src.set_property_from_str("pattern", spec.pattern.videotestsrc_name());
        src.set_property("foreground-color", 0xFF00_0000 | (spec.rgb & 0x00FF_FFFF));
        src.set_property("horizontal-speed", spec.scroll);
        // BT.601 at every size, as a browser's camera sends: VP8 cannot say otherwise, and
        // videotestsrc would paint an HD size in BT.709 (x264 signals it, vp8enc cannot).
        let raw = capsfilter(
            "synth-raw-caps",
            gst::Caps::builder("video/x-raw")
                .field("format", "I420")
                .field("width", spec.width as i32)
                .field("height", spec.height as i32)
                .field("framerate", gst::Fraction::new(spec.fps as i32, 1))
                .field("colorimetry", "bt601")
                .build(),
        )?;
        if spec.timecode {
            burn_timecode(&raw, spec.width as usize, spec.height as usize)?;
        }
        let mut chain = vec![src, raw];
        let encoder = match spec.codec {
            Codec::Vp8 => {
                let enc = make("vp8enc", "synth-vp8")?;
                enc.set_property("deadline", 1i64);
                enc.set_property("cpu-used", 8i32);
                enc.set_property("keyframe-max-dist", 60i32);
                enc.set_property_from_str("error-resilient", "default");
                chain.push(enc.clone());
                enc
            }
            Codec::H264 => {
                let enc = make("x264enc", "synth-x264")?;
                enc.set_property_from_str("tune", "zerolatency");
                enc.set_property_from_str("speed-preset", "ultrafast");
                enc.set_property("key-int-max", 60u32);
                // Parameter sets before every IDR, so a receiver can start at any keyframe.
                let parse = make("h264parse", "synth-h264parse")?;
                parse.set_property("config-interval", -1i32);
                let caps = capsfilter(
                    "synth-h264-caps",
                    gst::Caps::builder("video/x-h264")
                        .field("profile", "constrained-baseline")
                        .field("stream-format", "byte-stream")
                        .field("alignment", "au")
                        .build(),
                )?;
                chain.extend([enc.clone(), parse, caps]);
                enc
            }
            Codec::Opus => {
                return Err(MixerError::Invalid("SynthVideo needs a video codec".into()));
            }
        };
        let sink = gst_app::AppSink::builder()
            .name("synth-sink")
            .sync(false)
            .max_buffers(4)
            .drop(true)
            .build();
        chain.push(sink.clone().upcast());
        pipeline.add_many(&chain)?;
        link_chain(&chain.iter().collect::<Vec<_>>())?;
        let pipeline = PipelineGuard(pipeline);
        set_state_bounded(
            pipeline.0.upcast_ref(),
            gst::State::Playing,
            Duration::from_secs(5),
        )?;
        Ok(SynthVideo {
            sink,
            encoder,
            pipeline,
            frame_duration: Duration::from_nanos(1_000_000_000 / u64::from(spec.fps)),
        })
    }

    /// The next encoded frame, or None after `timeout` (or if the pipeline stopped).
    pub fn next_frame(&self, timeout: Duration) -> Option<EncodedFrame> {
        let sample = self
            .sink
            .try_pull_sample(gst::ClockTime::from_nseconds(timeout.as_nanos() as u64))?;
        let buffer = sample.buffer()?;
        let map = buffer.map_readable().ok()?;
        Some(EncodedFrame {
            data: map.as_slice().to_vec(),
            duration: buffer
                .duration()
                .map(|d| Duration::from_nanos(d.nseconds()))
                .unwrap_or(self.frame_duration),
            keyframe: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
        })
    }

    /// Asks the encoder for a keyframe as soon as possible (answer to a PLI).
    pub fn force_keyframe(&self) {
        self.encoder.send_event(force_key_unit_event());
    }

    /// Whether the pipeline is still running (it never stops by itself).
    pub fn is_running(&self) -> bool {
        self.pipeline.0.current_state() == gst::State::Playing
    }
}

/// Writes the capture time into every raw frame leaving `raw`, just before the encoder.
fn burn_timecode(raw: &gst::Element, width: usize, height: usize) -> Result<(), MixerError> {
    // Plain I420 as videotestsrc lays it out (GStreamer's default strides: rows rounded up to
    // 4 bytes); other sizes would need the VideoMeta, which the bench never asks for.
    if width % 8 != 0 || height % 2 != 0 {
        return Err(MixerError::Invalid(format!(
            "timecode needs a width divisible by 8 and an even height, got {width}x{height}"
        )));
    }
    let (ys, cs) = (width, width / 2);
    let pad = raw
        .static_pad("src")
        .ok_or_else(|| MixerError::Gst("capsfilter without src pad".into()))?;
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(gst::PadProbeData::Buffer(buffer)) = info.data.as_mut() {
            let ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            if let Ok(mut map) = buffer.make_mut().map_writable() {
                let data = map.as_mut_slice();
                if data.len() >= ys * height + 2 * cs * height / 2 {
                    let (y, rest) = data.split_at_mut(ys * height);
                    let (u, v) = rest.split_at_mut(cs * height / 2);
                    crate::timecode::burn_i420([y, u, v], [ys, cs, cs], width, height, ms);
                }
            }
        }
        gst::PadProbeReturn::Ok
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn frames_of(codec: Codec) {
        let synth = SynthVideo::start(SynthVideoSpec {
            width: 320,
            height: 180,
            fps: 30,
            rgb: 0xFF0000,
            codec,
            pattern: Pattern::Solid,
            scroll: 0,
            timecode: false,
        })
        .unwrap();
        let first = synth.next_frame(Duration::from_secs(5)).expect("a frame");
        assert!(first.keyframe, "the first frame must be a keyframe");
        assert!(!first.data.is_empty());
        let t0 = Instant::now();
        let mut n = 0;
        let mut deltas = 0;
        while t0.elapsed() < Duration::from_secs(1) {
            if let Some(f) = synth.next_frame(Duration::from_millis(200)) {
                n += 1;
                deltas += usize::from(!f.keyframe);
                // Encoders round timestamps to the ns, so allow a hair either way.
                let d = f.duration.as_secs_f64();
                assert!((d - 1.0 / 30.0).abs() < 0.001, "duration {d}");
            }
        }
        assert!((24..=36).contains(&n), "{codec:?}: {n} frames in 1 s");
        assert!(deltas > n / 2, "mostly delta frames");
        synth.force_keyframe();
        let got_key = (0..30).any(|_| {
            synth
                .next_frame(Duration::from_secs(1))
                .is_some_and(|f| f.keyframe)
        });
        assert!(got_key, "{codec:?}: forced keyframe never came");
    }

    #[test]
    fn vp8_keyframe_first_then_frames_at_fps() {
        frames_of(Codec::Vp8);
    }

    #[test]
    fn h264_keyframe_first_then_frames_at_fps() {
        frames_of(Codec::H264);
    }
}
