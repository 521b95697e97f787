//! The elements of one SRT output branch (IO): the parsed H.264 and AAC streams are muxed to
//! MPEG-TS by the branch itself and pushed by `srtsink` as an SRT caller.
//!
//! ```text
//! video-tee → queue → h264parse → byte-stream caps ─┐
//!                                                    ├→ mpegtsmux → errorignore → srtsink
//! audio-tee → queue ────────────────────────────────┘
//! ```
//!
//! Why a mux per branch: FLV (RTMP) wants H.264 in `avc` form with the parameter sets out of
//! band, MPEG-TS wants `byte-stream` with them in band at every keyframe (`config-interval=-1`:
//! a listener that joins or comes back decodes from the next keyframe). AAC goes in raw;
//! mpegtsmux adds the ADTS headers from the caps' codec data.
//!
//! How srtsink 1.22 behaves as a caller, seen here: it goes to PLAYING at once and connects on
//! its first buffer, blocking the branch's streaming thread (not the encoder: the queues
//! decouple it). With no listener the connection times out after SRT's 3 s connect timeout and
//! it posts "Failed to write to SRT socket: Connection does not exist"; a listener that closes
//! gives "… Error on SRT socket: …". `auto-reconnect` is turned off: the output's own state
//! machine reconnects, with the same backoff, fast-fail and reporting as RTMP.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::bus::output_element;
use crate::error::MixerError;
use crate::gst_util::{capsfilter, link_chain, link_to_pad, make, request_pad};
use crate::output_state::Progress;
use crate::srt_url::SrtTarget;

/// MPEG-TS packets per SRT message: 7 × 188 = 1316 bytes, the largest multiple that fits SRT's
/// 1456-byte live payload.
const TS_PACKETS_PER_MESSAGE: i32 = 7;

/// An SRT connection counts as live once this much TS went out: SRT's handshake (with the
/// stream id and key exchange) completes before the first data packet, so any payload means
/// the listener accepted us; a few messages rule out a stray one.
pub const SRT_LIVE_THRESHOLD: u64 = 4 * 1316;

/// The built, not yet linked to the tees, elements of one SRT branch.
pub struct SrtElements {
    /// Entry of the video chain (links to the video tee).
    pub video_queue: gst::Element,
    /// Entry of the audio chain (links to the audio tee).
    pub audio_queue: gst::Element,
    /// Every element, upstream first within each chain.
    pub elements: Vec<gst::Element>,
    pub sink: gst::Element,
    pub gate: KeyframeGate,
}

/// Drops video up to the first keyframe of each connection. A listener gets a stream that
/// starts decodable (parameter sets and an IDR first) instead of a few frames it cannot decode
/// while the keyframe forced at (re)start is on its way; audio flows from the start.
#[derive(Clone, Default)]
pub struct KeyframeGate(Arc<AtomicBool>);

impl KeyframeGate {
    /// Closes the gate: the next connection waits for a keyframe again.
    pub fn close(&self) {
        self.0.store(false, Ordering::Release);
    }

    pub(crate) fn attach(&self, pad: &gst::Pad) {
        let open = self.0.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if open.load(Ordering::Acquire) {
                return gst::PadProbeReturn::Ok;
            }
            match info.buffer() {
                Some(buf) if buf.flags().contains(gst::BufferFlags::DELTA_UNIT) => {
                    gst::PadProbeReturn::Drop
                }
                _ => {
                    open.store(true, Ordering::Release);
                    gst::PadProbeReturn::Ok
                }
            }
        });
    }
}

/// A leaky queue: a slow or absent listener must never back-pressure the encoder.
fn leaky_queue(name: &str) -> Result<gst::Element, MixerError> {
    let queue = make("queue", name)?;
    queue.set_property_from_str("leaky", "downstream");
    queue.set_property("max-size-time", 2_000_000_000u64);
    queue.set_property("max-size-buffers", 0u32);
    queue.set_property("max-size-bytes", 0u32);
    Ok(queue)
}

