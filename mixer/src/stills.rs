//! Still pictures on the compositor: participant slates, the "starting soon" slate, name labels
//! and the logo. Each is rendered ONCE (one buffer from videotestsrc + textoverlay, or one
//! decoded PNG) and repeated by a live imagefreeze, so text costs nothing per frame; the
//! compositor only blends (and scales) it like any tile.
//!
//! Element names are `look{n}-…` (see `bus`): an error in a still (say, a PNG that does not
//! decode) removes that still, never the room.

use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::bus::look_element;
use crate::error::MixerError;
use crate::gst_util::{capsfilter, link_chain, link_to_pad, make, request_pad};

/// Buffering after each still's imagefreeze; it only widens the latency range the still
/// reports (see `Still::start`). Frames are pushed in real time, so it never fills.
const STILL_QUEUE: Duration = Duration::from_secs(1);

/// What a still shows.
pub enum StillKind<'a> {
    /// Centered text on a flat colour (slates). `text` is plain; it is escaped here.
    Text {
        text: &'a str,
        argb: u32,
        width: u32,
        height: u32,
        /// Font size in pixels.
        font_px: u32,
        /// Left-aligned (labels) or centered (slates).
        left: bool,
    },
    /// A `data:image/png;base64,…` URI, already validated (`looks::Look::validate`).
    Png { uri: &'a str },
}

/// One still branch feeding a compositor pad.
pub struct Still {
    pub serial: u64,
    elements: Vec<gst::Element>,
    pad: gst::Pad,
    compositor: gst::Element,
}

impl Still {
    /// Builds the branch into the (possibly PLAYING) pipeline, hidden until placed.
    pub fn start(
        pipeline: &gst::Pipeline,
        compositor: &gst::Element,
        serial: u64,
        fps: u32,
        kind: StillKind<'_>,
    ) -> Result<Still, MixerError> {
        let name = |part: &str| look_element(serial, part);
        let mut elements = Vec::new();
        match kind {
            StillKind::Text {
                text,
                argb,
                width,
                height,
                font_px,
                left,
            } => {
                let src = make("videotestsrc", &name("src"))?;
                src.set_property("num-buffers", 1i32);
                src.set_property_from_str("pattern", "solid-color");
                src.set_property("foreground-color", argb);
                let caps = capsfilter(
                    &name("caps"),
                    gst::Caps::builder("video/x-raw")
                        // No alpha: compositor 1.22 refuses alpha formats on its sink pads
                        // when its output (I420) has none.
                        .field("format", "BGRx")
                        .field("width", width as i32)
                        .field("height", height as i32)
                        .field("framerate", gst::Fraction::new(fps as i32, 1))
                        .build(),
                )?;
                let text_el = make("textoverlay", &name("text"))?;
                text_el.set_property("text", crate::looks::escape_markup(text));
                text_el.set_property("font-desc", format!("Sans {font_px}px"));
                text_el.set_property("shaded-background", false);
                text_el.set_property_from_str("valignment", "center");
                text_el.set_property_from_str("halignment", if left { "left" } else { "center" });
                text_el
                    .set_property_from_str("line-alignment", if left { "left" } else { "center" });
                text_el.set_property("xpad", (height / 4) as i32);
                elements.extend([src, caps, text_el]);
            }
            StillKind::Png { uri } => {
                let src = make("dataurisrc", &name("src"))?;
                src.set_property("uri", uri);
                let dec = make("pngdec", &name("dec"))?;
                let conv = make("videoconvert", &name("convert"))?;
                elements.extend([src, dec, conv]);
            }
        }
        let freeze = make("imagefreeze", &name("freeze"))?;
        freeze.set_property("is-live", true);
        // Why a queue: a live imagefreeze answers the latency query with max = one frame
        // (40 ms at its 25 fps), less than other inputs' minimum (bg 1 frame, an RTP input's
        // jitterbuffer 80 ms). The compositor then finds its latency impossible (max < min, a
        // CORE/CLOCK bus warning), stops timing out on pads without data and waits for every
        // pad: the first frame only came once a silent camera sent something or left (seconds).
        // A queue's latency adds its max-size-time to max, so the range is valid again.
        let queue = make("queue", &name("queue"))?;
        queue.set_property("max-size-buffers", 0u32);
        queue.set_property("max-size-bytes", 0u32);
        queue.set_property("max-size-time", STILL_QUEUE.as_nanos() as u64);
        // No framerate capsfilter after imagefreeze (it runs at 25 fps, the compositor picks its
        // frames): with one, a replacement mixer crashed in the compositor (SIGSEGV in
        // gst_video_frame_map on bg-video:src) in about half the mixer_faults runs. The cause
        // was later found in videotestsrc's colour change (see `scene::set_background_colour`);
        // the capsfilter only changed the timing, and is still not needed.
        elements.extend([freeze, queue]);
        pipeline.add_many(&elements)?;
        let refs: Vec<&gst::Element> = elements.iter().collect();
        let pad = match link_chain(&refs).and_then(|_| request_pad(compositor, "sink_%u")) {
            Ok(p) => p,
            Err(e) => {
                let _ = pipeline.remove_many(&elements);
                return Err(e);
            }
        };
        pad.set_property_from_str("sizing-policy", "keep-aspect-ratio");
        pad.set_property("alpha", 0.0f64);
        pad.set_property("width", 2i32);
        pad.set_property("height", 2i32);
        let still = Still {
            serial,
            elements,
            pad,
            compositor: compositor.clone(),
        };
        let last = still.elements.last().expect("non-empty chain").clone();
        if let Err(e) = link_to_pad(&last, &still.pad) {
            still.remove(pipeline);
            return Err(e);
        }
        // Downstream first so no element pushes into one that is not running yet.
        for el in still.elements.iter().rev() {
            if el.sync_state_with_parent().is_err() {
                still.remove(pipeline);
                return Err(MixerError::Gst(format!(
                    "{}: could not start",
                    look_element(serial, "branch")
                )));
            }
        }
        Ok(still)
    }

    /// The compositor pad (placed by the mixer with the layout).
    pub fn pad(&self) -> &gst::Pad {
        &self.pad
    }

    /// Stops the branch and takes it out of the pipeline; the compositor keeps running.
    pub fn remove(self, pipeline: &gst::Pipeline) {
        // Release the compositor pad first: that flushes it, which wakes a push of ours blocked
        // in the aggregator (it waits while the mix is not consuming, e.g. at shutdown).
        // Stopping imagefreeze first would wait for that push forever (its task's lock).
        if let Some(src) = self.elements.last().and_then(|e| e.static_pad("src")) {
            let _ = src.unlink(&self.pad);
        }
        self.compositor.release_request_pad(&self.pad);
        for el in &self.elements {
            let _ = el.set_state(gst::State::Null);
        }
        let _ = pipeline.remove_many(&self.elements);
    }
}
