//! One RTP input branch: udpsrc on 127.0.0.1 → jitterbuffer → depay → decode → convert → a pad
//! of the compositor (video) or audio mixer (audio). Added and removed while PLAYING.

use std::sync::mpsc::Sender;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::bus::input_element;
use crate::control::{Codec, MediaKind};
use crate::error::MixerError;
use crate::gst_util::{is_force_key_unit, link_chain, link_to_pad, make, request_pad};
use crate::layout::TileRect;

/// Jitterbuffer latency: enough to reorder loopback/LAN packets, small enough for live talk.
const JITTER_LATENCY_MS: u32 = 80;

/// What serve tells us about one RTP stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    pub input_id: String,
    pub participant_id: String,
    pub display_name: String,
    pub codec: Codec,
    pub payload_type: u8,
    pub clock_rate: u32,
}

/// A live input branch.
pub struct InputBranch {
    /// Serial used in element names (see `bus`).
    pub serial: u64,
    pub spec: InputSpec,
    /// UDP port on 127.0.0.1 the branch receives RTP on.
    pub port: u16,
    /// Upstream first.
    elements: Vec<gst::Element>,
    /// The compositor or audiomixer pad this branch feeds.
    agg_pad: gst::Pad,
    aggregator: gst::Element,
}

impl InputBranch {
    pub fn kind(&self) -> MediaKind {
        self.spec.codec.kind()
    }

