//! Recording the program to a file (IO): a branch on the parsed H.264 and AAC tees that muxes
//! fragmented MP4 and writes it with `filesink`. Nothing is re-encoded.
//!
//! ```text
//! video-tee → queue → h264parse → avc caps ─┐
//!                                            ├→ mp4mux (fragmented) → errorignore → filesink
//! audio-tee → queue ─────────────────────────┘
//! ```
//!
//! Why fragmented MP4: every fragment (`moof` + `mdat`, about one a second) is complete on disk
//! once written, so a mixer killed mid-recording leaves a file that plays up to its last whole
//! fragment (a torn last fragment is cut off by serve, see `recordings::repair`); a plain MP4
//! is unplayable without the `moov` written at the end. Browsers and every player play it.
//!
//! A recording's failure (disk full, a write error) stops this branch alone: the queues are
//! leaky and `errorignore` keeps the muxer's flow OK, so the tees and the outputs never notice;
//! the filesink's ERROR on the bus names the branch (`rec{n}-…`) and the mixer tears it down.
//! A stop sends EOS through the branch so the muxer closes the last fragment and the file's
//! header gets its duration, then the branch is removed.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::bus::recording_element;
use crate::error::MixerError;
use crate::gst_util::{capsfilter, link_chain, link_to_pad, make, request_pad};
use crate::srt_output::KeyframeGate;

/// Where a mixer may write recordings: set by its parent (serve or a fleet worker) to a
/// directory of its own. Unset: the mixer refuses to record.
pub const RECORDINGS_DIR_ENV: &str = "COSTREAM_MIXER_RECORDINGS_DIR";

/// One fragment per second: what a crash can lose at most (plus the file system's own
/// buffering), at the cost of a `moof` box (~100 bytes per track) per second.
const FRAGMENT_MS: u32 = 1000;

/// A stop waits this long for the muxer to write its last fragment; then the branch is torn
/// down anyway (the file stays playable up to the last whole fragment).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// Resolves `file` (as serve names it: `room/part.mp4`, relative) under `dir`. Anything that
/// could leave the directory — absolute paths, `..`, empty names — is refused: a peer on the
/// control channel picks file names, never paths.
pub fn resolve_file(dir: &Path, file: &str) -> Result<PathBuf, String> {
    let rel = Path::new(file);
    let normal = rel.components().all(|c| matches!(c, Component::Normal(_)));
    if file.is_empty() || !normal || !file.ends_with(".mp4") || file.len() > 200 {
        return Err(format!(
            "recording file name {file:?} is not a relative .mp4 name under the recordings directory"
        ));
    }
    Ok(dir.join(rel))
}

/// One recording in progress, or stopping.
pub struct RecordingBranch {
    pub recording_id: String,
    /// Names this branch's elements (`rec{serial}-…`), never reused within a mixer.
    pub serial: usize,
    pub path: PathBuf,
    taps: Vec<(gst::Element, gst::Pad, gst::Element)>,
    elements: Vec<gst::Element>,
    /// Bytes handed to the file so far.
    written: Arc<AtomicU64>,
    /// The stop's EOS reached the file.
    finished: Arc<AtomicBool>,
    /// The branch stops while the program goes on (its EOS must not reach the pipeline).
    stopping_alone: Arc<AtomicBool>,
    /// When a stop began (EOS sent): the branch goes once `finished` or after [`STOP_TIMEOUT`].
    stopping_since: Option<Instant>,
}

