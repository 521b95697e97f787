//! Benchmark instrumentation, off unless [`ENV`] names a directory: every decoded video input
//! frame's burnt-in timecode ([`crate::timecode`]) is read right after the decoder and appended
//! to `<dir>/mixer-<pid>.tc` as `<wall ms> <timecode> <display name>`. `benches/e2e.py` matches
//! these lines with the same timecodes decoded from the RTMP output, which separates the
//! mixer's own latency (compositor wait, encode, mux, RTMP) from the publisher -> serve leg.
//!
//! [`attach_stages`] splits the mixer's share further: the program frame leaving the compositor
//! (`program`, its timecode read from the top-left corner where the benchmark pins the host
//! full-frame), the same frame leaving x264 (`encoded`) and leaving flvmux as a video tag
//! (`muxed`). Encoded buffers carry no timecode, so they are matched to the program frame by PTS.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use crate::gst_util::lock;
use crate::timecode;

/// Directory for the per-process timecode log; unset (the default) disables the probe.
pub const ENV: &str = "COSTREAM_TIMECODE_LOG";

fn log_file() -> Option<&'static Mutex<File>> {
    static FILE: OnceLock<Option<Mutex<File>>> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = std::env::var_os(ENV)?;
        let path = std::path::Path::new(&dir).join(format!("mixer-{}.tc", std::process::id()));
        match File::options().create(true).append(true).open(&path) {
            Ok(f) => Some(Mutex::new(f)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "timecode log not opened");
                None
            }
        }
    })
    .as_ref()
}

/// Adds the probe to a video decoder's src pad when [`ENV`] is set; otherwise does nothing.
pub fn attach(decoder: &gst::Element, display_name: &str) {
    if log_file().is_none() {
        return;
    }
    let Some(pad) = decoder.static_pad("src") else {
        return;
    };
    // One word per participant in the log (names may hold spaces).
    let name = display_name.replace(char::is_whitespace, "_");
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        if let Some(value) = info.buffer().and_then(|b| read_buffer(pad, b)) {
            write_line(value, &name);
        }
        gst::PadProbeReturn::Ok
    });
}

/// Program frames' timecodes by PTS (ns), kept until the frame leaves the muxer (bounded).
type ByPts = Arc<Mutex<BTreeMap<u64, u32>>>;
const MAX_FRAMES_IN_FLIGHT: usize = 300;
/// FLV timestamps are whole milliseconds.
const FLV_ROUNDING_NS: u64 = 1_000_000;

/// Adds the stage probes (compositor out, encoder out, muxer out) when [`ENV`] is set.
/// `video_offset_ns` is the pad offset the video gets before the muxer (AAC priming).
pub fn attach_stages(
    compositor: &gst::Element,
    encoder: &gst::Element,
    flvmux: &gst::Element,
    video_offset_ns: u64,
) {
    if log_file().is_none() {
        return;
    }
    let (Some(program), Some(encoder_in), Some(encoded), Some(muxed)) = (
        compositor.static_pad("src"),
        encoder.static_pad("sink"),
        encoder.static_pad("src"),
        flvmux.static_pad("src"),
    ) else {
        return;
    };
    let by_pts: ByPts = Arc::default();
    let map = by_pts.clone();
    program.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(buffer) = info.buffer() else {
            return gst::PadProbeReturn::Ok;
        };
        if let (Some(value), Some(pts)) = (read_buffer(pad, buffer), buffer.pts()) {
            write_line(value, "program");
            let mut m = lock(&map);
            m.insert(pts.nseconds(), value);
            while m.len() > MAX_FRAMES_IN_FLIGHT {
                m.pop_first();
            }
        }
        gst::PadProbeReturn::Ok
    });
    // x264enc shifts every PTS by a constant: learn it from the first frame in and out.
    let first_in = Arc::new(OnceLock::<u64>::new());
    let first = first_in.clone();
    encoder_in.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(pts) = info.buffer().and_then(|b| b.pts()) {
            let _ = first.set(pts.nseconds());
        }
        gst::PadProbeReturn::Ok
    });
    let shift = OnceLock::<i128>::new();
    let map = by_pts.clone();
    encoded.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(pts) = info.buffer().and_then(|b| b.pts()) else {
            return gst::PadProbeReturn::Ok;
        };
        let Some(&first) = first_in.get() else {
            return gst::PadProbeReturn::Ok;
        };
        let shift = *shift.get_or_init(|| i128::from(pts.nseconds()) - i128::from(first));
        let key = u64::try_from(i128::from(pts.nseconds()) - shift).ok();
        if let Some(value) = key.and_then(|k| lock(&map).get(&k).copied()) {
            write_line(value, "encoded");
        }
        gst::PadProbeReturn::Ok
    });
    muxed.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(buffer) = info.buffer() else {
            return gst::PadProbeReturn::Ok;
        };
        // FLV tag type 9 is video; audio tags (8) may share a PTS with a video frame.
        let is_video = buffer
            .map_readable()
            .map(|m| m.first() == Some(&9))
            .unwrap_or(false);
        let Some(pts) = buffer.pts().filter(|_| is_video) else {
            return gst::PadProbeReturn::Ok;
        };
        let Some(key) = pts.nseconds().checked_sub(video_offset_ns) else {
            return gst::PadProbeReturn::Ok;
        };
        let mut m = lock(&by_pts);
        let found = m
            .range(key.saturating_sub(FLV_ROUNDING_NS)..=key + FLV_ROUNDING_NS)
            .min_by_key(|(k, _)| k.abs_diff(key))
            .map(|(k, v)| (*k, *v));
        if let Some((k, value)) = found {
            // This frame and every older one are out of the mixer.
            *m = m.split_off(&(k + 1));
            drop(m);
            write_line(value, "muxed");
        }
        gst::PadProbeReturn::Ok
    });
}

fn write_line(value: u32, name: &str) {
    let Some(file) = log_file() else {
        return;
    };
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0);
    if let Ok(mut f) = file.lock() {
        let _ = writeln!(f, "{ms:.1} {value} {name}");
    }
}

fn read_buffer(pad: &gst::Pad, buffer: &gst::BufferRef) -> Option<u32> {
    let caps = pad.current_caps()?;
    let info = gst_video::VideoInfo::from_caps(&caps).ok()?;
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info).ok()?;
    let stride = usize::try_from(*frame.plane_stride().first()?).ok()?;
    timecode::read_luma(
        frame.plane_data(0).ok()?,
        stride,
        info.width() as usize,
        info.height() as usize,
    )
}
