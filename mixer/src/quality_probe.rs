//! Production probes feeding [`crate::program_quality`]: the program leaving the compositor,
//! every video input entering it, and every video tag leaving flvmux. They run on streaming
//! threads, so each takes one short uncontended lock, reads at most 576 pixels and allocates
//! nothing per frame; the watcher and the heartbeat read the results.
//!
//! Latency is measured on the muxer's video tags against the pipeline clock: input buffers are
//! stamped by their jitterbuffers with their arrival's running time, and the compositor stamps
//! a program frame with the running time of the input frames it shows, so `running time now −
//! frame running time` is input arrival → program frame out of the muxer (minus up to one input
//! frame interval of alignment in the compositor).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use crate::control::ProgramQuality;
use crate::error::MixerError;
use crate::gst_util::lock;
use crate::program_quality::{
    sample_luma, JoinTracker, LatencyWindow, LumaSignature, StillnessWatch,
};

/// FLV tag type of video tags (the first byte of a tag).
const FLV_VIDEO_TAG: u8 = 9;

/// One room's quality measurements, shared by its probes and read by the mixer.
pub struct QualityProbes {
    /// Pad offset of the video before the muxer (AAC priming): muxed timestamps carry it.
    video_offset_ns: u64,
    /// Written per video tag leaving the muxer.
    muxed: Mutex<Muxed>,
    /// Written per program frame and per input frame.
    stillness: Mutex<StillnessWatch>,
    /// Each pending input's compositor pad, to ask whether the layout shows it when a program
    /// frame leaves (weak: the branch owns its pad).
    input_pads: Mutex<Vec<(u64, gst::glib::WeakRef<gst::Pad>)>>,
}

#[derive(Default)]
struct Muxed {
    latency: LatencyWindow,
    joins: JoinTracker,
}

impl QualityProbes {
    /// Probes the program (compositor src) and the muxer's output (flvmux src).
    /// `video_offset_ns` is the pad offset the video gets before the muxer.
    pub fn attach(
        compositor: &gst::Element,
        flvmux: &gst::Element,
        video_offset_ns: u64,
    ) -> Result<Arc<QualityProbes>, MixerError> {
        let missing = |what: &str| MixerError::Gst(format!("{what} without src pad"));
        let program = compositor
            .static_pad("src")
            .ok_or_else(|| missing("compositor"))?;
        let muxed = flvmux.static_pad("src").ok_or_else(|| missing("flvmux"))?;
        let probes = Arc::new(QualityProbes {
            video_offset_ns,
            muxed: Mutex::default(),
            stillness: Mutex::default(),
            input_pads: Mutex::default(),
        });

        let reader = LumaReader::default();
        let shared = probes.clone();
        program.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            if let Some(sig) = info.buffer().and_then(|b| reader.read(pad, b)) {
                lock(&shared.stillness).on_program(Instant::now(), sig);
            }
            gst::PadProbeReturn::Ok
        });

        let shared = probes.clone();
        muxed.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            if let Some(buffer) = info.buffer() {
                shared.on_muxed(pad, buffer);
            }
            gst::PadProbeReturn::Ok
        });
        Ok(probes)
    }

    /// Probes one video input's compositor pad: its frames (for the stillness watch) and its
    /// first frame (join → visible). `serial` names the input.
    pub fn attach_input(self: &Arc<Self>, pad: &gst::Pad, serial: u64) {
        lock(&self.input_pads).push((serial, pad.downgrade()));
        let reader = LumaReader::default();
        let armed = AtomicBool::new(false);
        let shared = self.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let Some(buffer) = info.buffer() else {
                return gst::PadProbeReturn::Ok;
            };
            // The compositor skips alpha 0 pads: the layout hides unplaced inputs that way.
            let visible = is_shown(pad);
            if !armed.load(Ordering::Relaxed) {
                if let Some(running) = running_time(pad, buffer) {
                    armed.store(true, Ordering::Relaxed);
                    lock(&shared.muxed).joins.arm(serial, running);
                }
            }
            if let Some(sig) = reader.read(pad, buffer) {
                lock(&shared.stillness).on_input(Instant::now(), serial, visible, sig);
            }
            gst::PadProbeReturn::Ok
        });
    }

    /// The input is gone (call after its branch stopped, so no probe call comes later).
    pub fn forget_input(&self, serial: u64) {
        lock(&self.input_pads).retain(|(s, _)| *s != serial);
        lock(&self.muxed).joins.forget(serial);
        lock(&self.stillness).forget(serial);
    }

    /// Serials of the inputs whose first frame has left the muxer since the last call.
    pub fn take_visible(&self) -> Vec<u64> {
        lock(&self.muxed).joins.take_visible()
    }

    /// The heartbeat's report; starts a new latency window.
    pub fn report(&self, now: Instant) -> ProgramQuality {
        let latency = lock(&self.muxed).latency.take();
        let stillness = lock(&self.stillness).verdict(now);
        ProgramQuality {
            latency_ms: latency.p50_ms,
            latency_max_ms: latency.max_ms,
            latency_samples: latency.samples,
            still_ms: u64::try_from(stillness.still.as_millis()).unwrap_or(u64::MAX),
            frozen: stillness.frozen,
            black: stillness.black,
        }
    }

    fn on_muxed(&self, pad: &gst::Pad, buffer: &gst::BufferRef) {
        // The stream header (FLV header, metadata, codec configuration) is no program frame.
        if buffer.flags().contains(gst::BufferFlags::HEADER) {
            return;
        }
        let is_video = buffer
            .map_readable()
            .is_ok_and(|m| m.first() == Some(&FLV_VIDEO_TAG));
        let Some(pts) = buffer.pts().filter(|_| is_video) else {
            return;
        };
        let Some(frame) = pts.nseconds().checked_sub(self.video_offset_ns) else {
            return;
        };
        let now = pad
            .parent_element()
            .and_then(|muxer| muxer.current_running_time());
        let mut muxed = lock(&self.muxed);
        if let Some(now) = now {
            muxed
                .latency
                .record(i128::from(now.nseconds()) - i128::from(frame));
        }
        let pads = lock(&self.input_pads);
        muxed.joins.on_program(frame, |serial| {
            pads.iter()
                .find(|(s, _)| *s == serial)
                .and_then(|(_, pad)| pad.upgrade())
                .is_some_and(|pad| is_shown(&pad))
        });
    }
}

