//! One RTP input branch: udpsrc on the mixer's RTP address → jitterbuffer → depay → decode → convert → a pad
//! of the compositor (video) or audio mixer (audio). Added and removed while PLAYING.

use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_video::VideoColorimetry;

use crate::bus::input_element;
use crate::control::{AudioMix, Codec, MediaKind};
use crate::error::MixerError;
use crate::gst_util::{is_force_key_unit, link_chain, link_to_pad, make, request_pad};
use crate::layout::Placement;
use crate::quality_probe::QualityProbes;

/// Jitterbuffer latency: enough to reorder loopback/LAN packets, small enough for live talk.
const JITTER_LATENCY_MS: u32 = 80;
/// How often an audio input reports its level.
const LEVEL_INTERVAL: Duration = Duration::from_millis(100);

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
    /// UDP port (on the mixer's RTP bind address) the branch receives RTP on.
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
    /// `keyframes` as this branch's serial; the receiver throttles them. A video branch's
    /// frames feed `quality` (as this serial) where they enter the compositor.
    pub fn start(
        pipeline: &gst::Pipeline,
        aggregator: &gst::Element,
        serial: u64,
        spec: InputSpec,
        bind: std::net::IpAddr,
        keyframes: Sender<u64>,
        quality: &Arc<QualityProbes>,
    ) -> Result<InputBranch, MixerError> {
        let name = |part: &str| input_element(serial, part);
        let src = make("udpsrc", &name("src"))?;
        src.set_property("address", bind.to_string());
        src.set_property("port", 0i32);
        src.set_property("caps", rtp_caps(&spec));
        let jitter = make("rtpjitterbuffer", &name("jitter"))?;
        jitter.set_property("latency", JITTER_LATENCY_MS);
        let mut elements = vec![src.clone(), jitter.clone()];
        match spec.codec {
            Codec::Vp8 | Codec::H264 => {
                // FFmpeg's VP8 decoder: 7 % less CPU for the whole R4 mixer than libvpx's
                // vp8dec, same pictures.
                let (depay_f, dec_f) = if spec.codec == Codec::Vp8 {
                    ("rtpvp8depay", "avdec_vp8")
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
                // One thread: libav's automatic threading decodes several frames at once and
                // so holds frames back (a frame of latency per extra thread), and with several
                // rooms on a machine the threads only compete. Tile-sized inputs decode fast.
                dec.set_property("max-threads", 1i32);
                // After loss the depayloader waits for a keyframe; never show smeared frames.
                dec.set_property("output-corrupt", false);
                label_colorimetry(&dec, spec.codec);
                crate::timecode_probe::attach(&dec, &spec.display_name);
                let conv = make("videoconvert", &name("convert"))?;
                elements.extend([depay, dec, conv]);
            }
            Codec::Opus => {
                let depay = make("rtpopusdepay", &name("depay"))?;
                let dec = make("opusdec", &name("dec"))?;
                dec.set_property("plc", true);
                let conv = make("audioconvert", &name("convert"))?;
                let res = make("audioresample", &name("resample"))?;
                // Levels for the active speaker (bus messages, 10 a second; cheap).
                let level = make("level", &name("level"))?;
                level.set_property("interval", LEVEL_INTERVAL.as_nanos() as u64);
                level.set_property("post-messages", true);
                elements.extend([depay, dec, conv, res, level]);
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
            // Hidden until the layout places it (alpha 0 pads are skipped by the compositor).
            branch.agg_pad.set_property("alpha", 0.0f64);
            branch.agg_pad.set_property("width", 2i32);
            branch.agg_pad.set_property("height", 2i32);
            quality.attach_input(&branch.agg_pad, serial);
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

    /// Sets this input's level in the audio mix (no-op for video).
    pub fn set_audio(&self, audio: AudioMix) {
        if self.kind() == MediaKind::Audio {
            self.agg_pad.set_property("volume", audio.gain);
            self.agg_pad.set_property("mute", audio.muted);
        }
    }

    /// The compositor pad, for applying a layout between two frames (see `mixer`).
    pub fn video_pad(&self) -> Option<&gst::Pad> {
        (self.kind() == MediaKind::Video).then_some(&self.agg_pad)
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

/// Puts a compositor pad on its tile, or hides it (`None`).
pub fn apply_placement(pad: &gst::Pad, placement: Option<Placement>) {
    match placement {
        Some(p) => {
            pad.set_property("xpos", p.rect.x as i32);
            pad.set_property("ypos", p.rect.y as i32);
            pad.set_property("width", p.rect.width as i32);
            pad.set_property("height", p.rect.height as i32);
            pad.set_property("zorder", p.z + 1);
            pad.set_property("alpha", 1.0f64);
        }
        None => pad.set_property("alpha", 0.0f64),
    }
}

/// Rewrites the colorimetry in the caps `dec` sends downstream to what its pictures really are
/// (`colour::input_colorimetry`), so the compositor converts them into the program's encoding
/// correctly. Every caps event passes here, so a resolution change keeps the label.
fn label_colorimetry(dec: &gst::Element, codec: Codec) {
    let Some(pad) = dec.static_pad("src") else {
        return;
    };
    pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
        let Some(gst::PadProbeData::Event(event)) = &info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let gst::EventView::Caps(caps_event) = event.view() else {
            return gst::PadProbeReturn::Ok;
        };
        let mut caps = caps_event.caps_owned();
        let reported = caps
            .structure(0)
            .and_then(|s| s.get::<&str>("colorimetry").ok())
            .and_then(|c| c.parse::<VideoColorimetry>().ok());
        let wanted = crate::colour::input_colorimetry(codec, reported);
        if reported != Some(wanted) {
            tracing::debug!(?codec, ?reported, %wanted, "input colorimetry set");
            if let Some(s) = caps.make_mut().structure_mut(0) {
                s.set("colorimetry", wanted.to_string());
            }
            let relabelled = gst::event::Caps::builder(&caps)
                .seqnum(event.seqnum())
                .build();
            info.data = Some(gst::PadProbeData::Event(relabelled));
        }
        gst::PadProbeReturn::Ok
    });
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