impl RecordingBranch {
    /// Builds the branch into a running `pipeline`, links it to the tees and starts writing
    /// `path` (created with its directory; an existing file is replaced). The caller forces a
    /// keyframe: the file starts at the first one.
    pub fn start(
        pipeline: &gst::Pipeline,
        video_tee: &gst::Element,
        audio_tee: &gst::Element,
        serial: usize,
        recording_id: String,
        path: PathBuf,
    ) -> Result<RecordingBranch, MixerError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                MixerError::Invalid(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let name = |part: &str| recording_element(serial, part);
        let video_queue = leaky_queue(&name("vqueue"))?;
        let parse = make("h264parse", &name("h264parse"))?;
        let caps = capsfilter(
            &name("h264caps"),
            gst::Caps::builder("video/x-h264")
                .field("stream-format", "avc")
                .field("alignment", "au")
                .build(),
        )?;
        let audio_queue = leaky_queue(&name("aqueue"))?;
        let mux = make("mp4mux", &name("mux"))?;
        mux.set_property("fragment-duration", FRAGMENT_MS);
        // The file's own write error is the one to report, not the muxer's "streaming
        // stopped" for the same cause; and the muxer must never hand the tees an error.
        let ignore = make("errorignore", &name("ignore"))?;
        ignore.set_property_from_str("convert-to", "ok");
        let sink = make("filesink", &name("sink"))?;
        sink.set_property("location", path.to_string_lossy().as_ref());
        // Each fragment goes to the kernel as the muxer hands it over: a killed mixer loses
        // no whole fragment to a user-space buffer (64 KiB by default, ~0.2 s of program).
        sink.set_property_from_str("buffer-mode", "unbuffered");
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
        let mut taps = Vec::new();
        let built = (|| {
            link_chain(&[&video_queue, &parse, &caps])?;
            link_to_pad(&caps, &request_pad(&mux, "video_%u")?)?;
            link_to_pad(&audio_queue, &request_pad(&mux, "audio_%u")?)?;
            link_chain(&[&mux, &ignore, &sink])?;
            for el in elements.iter().rev() {
                el.sync_state_with_parent()
                    .map_err(|e| MixerError::Gst(format!("recording {serial} to PLAYING: {e}")))?;
            }
            // Linked only once running, as for outputs: a tee must never push into a
            // flushing queue (that would stop the stream for everyone).
            for (tee, entry) in [(video_tee, &video_queue), (audio_tee, &audio_queue)] {
                let pad = request_pad(tee, "src_%u")?;
                let sinkpad = entry.static_pad("sink").expect("a queue has a sink pad");
                let linked = pad.link(&sinkpad);
                taps.push((tee.clone(), pad, entry.clone()));
                linked.map_err(|e| MixerError::Link {
                    from: format!("{}: {e:?}", tee.name()),
                    to: entry.name().to_string(),
                })?;
            }
            Ok(())
        })();
        if let Err(e) = built {
            unlink_taps(&taps);
            for el in elements.iter().rev() {
                let _ = el.set_state(gst::State::Null);
            }
            let _ = pipeline.remove_many(&elements);
            return Err(e);
        }
        if let Some(pad) = video_queue.static_pad("src") {
            KeyframeGate::default().attach(&pad);
        }
        let written = Arc::new(AtomicU64::new(0));
        let finished = Arc::new(AtomicBool::new(false));
        let stopping_alone = Arc::new(AtomicBool::new(false));
        watch_file_pad(
            &sink,
            written.clone(),
            finished.clone(),
            stopping_alone.clone(),
        );
        tracing::info!(recording = %recording_id, path = %path.display(), "recording started");
        Ok(RecordingBranch {
            recording_id,
            serial,
            path,
            taps,
            elements,
            written,
            finished,
            stopping_alone,
            stopping_since: None,
        })
    }