/// Whether the layout shows the input of this compositor pad (hidden pads have alpha 0).
fn is_shown(pad: &gst::Pad) -> bool {
    pad.property::<f64>("alpha") > 0.0
}

/// A buffer's running time in its pad's segment (what the compositor compares).
fn running_time(pad: &gst::Pad, buffer: &gst::BufferRef) -> Option<u64> {
    let pts = buffer.pts()?;
    let event = pad.sticky_event::<gst::event::Segment>(0)?;
    let segment = event.segment().downcast_ref::<gst::ClockTime>()?;
    segment.to_running_time(pts).map(gst::ClockTime::nseconds)
}

/// Reads a frame's luma signature, with the video info parsed once per caps.
#[derive(Default)]
struct LumaReader {
    /// The caps last seen and what they parse to (`None`: not raw video).
    format: Mutex<Option<(gst::Caps, Option<gst_video::VideoInfo>)>>,
}

impl LumaReader {
    /// `None` for formats without 8-bit luma (RGB, 10-bit, tiled): such frames are not sampled.
    fn read(&self, pad: &gst::Pad, buffer: &gst::BufferRef) -> Option<LumaSignature> {
        let caps = pad.current_caps()?;
        let mut format = lock(&self.format);
        // The same caps object while nothing renegotiates: a pointer comparison.
        if format
            .as_ref()
            .is_none_or(|(seen, _)| seen.as_ptr() != caps.as_ptr())
        {
            let info = gst_video::VideoInfo::from_caps(&caps).ok();
            *format = Some((caps, info));
        }
        let info = format.as_ref()?.1.as_ref()?;
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, info).ok()?;
        let format_info = frame.format_info();
        if !(format_info.is_yuv() || format_info.is_gray())
            || format_info.is_tiled()
            || frame.comp_depth(0) != 8
        {
            return None;
        }
        sample_luma(
            frame.comp_data(0).ok()?,
            usize::try_from(frame.comp_stride(0)).ok()?,
            usize::try_from(frame.comp_pstride(0)).ok()?,
            frame.width() as usize,
            frame.height() as usize,
        )
    }
}
