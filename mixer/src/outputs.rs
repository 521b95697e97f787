//! One RTMP output branch hanging off the tee: `queue leaky=downstream → errorignore →
//! rtmp2sink`. Each branch can be stopped, restarted or torn down alone while the encoder and
//! the other outputs keep running. A branch under a destination policy starts stopped and
//! connects only once its [`ConnectCheck`] passed (see `output_state`).

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

/// A Live output whose written bytes do not move for this long is reset. Written, not acked:
/// nginx-rtmp acks once per `ack_window` (5 MB ≈ 16 s at 2.5 Mbit/s). A stalled peer stops
/// reading, the socket buffers fill within about a second, and writes stop advancing, so a
/// stall is detected within ~STALL_TIMEOUT + 1 s (the issue allows 15 s).
const STALL_TIMEOUT: Duration = Duration::from_secs(8);
/// Media flows only after the server accepted `publish`; the handshake and commands before it
/// are ~3.6 KB (handshake 3073 B + commands), so past 6 KiB the URL and key were accepted.
const LIVE_THRESHOLD: u64 = 6 * 1024;

pub struct OutputBranch {
    pub spec: OutputSpec,
    /// Names this branch's elements (`out{serial}-…`): never reused within a mixer, so a late
    /// bus error of a removed output cannot be taken for a newer one's.
    pub serial: usize,
    pub tracker: OutputTracker,
    tee: gst::Element,
    tee_pad: gst::Pad,
    /// queue, errorignore, rtmp2sink (upstream first).
    elements: Vec<gst::Element>,
    sink: gst::Element,
    /// DROP probe on the tee pad while the branch is stopped.
    block: Option<gst::PadProbeId>,
    removed: bool,
    /// Re-checks the destination before each connection (`None`: internal or allowed).
    check: Option<ConnectCheck>,
}

