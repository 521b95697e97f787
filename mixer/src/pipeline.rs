//! The shared core of a room's pipeline: live backgrounds, compositor and audio mixer, one
//! encode (x264 + AAC), FLV mux and the tee every output hangs off.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::colour::program_colour;
use crate::control::VideoSpec;
use crate::encoding::{h264_level, x264_threads, H264_PROFILE};
use crate::error::MixerError;
use crate::gst_util::{capsfilter, link_chain, link_to_pad, make, request_pad};
use crate::quality_probe::QualityProbes;

/// Extra time the aggregators wait for inputs plugged in later: covers the input jitterbuffer
/// (80 ms), decode and conversion. Without it late RTP inputs' frames arrive "too late" and the
/// compositor drops them, because the pipeline latency was computed when only the background
/// sources existed.
pub const INPUT_LATENCY: Duration = Duration::from_millis(250);

/// Owns the pipeline: dropping it sets it to NULL so no thread keeps pushing.
pub struct PipelineGuard(pub gst::Pipeline);

impl Drop for PipelineGuard {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

/// Fixes the pipeline's clock and base time before it starts, on the pipeline and every element.
///
/// Why: in GStreamer 1.22 a live aggregator (compositor, audiomixer, flvmux) can compute its
/// first deadline in the window where the pipeline has handed it the clock but not yet its base
/// time (0). The deadline is then ~uptime in the past, the aggregators run ahead of their
/// inputs and flvmux busy-loops without output — about 1 start in 6 produced no frames at all
/// here. With a fixed base time set up front (and `start_time` NONE so the pipeline keeps it)
/// there is no such window.
pub fn pin_base_time(pipeline: &gst::Pipeline) {
    let clock = gst::SystemClock::obtain();
    pipeline.use_clock(Some(&clock));
    let base = clock.time();
    pipeline.set_start_time(gst::ClockTime::NONE);
    pipeline.set_base_time(base);
    let mut it = pipeline.iterate_recurse();
    while let Ok(Some(el)) = it.next() {
        el.set_base_time(base);
    }
}

/// The core elements other modules attach to.
/// Limiter: linear gain up to this amplitude (about -4.4 dBFS)...
const LIMITER_THRESHOLD: f32 = 0.6;
/// ...and a tenth of the excess above it: four voices at full scale still peak at 0.94.
const LIMITER_RATIO: f32 = 0.1;

/// One AAC frame (1024 samples at 48 kHz) of encoder delay, in ns.
const AAC_PRIMING_NS: i64 = 1024 * 1_000_000_000 / 48_000;

pub struct Core {
    pub pipeline: PipelineGuard,
    pub compositor: gst::Element,
    pub audiomixer: gst::Element,
    pub encoder: gst::Element,
    pub tee: gst::Element,
    /// The parsed H.264 (avc) and AAC (raw) streams on their way to flvmux: outputs that mux
    /// for themselves (SRT's MPEG-TS) hang off these.
    pub video_tee: gst::Element,
    pub audio_tee: gst::Element,
    /// Encoded video frames so far (heartbeat).
    pub frames_out: Arc<AtomicU64>,
    /// Latency, join → visible, frozen/black program (heartbeat and `InputVisible`).
    pub quality: Arc<QualityProbes>,
}

/// The program's raw video, colorimetry included: the compositor converts every input into it
/// and x264enc signals it in the VUI (see `colour` for why it must never be left open).
fn video_caps(v: &VideoSpec) -> gst::Caps {
    gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field("width", v.width as i32)
        .field("height", v.height as i32)
        .field("framerate", gst::Fraction::new(v.fps as i32, 1))
        .field(
            "colorimetry",
            program_colour(v.height).colorimetry().to_string(),
        )
        // Chroma samples left of the luma pair (H.264's default siting), fixed for the same
        // reason: x264 writes the siting of its first caps.
        .field("chroma-site", "mpeg2")
        .build()
}

/// The mix runs in 32-bit float: a sum of loud voices can exceed full scale without wrapping or
/// clipping, and the limiter brings it back before the encoder.
fn mix_caps() -> gst::Caps {
    gst::Caps::builder("audio/x-raw")
        .field("format", "F32LE")
        .field("rate", 48_000i32)
        .field("channels", 2i32)
        .build()
}

fn audio_caps() -> gst::Caps {
    gst::Caps::builder("audio/x-raw")
        .field("rate", 48_000i32)
        .field("channels", 2i32)
        .build()
}

pub fn build_core(video: &VideoSpec) -> Result<Core, MixerError> {
    let pipeline = gst::Pipeline::with_name("mixer");

    // Video: a live black background keeps the compositor ticking with zero inputs.
    let bg = make("videotestsrc", "bg-video")?;
    bg.set_property("is-live", true);
    // A solid colour the room's look can change live (black until then).
    bg.set_property_from_str("pattern", "solid-color");
    bg.set_property("foreground-color", 0xFF00_0000u32);
    let bg_caps = capsfilter("bg-video-caps", video_caps(video))?;
    let compositor = make("compositor", "compositor")?;
    compositor.set_property_from_str("background", "black");
    compositor.set_property("ignore-inactive-pads", true);
    compositor.set_property("min-upstream-latency", INPUT_LATENCY.as_nanos() as u64);
    let vcaps = capsfilter("video-caps", video_caps(video))?;
    let vqueue = make("queue", "video-enc-queue")?;
    vqueue.set_property("max-size-buffers", 3u32);
    vqueue.set_property("max-size-bytes", 0u32);
    vqueue.set_property("max-size-time", 0u64);
    let encoder = make("x264enc", "x264")?;
    encoder.set_property_from_str("tune", "zerolatency");
    encoder.set_property_from_str("speed-preset", "veryfast");
    encoder.set_property_from_str("pass", "cbr");
    encoder.set_property("bitrate", video.bitrate_kbps);
    encoder.set_property("key-int-max", (2 * video.fps).max(1));
    // A fixed 2 s GOP: CDNs cut segments on keyframes, and a layout switch (a "scene cut" to
    // x264) must not add one.
    encoder.set_property("option-string", "scenecut=0");
    encoder.set_property("vbv-buf-capacity", 1000u32);
    encoder.set_property("threads", x264_threads(video));
    // Profile and level a CDN accepts; x264enc takes both from these downstream caps.
    let h264caps = capsfilter(
        "h264-caps",
        gst::Caps::builder("video/x-h264")
            .field("profile", H264_PROFILE)
            .field("level", h264_level(video))
            .build(),
    )?;
    let h264parse = make("h264parse", "h264parse")?;

    // Audio: live silence, so the mix (and FLV audio track) exists before anyone speaks.
    let bga = make("audiotestsrc", "bg-audio")?;
    bga.set_property("is-live", true);
    bga.set_property_from_str("wave", "silence");
    let bga_caps = capsfilter("bg-audio-caps", mix_caps())?;
    let audiomixer = make("audiomixer", "audiomixer")?;
    audiomixer.set_property("ignore-inactive-pads", true);
    audiomixer.set_property("min-upstream-latency", INPUT_LATENCY.as_nanos() as u64);
    let mix_out_caps = capsfilter("audio-mix-caps", mix_caps())?;
    // A limiter so one loud guest (or everyone at once) does not clip the program. Hard knee:
    // audiodynamic's soft knee is only defined up to full scale, and a float sum goes beyond it.
    let limiter = make("audiodynamic", "limiter")?;
    limiter.set_property_from_str("mode", "compressor");
    limiter.set_property_from_str("characteristics", "hard-knee");
    limiter.set_property("threshold", LIMITER_THRESHOLD);
    limiter.set_property("ratio", LIMITER_RATIO);
    let aconv = make("audioconvert", "audio-convert")?;
    let ares = make("audioresample", "audio-resample")?;
    let acaps = capsfilter("audio-caps", audio_caps())?;
    let aenc = make("avenc_aac", "aac")?;
    aenc.set_property("bitrate", 128_000i32);
    let aacparse = make("aacparse", "aacparse")?;

    let flvmux = make("flvmux", "flvmux")?;
    flvmux.set_property("streamable", true);
    let tee = make("tee", "tee")?;
    tee.set_property("allow-not-linked", true);
    let video_tee = make("tee", "video-tee")?;
    video_tee.set_property("allow-not-linked", true);
    let audio_tee = make("tee", "audio-tee")?;
    audio_tee.set_property("allow-not-linked", true);

    pipeline.add_many([
        &bg,
        &bg_caps,
        &compositor,
        &vcaps,
        &vqueue,
        &encoder,
        &h264caps,
        &h264parse,
        &bga,
        &bga_caps,
        &audiomixer,
        &mix_out_caps,
        &limiter,
        &aconv,
        &ares,
        &acaps,
        &aenc,
        &aacparse,
        &flvmux,
        &tee,
        &video_tee,
        &audio_tee,
    ])?;

    link_chain(&[&bg, &bg_caps])?;
    let bg_pad = request_pad(&compositor, "sink_%u")?;
    bg_pad.set_property("zorder", 0u32);
    link_to_pad(&bg_caps, &bg_pad)?;
    link_chain(&[
        &compositor,
        &vcaps,
        &vqueue,
        &encoder,
        &h264caps,
        &h264parse,
        &video_tee,
    ])?;
    link_pads(&video_tee, "src_%u", &flvmux, "video")?;

    link_chain(&[&bga, &bga_caps])?;
    link_to_pad(&bga_caps, &request_pad(&audiomixer, "sink_%u")?)?;
    link_chain(&[
        &audiomixer,
        &mix_out_caps,
        &limiter,
        &aconv,
        &ares,
        &acaps,
        &aenc,
        &aacparse,
        &audio_tee,
    ])?;
    link_pads(&audio_tee, "src_%u", &flvmux, "audio")?;
    // AAC starts with one frame of encoder priming that FLV cannot signal, so every player plays
    // it: the sound would trail the picture by 1024 samples. Hold the picture back as much
    // (stamping audio earlier instead gives its first buffers negative running times).
    if let Some(pad) = h264parse.static_pad("src") {
        pad.set_offset(AAC_PRIMING_NS);
    }
    link_chain(&[&flvmux, &tee])?;

    let frames_out = Arc::new(AtomicU64::new(0));
    let counter = frames_out.clone();
    encoder
        .static_pad("src")
        .ok_or_else(|| MixerError::Gst("x264enc without src pad".into()))?
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            counter.fetch_add(1, Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });

    crate::timecode_probe::attach_stages(&compositor, &encoder, &flvmux, AAC_PRIMING_NS as u64);
    let quality = QualityProbes::attach(&compositor, &flvmux, AAC_PRIMING_NS as u64)?;

    Ok(Core {
        pipeline: PipelineGuard(pipeline),
        compositor,
        audiomixer,
        encoder,
        tee,
        video_tee,
        audio_tee,
        frames_out,
        quality,
    })
}

impl Core {
    /// Where output branches attach.
    pub fn output_taps(&self) -> crate::outputs::Taps<'_> {
        crate::outputs::Taps {
            flv: &self.tee,
            video: &self.video_tee,
            audio: &self.audio_tee,
        }
    }
}

/// Links request pad `src_template` of `src` to request pad `sink_template` of `sink`.
fn link_pads(
    src: &gst::Element,
    src_template: &str,
    sink: &gst::Element,
    sink_template: &str,
) -> Result<(), MixerError> {
    let from = request_pad(src, src_template)?;
    let to = request_pad(sink, sink_template)?;
    from.link(&to).map_err(|e| MixerError::Link {
        from: format!("{}: {e:?}", src.name()),
        to: sink.name().to_string(),
    })?;
    Ok(())
}