    /// Builds the branch into `pipeline`, links it to `aggregator` and starts it. Upstream
    /// force-key-unit requests (depayloader after loss, decoder after errors) are sent on
    /// `keyframes` as this branch's serial; the receiver throttles them.
    pub fn start(
        pipeline: &gst::Pipeline,
        aggregator: &gst::Element,
        serial: u64,
        spec: InputSpec,
        keyframes: Sender<u64>,
    ) -> Result<InputBranch, MixerError> {
        let name = |part: &str| input_element(serial, part);
        let src = make("udpsrc", &name("src"))?;
        src.set_property("address", "127.0.0.1");
        src.set_property("port", 0i32);
        src.set_property("caps", rtp_caps(&spec));
        let jitter = make("rtpjitterbuffer", &name("jitter"))?;
        jitter.set_property("latency", JITTER_LATENCY_MS);
        let mut elements = vec![src.clone(), jitter.clone()];
        match spec.codec {
            Codec::Vp8 | Codec::H264 => {
                let (depay_f, dec_f) = if spec.codec == Codec::Vp8 {
                    ("rtpvp8depay", "vp8dec")
                } else {
                    ("rtph264depay", "avdec_h264")
                };
                let depay = make(depay_f, &name("depay"))?;
                // Drop the broken frames after loss and ask the sender for a keyframe instead
                // of showing smeared garbage.
                depay.set_property("wait-for-keyframe", true);
                depay.set_property("request-keyframe", true);
                let dec = make(dec_f, &name("dec"))?;
                // Corrupt input must not turn into a flow error that kills the branch.
                dec.set_property("max-errors", -1i32);
                let conv = make("videoconvert", &name("convert"))?;
                elements.extend([depay, dec, conv]);
            }
            Codec::Opus => {
                let depay = make("rtpopusdepay", &name("depay"))?;
                let dec = make("opusdec", &name("dec"))?;
                dec.set_property("plc", true);
                let conv = make("audioconvert", &name("convert"))?;
                let res = make("audioresample", &name("resample"))?;
                elements.extend([depay, dec, conv, res]);
            }
        }
        pipeline.add_many(&elements)?;
        let refs: Vec<&gst::Element> = elements.iter().collect();
        let agg_pad = match link_chain(&refs).and_then(|_| request_pad(aggregator, "sink_%u")) {
            Ok(p) => p,
            Err(e) => {
                let _ = pipeline.remove_many(&elements);
                return Err(e);
            }
        };
        let mut branch = InputBranch {
            serial,
            spec,
            port: 0,
            elements,
            agg_pad,
            aggregator: aggregator.clone(),
        };
        if branch.kind() == MediaKind::Video {
            branch.agg_pad.set_property("zorder", 1u32);
            branch
                .agg_pad
                .set_property_from_str("sizing-policy", "keep-aspect-ratio");
            // Hidden until the layout places it.
            branch.agg_pad.set_property("width", 2i32);
            branch.agg_pad.set_property("height", 2i32);
        }
        let last = branch.elements.last().expect("non-empty chain").clone();
        if let Err(e) = link_to_pad(&last, &branch.agg_pad) {
            branch.remove(pipeline);
            return Err(e);
        }
        // Catch force-key-unit requests travelling upstream out of the depayloader.
        if let Some(pad) = jitter.static_pad("src") {
            pad.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
                if let Some(gst::PadProbeData::Event(ev)) = &info.data {
                    if is_force_key_unit(ev) {
                        let _ = keyframes.send(serial);
                        // Let it travel on (udpsrc ignores it): returning Drop from a Rust
                        // probe for an upstream event logged gst_mini_object_unref CRITICALs.
                        return gst::PadProbeReturn::Ok;
                    }
                }
                gst::PadProbeReturn::Ok
            });
        }
        // Downstream first so no element pushes into one that is not running yet.
        for el in branch.elements.iter().rev() {
            if el.sync_state_with_parent().is_err() {
                let e = MixerError::StateChange {
                    element: el.name().to_string(),
                    state: "PLAYING".into(),
                };
                branch.remove(pipeline);
                return Err(e);
            }
        }
        branch.port = bound_port(&src);
        if branch.port == 0 {
            branch.remove(pipeline);
            return Err(MixerError::Input {
                input_id: "?".into(),
                reason: "udpsrc did not bind a port".into(),
            });
        }
        Ok(branch)
    }

    /// Places the video pad on its tile.
    pub fn place(&self, tile: TileRect) {
        let p = &self.agg_pad;
        p.set_property("xpos", tile.x as i32);
        p.set_property("ypos", tile.y as i32);
        p.set_property("width", tile.width as i32);
        p.set_property("height", tile.height as i32);
    }

    /// Stops the branch and takes it out of the pipeline; the aggregator keeps running.
    pub fn remove(self, pipeline: &gst::Pipeline) {
        // Upstream first: each element's streaming thread stops before the next is shut down,
        // so no push ever hits an unlinked pad (which would post a not-linked error).
        for el in &self.elements {
            let _ = el.set_state(gst::State::Null);
        }
        if let Some(src) = self.elements.last().and_then(|e| e.static_pad("src")) {
            let _ = src.unlink(&self.agg_pad);
        }
        self.aggregator.release_request_pad(&self.agg_pad);
        let _ = pipeline.remove_many(&self.elements);
    }
}

fn rtp_caps(spec: &InputSpec) -> gst::Caps {
    let (media, encoding) = match spec.codec {
        Codec::Vp8 => ("video", "VP8"),
        Codec::H264 => ("video", "H264"),
        Codec::Opus => ("audio", "OPUS"),
    };
    let mut caps = gst::Caps::builder("application/x-rtp")
        .field("media", media)
        .field("encoding-name", encoding)
        .field("clock-rate", spec.clock_rate as i32)
        .field("payload", i32::from(spec.payload_type));
    if spec.codec == Codec::H264 {
        caps = caps.field("packetization-mode", "1");
    }
    caps.build()
}

/// udpsrc with port 0 binds an ephemeral port when it opens (NULL→READY) and writes it back into
/// its `port` property; poll briefly in case the state change is still completing.
fn bound_port(src: &gst::Element) -> u16 {
    for _ in 0..100 {
        let port: i32 = src.property("port");
        if port > 0 {
            return port as u16;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    0
}