impl OutputBranch {
    /// Builds branch `serial` for `spec` into `pipeline`, before or after PLAYING. On a running
    /// pipeline the branch reaches PLAYING before the tee pad is linked, so the tee never
    /// pushes into a flushing queue (that would stop the shared stream for every output).
    ///
    /// Under `policy` (unless the output is internal) the branch is built stopped instead: its
    /// elements locked in NULL (the pipeline going PLAYING leaves them) and its tee pad left
    /// unlinked (the tee allows that) until the first check passes and
    /// [`OutputBranch::restart`] links it. Linked to a NULL queue, the tee would get FLUSHING
    /// back for the stream's first sticky events, and with no other output the whole mix
    /// would stop.
    pub fn build(
        pipeline: &gst::Pipeline,
        tee: &gst::Element,
        serial: usize,
        spec: OutputSpec,
        policy: &DestinationPolicy,
        now: Instant,
    ) -> Result<OutputBranch, MixerError> {
        let mut check = (!spec.internal)
            .then(|| ConnectCheck::new(policy.clone(), &spec.url))
            .flatten();
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
        sink.set_property("location", &spec.url);
        // Connect as soon as the branch starts, while the encoder makes its first frame: the
        // RTMP handshake (~135 ms to a loopback nginx-rtmp, whose unflushed small writes wait
        // out delayed ACKs) then overlaps pipeline start instead of following the first buffer.
        sink.set_property("async-connect", true);
        sink.set_property("async", false);
        sink.set_property("sync", false);
        let elements = vec![queue.clone(), ignore, sink.clone()];
        pipeline.add_many(&elements)?;
        let held = check.is_some();
        let mut block = None;
        let attached = (|| {
            link_chain(&elements.iter().collect::<Vec<_>>())?;
            for el in elements.iter().rev() {
                if held {
                    el.set_locked_state(true);
                    continue;
                }
                // rtmp2sink connects on its own thread (async-connect), so this never waits
                // for the network; buffers wait in the leaky queue until the server accepts.
                el.sync_state_with_parent()
                    .map_err(|e| MixerError::Gst(format!("output {serial} to PLAYING: {e}")))?;
            }
            let tee_pad = request_pad(tee, "src_%u")?;
            if held {
                block = tee_pad.add_probe(
                    gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
                    |_, _| gst::PadProbeReturn::Drop,
                );
                return Ok(tee_pad);
            }
            let qpad = queue.static_pad("sink").expect("queue has a sink pad");
            if let Err(e) = tee_pad.link(&qpad) {
                tee.release_request_pad(&tee_pad);
                return Err(MixerError::Link {
                    from: format!("tee: {e:?}"),
                    to: queue.name().to_string(),
                });
            }
            Ok(tee_pad)
        })();
        let tee_pad = match attached {
            Ok(pad) => pad,
            Err(e) => {
                // A half-built branch must not linger in a running pipeline.
                for el in &elements {
                    let _ = el.set_state(gst::State::Null);
                }
                let _ = pipeline.remove_many(&elements);
                return Err(e);
            }
        };
        tracing::info!(output = %spec.output_id, url = %redact_url(&spec.url),
            checked = held, "output added");
        let mut tracker =
            OutputTracker::new(now, Backoff::default(), STALL_TIMEOUT, LIVE_THRESHOLD);
        if let Some(check) = &mut check {
            check.begin(now);
            tracker = tracker.checked_before_connecting();
        }
        Ok(OutputBranch {
            spec,
            serial,
            tracker,
            tee: tee.clone(),
            tee_pad,
            elements,
            sink,
            block,
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
        let stats: gst::Structure = self.sink.property("stats");
        let u64_of = |name: &str| stats.get::<u64>(name).unwrap_or(0);
        let u32_of = |name: &str| u64::from(stats.get::<u32>(name).unwrap_or(0));
        Progress {
            written: u64_of("out-bytes-total"),
            acked: u64_of("out-bytes-acked"),
            ack_window: u32_of("in-window-ack-size").max(u32_of("out-window-ack-size")),
        }
    }

    /// Makes an error text safe to show: the URL's stream key never leaves this process.
    pub fn sanitize(&self, text: &str) -> String {
        let mut s = text.replace(&self.spec.url, &redact_url(&self.spec.url));
        if let Some(key) = self.spec.url.rsplit('/').next().filter(|k| k.len() >= 4) {
            s = s.replace(key, "***");
        }
        s
    }

    /// Drops buffers at the tee and shuts the branch down, keeping it for a restart.
    pub fn stop(&mut self) {
        if self.block.is_none() {
            let seen = Arc::new(AtomicBool::new(false));
            let seen2 = seen.clone();
            self.block = self.tee_pad.add_probe(
                gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
                move |_, _| {
                    seen2.store(true, Ordering::Release);
                    gst::PadProbeReturn::Drop
                },
            );
            // Once the probe has dropped one buffer, any push that was already past it has
            // finished (the tee pushes serially), so stopping the queue cannot hand the tee a
            // FLUSHING return that would stop the whole stream.
            let deadline = Instant::now() + Duration::from_millis(300);
            while !seen.load(Ordering::Acquire) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        for el in &self.elements {
            let _ = el.set_state(gst::State::Null);
        }
    }

    /// Brings a stopped branch back; the caller forces a keyframe so the server gets a clean
    /// start (flvmux's stream headers are resent by rtmp2sink on connect).
    pub fn restart(&mut self) {
        for el in self.elements.iter().rev() {
            // Built stopped (see `build`): from now on the branch follows the pipeline.
            el.set_locked_state(false);
            let _ = el.sync_state_with_parent();
        }
        if !self.tee_pad.is_linked() {
            // First start of a branch built stopped: link it now that the queue runs.
            let qpad = self.elements[0]
                .static_pad("sink")
                .expect("queue has a sink pad");
            if let Err(e) = self.tee_pad.link(&qpad) {
                tracing::error!(output = %self.spec.output_id, error = ?e, "cannot link the output");
            }
        }
        if let Some(id) = self.block.take() {
            self.tee_pad.remove_probe(id);
        }
    }

    /// Removes the branch from the pipeline for good.
    pub fn teardown(&mut self, pipeline: &gst::Pipeline) {
        if self.removed {
            return;
        }
        self.stop();
        if let Some(q) = self.elements[0].static_pad("sink") {
            let _ = self.tee_pad.unlink(&q);
        }
        if let Some(id) = self.block.take() {
            self.tee_pad.remove_probe(id);
        }
        self.tee.release_request_pad(&self.tee_pad);
        let _ = pipeline.remove_many(&self.elements);
        self.removed = true;
    }
}
