//! One output branch hanging off the encoded stream. RTMP: `queue leaky=downstream →
//! errorignore → rtmp2sink` on the FLV tee; SRT: its own MPEG-TS mux fed from the video and
//! audio tees (see `srt_output`). Each branch can be stopped, restarted or torn down alone
//! while the encoder and the other outputs keep running. A branch under a destination policy
//! starts stopped and connects only once its [`ConnectCheck`] passed (see `output_state`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::bus::output_element;
use crate::connect_check::ConnectCheck;
use crate::control::{DestinationPolicy, OutputSpec};
use crate::error::MixerError;
use crate::gst_util::{link_chain, make, request_pad};
use crate::output_state::{OutputTracker, Progress};
use crate::redact::redact_url;
use crate::retry::Backoff;
use crate::srt_output;
use crate::srt_url::{is_srt, parse_srt_url, SrtTarget};

/// A Live output whose written bytes do not move for this long is reset. Written, not acked:
/// nginx-rtmp acks once per `ack_window` (5 MB ≈ 16 s at 2.5 Mbit/s). A stalled peer stops
/// reading, the socket buffers fill within about a second, and writes stop advancing, so a
/// stall is detected within ~STALL_TIMEOUT + 1 s (the issue allows 15 s).
const STALL_TIMEOUT: Duration = Duration::from_secs(8);
/// Media flows only after the server accepted `publish`; the handshake and commands before it
/// are ~3.6 KB (handshake 3073 B + commands), so past 6 KiB the URL and key were accepted.
const LIVE_THRESHOLD: u64 = 6 * 1024;

/// The tees output branches attach to.
pub struct Taps<'a> {
    /// The FLV stream (RTMP outputs).
    pub flv: &'a gst::Element,
    /// Parsed H.264 and AAC (outputs that mux for themselves: SRT).
    pub video: &'a gst::Element,
    pub audio: &'a gst::Element,
}

/// How a branch reaches its destination.
enum Transport {
    Rtmp,
    Srt(SrtTarget, srt_output::KeyframeGate),
}

/// One tee pad feeding a branch, and the branch element it feeds.
struct Tap {
    tee: gst::Element,
    pad: gst::Pad,
    entry: gst::Element,
    /// DROP probe on the tee pad while the branch is stopped.
    block: Option<gst::PadProbeId>,
}

impl Tap {
    fn entry_pad(&self) -> gst::Pad {
        self.entry
            .static_pad("sink")
            .expect("a queue has a sink pad")
    }

    fn link(&self) -> Result<(), MixerError> {
        self.pad
            .link(&self.entry_pad())
            .map(|_| ())
            .map_err(|e| MixerError::Link {
                from: format!("{}: {e:?}", self.tee.name()),
                to: self.entry.name().to_string(),
            })
    }
}

/// Buffers are dropped at every tee pad of a stopped branch.
fn drop_probe(pad: &gst::Pad, seen: Option<Arc<AtomicBool>>) -> Option<gst::PadProbeId> {
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
        move |_, _| {
            if let Some(seen) = &seen {
                seen.store(true, Ordering::Release);
            }
            gst::PadProbeReturn::Drop
        },
    )
}

pub struct OutputBranch {
    pub spec: OutputSpec,
    /// Names this branch's elements (`out{serial}-…`): never reused within a mixer, so a late
    /// bus error of a removed output cannot be taken for a newer one's.
    pub serial: usize,
    pub tracker: OutputTracker,
    transport: Transport,
    /// The tee pads feeding the branch: one for RTMP, video and audio for SRT.
    taps: Vec<Tap>,
    /// Every element of the branch, upstream first within each chain.
    elements: Vec<gst::Element>,
    sink: gst::Element,
    removed: bool,
    /// Re-checks the destination before each connection (`None`: internal or allowed).
    check: Option<ConnectCheck>,
}

