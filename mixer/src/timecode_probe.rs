//! Benchmark instrumentation, off unless [`ENV`] names a directory: every decoded video input
//! frame's burnt-in timecode ([`crate::timecode`]) is read right after the decoder and appended
//! to `<dir>/mixer-<pid>.tc` as `<wall ms> <timecode> <display name>`. `benches/e2e.py` matches
//! these lines with the same timecodes decoded from the RTMP output, which separates the
//! mixer's own latency (compositor wait, encode, mux, RTMP) from the publisher -> serve leg.

use std::fs::File;
use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

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
        if let (Some(buffer), Some(file)) = (info.buffer(), log_file()) {
            if let Some(value) = read_buffer(pad, buffer) {
                let ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs_f64() * 1000.0)
                    .unwrap_or(0.0);
                if let Ok(mut f) = file.lock() {
                    let _ = writeln!(f, "{ms:.1} {value} {name}");
                }
            }
        }
        gst::PadProbeReturn::Ok
    });
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