    pub fn bytes_written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping_since.is_some()
    }

    /// Begins a clean stop: the tees stop feeding the branch and EOS goes down both chains,
    /// so the muxer writes its last fragment. Poll [`RecordingBranch::stop_done`].
    pub fn begin_stop(&mut self, now: Instant) {
        if self.stopping_since.is_some() {
            return;
        }
        self.stopping_since = Some(now);
        self.stopping_alone.store(true, Ordering::Release);
        unlink_taps(&self.taps);
        self.taps.clear();
        for entry in [&self.elements[0], &self.elements[3]] {
            if let Some(pad) = entry.static_pad("sink") {
                pad.send_event(gst::event::Eos::new());
            }
        }
    }

    /// Whether a stop has finished (the file is complete) or waited long enough.
    pub fn stop_done(&self, now: Instant) -> bool {
        match self.stopping_since {
            Some(since) => {
                self.finished.load(Ordering::Acquire) || now.duration_since(since) >= STOP_TIMEOUT
            }
            None => false,
        }
    }

    /// Whether the stop's EOS reached the file (false: cut short by the timeout or an error).
    pub fn completed(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Removes the branch for good (after a stop, or at once after a write error).
    pub fn teardown(&mut self, pipeline: &gst::Pipeline) {
        unlink_taps(&self.taps);
        self.taps.clear();
        let elements = std::mem::take(&mut self.elements);
        // Downstream first: the sink letting go makes everything upstream of it flush.
        for el in elements.iter().rev() {
            let _ = el.set_state(gst::State::Null);
        }
        let _ = pipeline.remove_many(&elements);
    }
}

/// A leaky queue: a slow disk must never back-pressure the encoder (frames are dropped from
/// the recording instead, which the file shows as a gap).
fn leaky_queue(name: &str) -> Result<gst::Element, MixerError> {
    let queue = make("queue", name)?;
    queue.set_property_from_str("leaky", "downstream");
    queue.set_property("max-size-time", 4_000_000_000u64);
    queue.set_property("max-size-buffers", 0u32);
    queue.set_property("max-size-bytes", 0u32);
    Ok(queue)
}

/// Releases the tee pads feeding the branch. A tee pushes serially and unlinking waits for a
/// push in progress, so nothing reaches the branch afterwards.
fn unlink_taps(taps: &[(gst::Element, gst::Pad, gst::Element)]) {
    for (tee, pad, entry) in taps {
        if let Some(sinkpad) = entry.static_pad("sink") {
            let _ = pad.unlink(&sinkpad);
        }
        tee.release_request_pad(pad);
    }
}

/// Counts the bytes reaching the file and notes the EOS that ends it. The EOS of the branch's
/// own stop (`alone`) goes no further: a sink that got one posts it, and with no other sink
/// left (a room whose outputs were all removed) the pipeline would say "end of stream" for the
/// whole program. Taking the sink to NULL afterwards flushes and closes the file just the same.
/// The pipeline's own EOS (the mixer shutting down) passes: its shutdown waits for every sink.
fn watch_file_pad(
    sink: &gst::Element,
    written: Arc<AtomicU64>,
    finished: Arc<AtomicBool>,
    alone: Arc<AtomicBool>,
) {
    let Some(pad) = sink.static_pad("sink") else {
        return;
    };
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            let is_eos = match &info.data {
                Some(gst::PadProbeData::Buffer(buf)) => {
                    written.fetch_add(buf.size() as u64, Ordering::Relaxed);
                    false
                }
                Some(gst::PadProbeData::Event(ev)) => ev.type_() == gst::EventType::Eos,
                _ => false,
            };
            if !is_eos {
                return gst::PadProbeReturn::Ok;
            }
            finished.store(true, Ordering::Release);
            if !alone.load(Ordering::Acquire) {
                return gst::PadProbeReturn::Ok;
            }
            // Handled, not Drop: the probe owns the event now and lets it go (dropping an
            // event through the bindings made GStreamer unref it a second time).
            drop(info.data.take());
            gst::PadProbeReturn::Handled
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_stay_inside_the_recordings_directory() {
        let dir = Path::new("/data/recordings");
        assert_eq!(
            resolve_file(dir, "room1/rec-1-p1.mp4").unwrap(),
            dir.join("room1/rec-1-p1.mp4")
        );
        for bad in [
            "",
            "/etc/passwd.mp4",
            "../x.mp4",
            "room/../../x.mp4",
            "room/x.txt",
        ] {
            assert!(resolve_file(dir, bad).is_err(), "{bad:?} accepted");
        }
        assert!(resolve_file(dir, &format!("{}.mp4", "a".repeat(300))).is_err());
    }
}