impl OutputBranch {
    /// Builds branch `serial` for `spec` into `pipeline`, before or after PLAYING. On a running
    /// pipeline the branch reaches PLAYING before its tee pads are linked, so a tee never
    /// pushes into a flushing queue (that would stop the shared stream for every output).
    ///
    /// Under `policy` (unless the output is internal) the branch is built stopped instead: its
    /// elements locked in NULL (the pipeline going PLAYING leaves them) and its tee pads left
    /// unlinked (the tees allow that) until the first check passes and
    /// [`OutputBranch::restart`] links them. Linked to a NULL queue, a tee would get FLUSHING
    /// back for the stream's first sticky events, and with no other output the whole mix
    /// would stop.
    pub fn build(
        pipeline: &gst::Pipeline,
        taps: &Taps,
        serial: usize,
        spec: OutputSpec,
        policy: &DestinationPolicy,
        now: Instant,
    ) -> Result<OutputBranch, MixerError> {
        let srt = is_srt(&spec.url)
            .then(|| parse_srt_url(&spec.url))
            .transpose()
            .map_err(|e| MixerError::Invalid(format!("output {}: {e}", spec.output_id)))?;
        let mut check = (!spec.internal)
            .then(|| ConnectCheck::new(policy.clone(), &spec.url))
            .flatten();
        let (entries, elements, sink, live_threshold, transport) = match srt {
            None => {
                let (queue, elements, sink) = build_rtmp(pipeline, serial, &spec.url)?;
                let entries = vec![(taps.flv, queue)];
                (entries, elements, sink, LIVE_THRESHOLD, Transport::Rtmp)
            }
            Some(target) => {
                let built = srt_output::build(pipeline, serial, &target)?;
                let entries = vec![
                    (taps.video, built.video_queue),
                    (taps.audio, built.audio_queue),
                ];
                let transport = Transport::Srt(target, built.gate);
                let threshold = srt_output::SRT_LIVE_THRESHOLD;
                (entries, built.elements, built.sink, threshold, transport)
            }
        };
        let held = check.is_some();
        let mut attached: Vec<Tap> = Vec::new();
        let result = (|| {
            for el in elements.iter().rev() {
                if held {
                    el.set_locked_state(true);
                    continue;
                }
                // The sinks connect on their own threads (rtmp2sink async-connect, srtsink on
                // its first buffer), so this never waits for the network; buffers wait in the
                // leaky queues until the server accepts.
                el.sync_state_with_parent()
                    .map_err(|e| MixerError::Gst(format!("output {serial} to PLAYING: {e}")))?;
            }
            for (tee, entry) in &entries {
                let pad = request_pad(tee, "src_%u")?;
                let mut tap = Tap {
                    tee: (*tee).clone(),
                    pad,
                    entry: entry.clone(),
                    block: None,
                };
                if held {
                    tap.block = drop_probe(&tap.pad, None);
                    attached.push(tap);
                    continue;
                }
                let linked = tap.link();
                attached.push(tap);
                linked?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            // A half-built branch must not linger in a running pipeline.
            for tap in &attached {
                let _ = tap.pad.unlink(&tap.entry_pad());
                tap.tee.release_request_pad(&tap.pad);
            }
            for el in &elements {
                let _ = el.set_state(gst::State::Null);
            }
            let _ = pipeline.remove_many(&elements);
            return Err(e);
        }
        tracing::info!(output = %spec.output_id, url = %redact_url(&spec.url),
            checked = held, "output added");
        let mut tracker =
            OutputTracker::new(now, Backoff::default(), STALL_TIMEOUT, live_threshold);
        if let Some(check) = &mut check {
            check.begin(now);
            tracker = tracker.checked_before_connecting();
        }
        Ok(OutputBranch {
            spec,
            serial,
            tracker,
            transport,
            taps: attached,
            elements,
            sink,
            removed: false,
            check,
        })
    }

    /// Starts checking the destination for the next connection attempt.
    pub fn begin_check(&mut self, now: Instant) {
        match &mut self.check {
            Some(check) => check.begin(now),
            None => {
                tracing::error!(output = %self.spec.output_id, "check asked of an unchecked output")
            }
        }
    }

    /// The verdict of the check begun last, once known.
    pub fn poll_check(&mut self, now: Instant) -> Option<Result<(), String>> {
        self.check.as_mut()?.poll(now)
    }

    /// The current connection's counters. Live detection uses bytes written: nginx-rtmp
    /// acknowledges only once per `ack_window` (5 MB by default, ~15 s at a few Mbit/s), far
    /// too coarse for that; acknowledgements serve stall detection (see `OutputTracker::tick`).
    pub fn progress(&self) -> Progress {
        if let Transport::Srt(..) = self.transport {
            return srt_output::progress(&self.sink);
        }
        let stats: gst::Structure = self.sink.property("stats");
        let u64_of = |name: &str| stats.get::<u64>(name).unwrap_or(0);
        let u32_of = |name: &str| u64::from(stats.get::<u32>(name).unwrap_or(0));
        Progress {
            written: u64_of("out-bytes-total"),
            acked: u64_of("out-bytes-acked"),
            ack_window: u32_of("in-window-ack-size").max(u32_of("out-window-ack-size")),
        }
    }

    /// Makes an error text safe (and for SRT, clearer) to show: the URL's stream key (RTMP),
    /// stream id and passphrase (SRT) never leave this process.
    pub fn sanitize(&self, text: &str) -> String {
        let mut s = text.replace(&self.spec.url, &redact_url(&self.spec.url));
        match &self.transport {
            Transport::Rtmp => {
                if let Some(key) = self.spec.url.rsplit('/').next().filter(|k| k.len() >= 4) {
                    s = s.replace(key, "***");
                }
            }
            Transport::Srt(target, _) => {
                s = srt_output::explain_error(&s);
                for secret in target.secrets().filter(|v| !v.is_empty()) {
                    let encoded: String =
                        url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
                    s = s.replace(secret, "***").replace(&encoded, "***");
                }
            }
        }
        s
    }

    /// Drops buffers at the tees and shuts the branch down, keeping it for a restart.
    pub fn stop(&mut self) {
        self.block_taps();
        for el in &self.elements {
            let _ = el.set_state(gst::State::Null);
        }
    }

    /// Puts a DROP probe on every tee pad feeding the branch.
    fn block_taps(&mut self) {
        let mut seen = Vec::new();
        for tap in &mut self.taps {
            if tap.block.is_none() {
                let flag = Arc::new(AtomicBool::new(false));
                tap.block = drop_probe(&tap.pad, Some(flag.clone()));
                seen.push(flag);
            }
        }
        // Once a probe has dropped one buffer, any push that was already past it has finished
        // (a tee pushes serially), so stopping the queues cannot hand a tee a FLUSHING return
        // that would stop the whole stream.
        let deadline = Instant::now() + Duration::from_millis(300);
        while !seen.iter().all(|f| f.load(Ordering::Acquire)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Brings a stopped branch back; the caller forces a keyframe so the server gets a clean
    /// start (flvmux's stream headers are resent by rtmp2sink on connect; h264parse repeats
    /// the parameter sets at that keyframe for SRT).
    pub fn restart(&mut self) {
        if let Transport::Srt(_, gate) = &self.transport {
            gate.close();
        }
        for el in self.elements.iter().rev() {
            // Built stopped (see `build`): from now on the branch follows the pipeline.
            el.set_locked_state(false);
            let _ = el.sync_state_with_parent();
        }
        for tap in &mut self.taps {
            if !tap.pad.is_linked() {
                // First start of a branch built stopped: link it now that the queue runs.
                if let Err(e) = tap.link() {
                    tracing::error!(output = %self.spec.output_id, error = %e,
                        "cannot link the output");
                }
            }
            if let Some(id) = tap.block.take() {
                tap.pad.remove_probe(id);
            }
        }
    }

    /// Removes the branch from the pipeline for good.
    pub fn teardown(&mut self, pipeline: &gst::Pipeline) {
        if self.removed {
            return;
        }
        self.removed = true;
        self.block_taps();
        for tap in &mut self.taps {
            let _ = tap.pad.unlink(&tap.entry_pad());
            if let Some(id) = tap.block.take() {
                tap.pad.remove_probe(id);
            }
            tap.tee.release_request_pad(&tap.pad);
        }
        let elements = std::mem::take(&mut self.elements);
        match self.transport {
            // Cut off from the tees, the branch can take its time to stop: srtsink in the
            // middle of a handshake does not let go before SRT's 3 s connect timeout, and the
            // caller holds the mixer's lock.
            Transport::Srt(..) => srt_output::dispose(pipeline, elements),
            Transport::Rtmp => {
                for el in &elements {
                    let _ = el.set_state(gst::State::Null);
                }
                let _ = pipeline.remove_many(&elements);
            }
        }
    }
}

/// The elements of an RTMP branch, added to `pipeline` and linked: (entry queue, all, sink).
fn build_rtmp(
    pipeline: &gst::Pipeline,
    serial: usize,
    url: &str,
) -> Result<(gst::Element, Vec<gst::Element>, gst::Element), MixerError> {
    let name = |part: &str| output_element(serial, part);
    let queue = make("queue", &name("queue"))?;
    // A slow or dead server must never back-pressure the encoder: drop oldest instead.
    queue.set_property_from_str("leaky", "downstream");
    queue.set_property("max-size-time", 2_000_000_000u64);
    queue.set_property("max-size-buffers", 0u32);
    queue.set_property("max-size-bytes", 0u32);
    // Turns the sink's flow error into not-linked, which the tee (allow-not-linked) ignores.
    let ignore = make("errorignore", &name("ignore"))?;
    let sink = make("rtmp2sink", &name("sink"))?;
    sink.set_property("location", url);
    // Connect as soon as the branch starts, while the encoder makes its first frame: the
    // RTMP handshake (~135 ms to a loopback nginx-rtmp, whose unflushed small writes wait
    // out delayed ACKs) then overlaps pipeline start instead of following the first buffer.
    sink.set_property("async-connect", true);
    sink.set_property("async", false);
    sink.set_property("sync", false);
    let elements = vec![queue.clone(), ignore, sink.clone()];
    pipeline.add_many(&elements)?;
    if let Err(e) = link_chain(&elements.iter().collect::<Vec<_>>()) {
        let _ = pipeline.remove_many(&elements);
        return Err(e);
    }
    Ok((queue, elements, sink))
}