/// Builds branch `serial`'s elements into `pipeline` and links them among themselves.
pub fn build(
    pipeline: &gst::Pipeline,
    serial: usize,
    target: &SrtTarget,
) -> Result<SrtElements, MixerError> {
    let name = |part: &str| output_element(serial, part);
    let video_queue = leaky_queue(&name("vqueue"))?;
    let parse = make("h264parse", &name("h264parse"))?;
    parse.set_property("config-interval", -1i32);
    let caps = capsfilter(
        &name("h264caps"),
        gst::Caps::builder("video/x-h264")
            .field("stream-format", "byte-stream")
            .field("alignment", "au")
            .build(),
    )?;
    let audio_queue = leaky_queue(&name("aqueue"))?;
    let mux = make("mpegtsmux", &name("mux"))?;
    mux.set_property("alignment", TS_PACKETS_PER_MESSAGE);
    // The sink's error is what reports the failure; the muxer must not post its own
    // "streaming stopped" for the same cause.
    let ignore = make("errorignore", &name("ignore"))?;
    ignore.set_property_from_str("convert-to", "ok");
    let sink = make("srtsink", &name("sink"))?;
    // The URI first: setting it resets what it carries; the rest are properties so that no
    // secret is ever part of a string GStreamer prints.
    sink.set_property("uri", target.sink_uri());
    sink.set_property_from_str("mode", "caller");
    sink.set_property("latency", target.latency_ms as i32);
    if let Some(streamid) = &target.streamid {
        sink.set_property("streamid", streamid);
    }
    if let Some(passphrase) = &target.passphrase {
        sink.set_property("passphrase", passphrase);
    }
    if let Some(len) = target.pbkeylen {
        sink.set_property_from_str("pbkeylen", &len.to_string());
    }
    sink.set_property("auto-reconnect", false);
    sink.set_property("async", false);
    sink.set_property("sync", false);
    let elements = vec![
        video_queue.clone(),
        parse.clone(),
        caps.clone(),
        audio_queue.clone(),
        mux.clone(),
        ignore.clone(),
        sink.clone(),
    ];
    pipeline.add_many(&elements)?;
    let linked = (|| {
        link_chain(&[&video_queue, &parse, &caps])?;
        link_to_pad(&caps, &request_pad(&mux, "sink_%d")?)?;
        link_to_pad(&audio_queue, &request_pad(&mux, "sink_%d")?)?;
        link_chain(&[&mux, &ignore, &sink])
    })();
    if let Err(e) = linked {
        let _ = pipeline.remove_many(&elements);
        return Err(e);
    }
    let gate = KeyframeGate::default();
    if let Some(pad) = video_queue.static_pad("src") {
        gate.attach(&pad);
    }
    Ok(SrtElements {
        video_queue,
        audio_queue,
        elements,
        sink,
        gate,
    })
}

/// The current connection's counters from srtsink's `stats`: `bytes-sent` is the caller
/// socket's own count, so per connection like rtmp2sink's.
/// SRT acknowledges every 10 ms by itself and retransmits; a peer that stops reading is
/// dropped by SRT's peer-idle timeout (5 s) with an error, so no ack-window rule applies.
pub fn progress(sink: &gst::Element) -> Progress {
    let stats: gst::Structure = sink.property("stats");
    Progress {
        // Absent while no socket is connected (then only `bytes-sent-total`, 0, is there).
        written: stats.get::<u64>("bytes-sent").unwrap_or(0),
        acked: 0,
        ack_window: 0,
    }
}

/// Stops and removes the elements of a branch already unlinked from the tees, on a thread of
/// its own: srtsink blocks its state change while a handshake is under way (up to SRT's 3 s
/// connect timeout; its `unlock` does not interrupt the connect), which must not hold up the
/// mixer. A late error from these elements names a serial no longer in use and is ignored.
pub fn dispose(pipeline: &gst::Pipeline, elements: Vec<gst::Element>) {
    let pipeline = pipeline.downgrade();
    let stopping = elements.clone();
    let fallback = pipeline.clone();
    let spawned = std::thread::Builder::new()
        .name("srt-output-stop".into())
        .spawn(move || {
            // Downstream first: the sink letting go makes everything upstream of it flush.
            // Queues first would wait for their threads, which push into a mux that waits
            // for the sink (and, should the pipeline stop meanwhile, deadlock with it).
            for el in stopping.iter().rev() {
                let _ = el.set_state(gst::State::Null);
            }
            if let Some(pipeline) = pipeline.upgrade() {
                let _ = pipeline.remove_many(&stopping);
            }
        });
    if spawned.is_err() {
        for el in elements.iter().rev() {
            let _ = el.set_state(gst::State::Null);
        }
        if let Some(pipeline) = fallback.upgrade() {
            let _ = pipeline.remove_many(&elements);
        }
    }
}

/// srtsink's text for "the handshake never completed" (no listener at that address, or the
/// listener refused the passphrase or stream id: libsrt reports all of these alike to a
/// caller, after its 3 s connect timeout).
const NOT_CONNECTED: &str = "Connection does not exist";

/// Adds what a person can do about an srtsink error to its text.
pub fn explain_error(text: &str) -> String {
    if text.contains(NOT_CONNECTED) {
        format!(
            "{text} (no SRT listener accepted the connection: none at that address and port, \
             or it refused the passphrase or stream id)"
        )
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_that_never_came_up_is_explained() {
        let text = "Failed to write to SRT socket: Connection does not exist";
        let shown = explain_error(text);
        assert!(
            shown.starts_with(text) && shown.contains("passphrase"),
            "{shown}"
        );
        let other = "Failed to write to SRT socket: Error on SRT socket: Unknown or erroneous";
        assert_eq!(explain_error(other), other);
    }
}
