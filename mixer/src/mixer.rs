//! The mixer handle: owns one room's pipeline, applies commands, and runs a watcher thread that
//! turns bus messages, output statistics and keyframe requests into [`Event`]s.
//!
//! Locking: GStreamer streaming threads never take `State`'s lock (probes only count, send on
//! channels or take the quality probes' own locks, which nothing holds while taking another), so
//! holding it while changing element states cannot deadlock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::active_speaker::{ActiveSpeaker, SpeakerTuning};
use crate::bus::{classify_error, owner_of, ErrorAction, Owner};
use crate::control::{
    AudioMix, DestinationPolicy, Event, MediaKind, OutputBytes, OutputSpec, OutputState,
    RecordingState, VideoSpec,
};
use crate::error::MixerError;
use crate::gst_util::{force_key_unit_event, object_path, set_state_bounded};
use crate::inputs::{apply_placement, InputBranch, InputSpec};
use crate::keyframe::KeyframeThrottle;
use crate::layout::{place, LayoutSpec};
use crate::looks::Look;
use crate::output_state::OutputEffect;
use crate::outputs::OutputBranch;
use crate::pipeline::{build_core, pin_base_time, Core};
use crate::recording::RecordingBranch;
use crate::scene::{PadPlacement, Scene, Seat};

/// How often output statistics are polled (Live detection, stall detection, byte counts).
const STATS_INTERVAL: Duration = Duration::from_millis(500);
/// At most one keyframe request per input per this interval.
const KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);

/// A running room mix. Dropping it stops the pipeline (no orphan keeps pushing).
pub struct Mixer {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    watcher: Option<JoinHandle<()>>,
}

/// Tile placements waiting for the compositor's next frame, so a layout change never shows
/// half-moved tiles (every pad changes between the same two frames).
type PendingLayout = Arc<Mutex<Option<Vec<PadPlacement>>>>;

struct Shared {
    core: Core,
    video: VideoSpec,
    /// Address the inputs' udpsrcs bind (reported in `InputReady`).
    rtp_bind: std::net::IpAddr,
    events: Sender<Event>,
    keyframes_tx: Sender<u64>,
    pending_layout: PendingLayout,
    state: Mutex<State>,
}

struct State {
    /// In join order (layout order).
    inputs: Vec<InputBranch>,
    layout: LayoutSpec,
    speaker: ActiveSpeaker,
    /// Per participant; applies to its audio inputs, present and future.
    audio: HashMap<String, AudioMix>,
    next_serial: u64,
    outputs: Vec<OutputBranch>,
    /// Serial of the next output branch (element names), never reused.
    next_output_serial: usize,
    /// Where outputs may connect (from `Start`), checked before every connection.
    destinations: DestinationPolicy,
    throttle: KeyframeThrottle,
    /// Background, slates, labels, logo.
    scene: Scene,
    /// Recordings being written or closing.
    recordings: Vec<RecordingBranch>,
    /// Serial of the next recording branch (element names), never reused.
    next_recording_serial: usize,
}

impl Mixer {
    /// Builds the pipeline, adds every output, goes PLAYING. Events (starting with `Ready` and
    /// one `Output{Connecting}` per output) arrive on the returned receiver. Outputs connect
    /// wherever they say ([`DestinationPolicy::unrestricted`]): for tests and tools; serve's
    /// mixers get the room's policy through `Start` ([`Mixer::start_on`]).
    pub fn start(
        video: VideoSpec,
        outputs: Vec<OutputSpec>,
    ) -> Result<(Mixer, Receiver<Event>), MixerError> {
        Self::start_on(
            video,
            outputs,
            crate::control::DEFAULT_RTP_BIND,
            DestinationPolicy::unrestricted(),
        )
    }

    /// As [`Mixer::start`], with inputs receiving RTP on `rtp_bind` (a fleet worker's
    /// advertised address; loopback when serve and mixer share a machine) and every output's
    /// destination checked against `destinations` before each connection attempt.
    pub fn start_on(
        video: VideoSpec,
        outputs: Vec<OutputSpec>,
        rtp_bind: std::net::IpAddr,
        destinations: DestinationPolicy,
    ) -> Result<(Mixer, Receiver<Event>), MixerError> {
        gst::init().map_err(|e| MixerError::Init(e.to_string()))?;
        if video.width < 16 || video.height < 16 || video.width % 2 == 1 || video.height % 2 == 1 {
            return Err(MixerError::Invalid(format!(
                "canvas {}x{} must be even and at least 16x16",
                video.width, video.height
            )));
        }
        if video.fps == 0 || video.bitrate_kbps == 0 {
            return Err(MixerError::Invalid("fps and bitrate must be > 0".into()));
        }
        let core = build_core(&video)?;
        let now = Instant::now();
        let mut branches = Vec::new();
        let first_outputs = outputs.len();
        for (i, spec) in outputs.into_iter().enumerate() {
            branches.push(OutputBranch::build(
                &core.pipeline.0,
                &core.output_taps(),
                i,
                spec,
                &destinations,
                now,
            )?);
        }
        let (events, events_rx) = mpsc::channel();
        let (keyframes_tx, keyframes_rx) = mpsc::channel();
        let pending_layout = apply_layouts_between_frames(&core.compositor);
        let scene = Scene::new(&core.pipeline.0, &core.compositor, video)?;
        pin_base_time(&core.pipeline.0);
        set_state_bounded(
            core.pipeline.0.upcast_ref(),
            gst::State::Playing,
            Duration::from_secs(10),
        )?;
        let (version, binary) = crate::process::identity();
        let _ = events.send(Event::Ready { version, binary });
        for b in &branches {
            let _ = events.send(Event::Output {
                output_id: b.spec.output_id.clone(),
                state: OutputState::Connecting,
                reason: None,
                bytes_sent: 0,
            });
        }
        let shared = Arc::new(Shared {
            core,
            video,
            rtp_bind,
            events,
            keyframes_tx,
            pending_layout,
            state: Mutex::new(State {
                inputs: Vec::new(),
                layout: LayoutSpec::default(),
                speaker: ActiveSpeaker::new(SpeakerTuning::default()),
                audio: HashMap::new(),
                next_serial: 0,
                outputs: branches,
                next_output_serial: first_outputs,
                destinations,
                throttle: KeyframeThrottle::new(KEYFRAME_INTERVAL),
                scene,
                recordings: Vec::new(),
                next_recording_serial: 0,
            }),
        });
        // Places the "starting soon" slate: the room starts empty.
        shared.relayout(&mut shared.lock());
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let shared = shared.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("mixer-watch".into())
                .spawn(move || watch(&shared, &stop, &keyframes_rx))
                .map_err(|e| MixerError::Gst(format!("spawn watcher: {e}")))?
        };
        Ok((
            Mixer {
                shared,
                stop,
                watcher: Some(watcher),
            },
            events_rx,
        ))
    }

    /// Adds an RTP input; returns its UDP port (also reported as `InputReady`) and asks the
    /// publisher for a keyframe so the picture appears at once.
    pub fn add_input(&self, spec: InputSpec) -> Result<u16, MixerError> {
        let sh = &self.shared;
        let mut st = sh.lock();
        if st.inputs.iter().any(|i| i.spec.input_id == spec.input_id) {
            return Err(MixerError::Input {
                input_id: spec.input_id,
                reason: "already added".into(),
            });
        }
        let aggregator = match spec.codec.kind() {
            MediaKind::Video => &sh.core.compositor,
            MediaKind::Audio => &sh.core.audiomixer,
        };
        let serial = st.next_serial;
        st.next_serial += 1;
        let input_id = spec.input_id.clone();
        let branch = InputBranch::start(
            &sh.core.pipeline.0,
            aggregator,
            serial,
            spec,
            sh.rtp_bind,
            sh.keyframes_tx.clone(),
            &sh.core.quality,
        )
        .map_err(|e| match e {
            MixerError::Input { reason, .. } => MixerError::Input {
                input_id: input_id.clone(),
                reason,
            },
            other => other,
        })?;
        if let Some(audio) = st.audio.get(&branch.spec.participant_id) {
            branch.set_audio(*audio);
        }
        let port = branch.port;
        let kind = branch.kind();
        st.inputs.push(branch);
        sh.relayout(&mut st);
        tracing::info!(input = %input_id, port, "input added");
        sh.emit(Event::InputReady {
            input_id: input_id.clone(),
            rtp_port: port,
            rtp_addr: Some(std::net::SocketAddr::new(sh.rtp_bind, port)),
        });
        if kind == MediaKind::Video && st.throttle.allow(&input_id, Instant::now()) {
            sh.emit(Event::KeyframeRequest { input_id });
        }
        Ok(port)
    }

    /// Removes an input; its tile disappears and the layout closes up.
    pub fn remove_input(&self, input_id: &str) -> Result<(), MixerError> {
        let mut st = self.shared.lock();
        let pos = st
            .inputs
            .iter()
            .position(|i| i.spec.input_id == input_id)
            .ok_or_else(|| MixerError::Input {
                input_id: input_id.into(),
                reason: "no such input".into(),
            })?;
        self.shared.drop_input(&mut st, pos);
        Ok(())
    }

    /// Switches the layout while live; it takes effect on the next output frame.
    pub fn set_layout(&self, layout: LayoutSpec) -> Result<(), MixerError> {
        layout.validate().map_err(MixerError::Invalid)?;
        let mut st = self.shared.lock();
        tracing::info!(?layout, "layout");
        st.layout = layout;
        self.shared.relayout(&mut st);
        Ok(())
    }

    /// Switches the room's look (background, labels, logo, slate title) while live.
    pub fn set_look(&self, look: Look) -> Result<(), MixerError> {
        look.validate().map_err(MixerError::Invalid)?;
        let mut st = self.shared.lock();
        tracing::info!(labels = look.labels, background = %look.background,
            logo = look.logo.is_some(), "look");
        let result = st.scene.set_look(look);
        self.shared.relayout(&mut st);
        result
    }

    /// Sets a participant's gain/mute in the program, now and for its inputs added later.
    pub fn set_audio(&self, participant_id: &str, audio: AudioMix) -> Result<(), MixerError> {
        audio.validate().map_err(MixerError::Invalid)?;
        let mut st = self.shared.lock();
        for input in st
            .inputs
            .iter()
            .filter(|i| i.spec.participant_id == participant_id)
        {
            input.set_audio(audio);
        }
        st.audio.insert(participant_id.to_string(), audio);
        tracing::info!(participant = %participant_id, gain = audio.gain, muted = audio.muted, "audio mix");
        Ok(())
    }

    /// Starts pushing to one more destination while live. The branch joins the running tee
    /// and the encoder is asked for a keyframe, so the new server gets a decodable stream
    /// within a frame or two instead of up to a GOP later; the other outputs see no change
    /// except that one extra keyframe.
    pub fn add_output(&self, spec: OutputSpec) -> Result<(), MixerError> {
        let sh = &self.shared;
        let mut st = sh.lock();
        if st
            .outputs
            .iter()
            .any(|o| o.spec.output_id == spec.output_id)
        {
            return Err(MixerError::Invalid(format!(
                "output {} already exists",
                spec.output_id
            )));
        }
        let serial = st.next_output_serial;
        st.next_output_serial += 1;
        let branch = OutputBranch::build(
            &sh.core.pipeline.0,
            &sh.core.output_taps(),
            serial,
            spec,
            &st.destinations,
            Instant::now(),
        )?;
        sh.core.encoder.send_event(force_key_unit_event());
        sh.emit(Event::Output {
            output_id: branch.spec.output_id.clone(),
            state: OutputState::Connecting,
            reason: None,
            bytes_sent: 0,
        });
        st.outputs.push(branch);
        Ok(())
    }

    /// Stops pushing to one destination and removes its branch; the encode and the other
    /// outputs keep running (the tee only loses a pad).
    pub fn remove_output(&self, output_id: &str) -> Result<(), MixerError> {
        let sh = &self.shared;
        let mut st = sh.lock();
        let pos = st
            .outputs
            .iter()
            .position(|o| o.spec.output_id == output_id)
            .ok_or_else(|| MixerError::Invalid(format!("no output {output_id}")))?;
        let mut branch = st.outputs.remove(pos);
        branch.teardown(&sh.core.pipeline.0);
        tracing::info!(output = %output_id, "output removed");
        sh.emit(Event::OutputRemoved {
            output_id: output_id.to_string(),
        });
        Ok(())
    }

    /// Starts recording the program to `path` (fragmented MP4) from the next keyframe, which
    /// is forced now. Reported as `Event::Recording`; the broadcast is never affected.
    pub fn start_recording(
        &self,
        recording_id: &str,
        path: std::path::PathBuf,
    ) -> Result<(), MixerError> {
        let sh = &self.shared;
        let mut st = sh.lock();
        if st.recordings.iter().any(|r| r.recording_id == recording_id) {
            return Err(MixerError::Invalid(format!(
                "recording {recording_id} already exists"
            )));
        }
        let serial = st.next_recording_serial;
        st.next_recording_serial += 1;
        let branch = RecordingBranch::start(
            &sh.core.pipeline.0,
            &sh.core.video_tee,
            &sh.core.audio_tee,
            serial,
            recording_id.to_string(),
            path,
        )?;
        sh.core.encoder.send_event(force_key_unit_event());
        sh.emit(Event::Recording {
            recording_id: recording_id.to_string(),
            state: RecordingState::Recording,
            reason: None,
            bytes_written: 0,
        });
        st.recordings.push(branch);
        Ok(())
    }

    /// Begins closing a recording; `Event::Recording` `stopped` follows once its file is
    /// complete (within `recording::STOP_TIMEOUT`).
    pub fn stop_recording(&self, recording_id: &str) -> Result<(), MixerError> {
        let mut st = self.shared.lock();
        let rec = st
            .recordings
            .iter_mut()
            .find(|r| r.recording_id == recording_id)
            .ok_or_else(|| MixerError::Invalid(format!("no recording {recording_id}")))?;
        rec.begin_stop(Instant::now());
        Ok(())
    }

    /// The participant currently featured by voice.
    pub fn active_speaker(&self) -> Option<String> {
        self.shared.lock().speaker.current().map(str::to_string)
    }

    /// The periodic progress report. Its latency figures cover the frames since the previous
    /// call (which starts a new window): call it once per heartbeat period.
    pub fn heartbeat(&self) -> Event {
        let st = self.shared.lock();
        Event::Heartbeat {
            frames_out: self.shared.core.frames_out.load(Ordering::Relaxed),
            outputs: st
                .outputs
                .iter()
                .map(|o| OutputBytes {
                    output_id: o.spec.output_id.clone(),
                    bytes_sent: o.tracker.bytes_sent(),
                })
                .collect(),
            quality: Some(self.shared.core.quality.report(Instant::now())),
        }
    }

    /// Current state of each output (for tests and diagnostics).
    pub fn output_states(&self) -> Vec<(String, OutputState)> {
        let st = self.shared.lock();
        st.outputs
            .iter()
            .map(|o| (o.spec.output_id.clone(), o.tracker.state()))
            .collect()
    }

    /// Sends EOS so RTMP servers see a clean unpublish, waits (bounded) for it, then stops.
    pub fn shutdown(mut self) {
        self.stop_watcher();
        self.shared.lock().scene.clear();
        // A recording closing on its own is cut off from the tees already and keeps its EOS
        // from the pipeline: it would never count as done, and the EOS wait would time out.
        {
            let mut st = self.shared.lock();
            let (closing, running): (Vec<_>, Vec<_>) =
                st.recordings.drain(..).partition(|r| r.is_stopping());
            st.recordings = running;
            for mut rec in closing {
                rec.teardown(&self.shared.core.pipeline.0);
                self.shared.emit(recording_closed(&rec));
            }
        }
        let pipeline = &self.shared.core.pipeline.0;
        pipeline.send_event(gst::event::Eos::new());
        if let Some(bus) = pipeline.bus() {
            let _ = bus.timed_pop_filtered(
                gst::ClockTime::from_seconds(2),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            );
        }
        let _ = pipeline.set_state(gst::State::Null);
        // The EOS went through every recording too: their files are closed.
        for rec in self.shared.lock().recordings.drain(..) {
            self.shared.emit(recording_closed(&rec));
        }
        tracing::info!("mixer shut down");
    }

    fn stop_watcher(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.watcher.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Mixer {
    fn drop(&mut self) {
        self.stop_watcher();
        // PipelineGuard sets NULL when the last Arc goes (the watcher's is gone now).
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves branches in a usable state; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, ev: Event) {
        let _ = self.events.send(ev);
    }

    /// Computes every video pad's tile for the current layout, participants and speaker, and
    /// hands the batch to the compositor thread (applied before its next frame). A participant
    /// with several video inputs shows the first one.
    ///
    /// Every participant gets a tile, with or without video (then the scene puts a slate there),
    /// so the layout counts people, not cameras.
    fn relayout(&self, st: &mut State) {
        let mut participants: Vec<&str> = Vec::new();
        for input in &st.inputs {
            let id = input.spec.participant_id.as_str();
            if !participants.contains(&id) {
                participants.push(id);
            }
        }
        let placements = place(
            self.video.width,
            self.video.height,
            &participants,
            &st.layout,
            st.speaker.current(),
        );
        let mut batch = Vec::new();
        let mut seats = Vec::new();
        for (id, tile) in participants.iter().zip(placements) {
            let mine = || st.inputs.iter().filter(|i| i.spec.participant_id == *id);
            let mut videos = mine().filter_map(InputBranch::video_pad);
            let video = videos.next().cloned();
            // Further cameras of the same participant stay hidden.
            batch.extend(videos.map(|pad| (pad.clone(), None)));
            let display_name = mine()
                .map(|i| i.spec.display_name.as_str())
                .find(|n| !n.trim().is_empty())
                .unwrap_or("");
            seats.push(Seat {
                participant_id: id,
                display_name,
                video,
                tile,
            });
        }
        batch.extend(st.scene.arrange(&seats));
        *self
            .pending_layout
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(batch);
    }

    /// One `level` reading of an audio input: may change the active speaker (and the tiles).
    fn on_level(&self, serial: u64, rms_db: f64, now: Instant) {
        let mut st = self.lock();
        let Some(pid) = st
            .inputs
            .iter()
            .find(|i| i.serial == serial)
            .map(|i| i.spec.participant_id.clone())
        else {
            return;
        };
        if let Some(speaker) = st.speaker.update(now, &pid, rms_db) {
            tracing::debug!(participant = %speaker, "active speaker");
            self.relayout(&mut st);
            self.emit(Event::ActiveSpeaker {
                participant_id: Some(speaker),
            });
        }
    }

    fn drop_input(&self, st: &mut State, pos: usize) {
        let branch = st.inputs.remove(pos);
        let input_id = branch.spec.input_id.clone();
        let participant = branch.spec.participant_id.clone();
        let was_audio = branch.kind() == MediaKind::Audio;
        let serial = branch.serial;
        branch.remove(&self.core.pipeline.0);
        // After the branch stopped: no probe of it runs any more.
        self.core.quality.forget_input(serial);
        st.throttle.forget(&input_id);
        let still_heard = st
            .inputs
            .iter()
            .any(|i| i.kind() == MediaKind::Audio && i.spec.participant_id == participant);
        if was_audio && !still_heard && st.speaker.forget(&participant) {
            self.emit(Event::ActiveSpeaker {
                participant_id: None,
            });
        }
        self.relayout(st);
        tracing::info!(input = %input_id, "input removed");
        self.emit(Event::InputRemoved { input_id });
    }

    fn apply_output_effects(&self, st: &mut State, idx: usize, effects: Vec<OutputEffect>) {
        for fx in effects {
            let out = &mut st.outputs[idx];
            match fx {
                OutputEffect::Report { state, reason } => {
                    tracing::info!(output = %out.spec.output_id, ?state, ?reason, "output state");
                    self.emit(Event::Output {
                        output_id: out.spec.output_id.clone(),
                        state,
                        reason,
                        bytes_sent: out.tracker.bytes_sent(),
                    });
                }
                OutputEffect::Stop => out.stop(),
                OutputEffect::Restart => {
                    out.restart();
                    // The server must start on a keyframe, not wait up to a GOP.
                    self.core.encoder.send_event(force_key_unit_event());
                }
                OutputEffect::Teardown => out.teardown(&self.core.pipeline.0),
                OutputEffect::Check => out.begin_check(Instant::now()),
            }
        }
    }

    /// Hands each finished destination check to its output (connect, or stay stopped).
    fn poll_checks(&self, now: Instant) {
        let mut st = self.lock();
        for idx in 0..st.outputs.len() {
            if let Some(verdict) = st.outputs[idx].poll_check(now) {
                let fx = st.outputs[idx].tracker.on_check(now, verdict);
                self.apply_output_effects(&mut st, idx, fx);
            }
        }
    }

    fn on_error(&self, msg: &gst::message::Error) {
        let path = msg.src().map(object_path).unwrap_or_default();
        let refs: Vec<&str> = path.iter().map(String::as_str).collect();
        // The human-readable part only; the debug string (source file, element path) is logged.
        let text = msg.error().to_string();
        tracing::debug!(debug = ?msg.debug(), "error details");
        let mut st = self.lock();
        match classify_error(&refs) {
            ErrorAction::Output(serial) => {
                // A removed output's last words: nothing left to reset.
                let Some(idx) = st.outputs.iter().position(|o| o.serial == serial) else {
                    tracing::debug!(serial, "error from a removed output, ignored");
                    return;
                };
                let reason = st.outputs[idx].sanitize(&text);
                tracing::warn!(output = %st.outputs[idx].spec.output_id, %reason, "output error");
                let fx = st.outputs[idx].tracker.on_error(Instant::now(), reason);
                self.apply_output_effects(&mut st, idx, fx);
            }
            ErrorAction::Recording(serial) => {
                let Some(pos) = st.recordings.iter().position(|r| r.serial == serial) else {
                    tracing::debug!(serial, "error from a removed recording, ignored");
                    return;
                };
                let mut rec = st.recordings.remove(pos);
                rec.teardown(&self.core.pipeline.0);
                let reason = format!("writing {} failed: {text}", rec.path.display());
                tracing::warn!(recording = %rec.recording_id, %reason, "recording failed");
                self.emit(Event::Recording {
                    recording_id: rec.recording_id.clone(),
                    state: RecordingState::Failed,
                    reason: Some(reason),
                    bytes_written: rec.bytes_written(),
                });
            }
            ErrorAction::DropLook(serial) => {
                tracing::warn!(still = serial, error = %text, "look element failed, removing it");
                if st.scene.drop_serial(serial) {
                    self.relayout(&mut st);
                }
            }
            ErrorAction::DropInput(serial) => {
                if let Some(pos) = st.inputs.iter().position(|i| i.serial == serial) {
                    tracing::warn!(input = %st.inputs[pos].spec.input_id, error = %text,
                        "input error, dropping input");
                    self.drop_input(&mut st, pos);
                }
            }
            _ => {
                tracing::error!(source = ?refs, error = %text, "fatal pipeline error");
                self.emit(Event::Fatal {
                    reason: format!("{}: {}", refs.first().unwrap_or(&"?"), msg.error()),
                });
            }
        }
    }

    /// Removes the recordings whose stop finished and says so.
    fn poll_recordings(&self, now: Instant) {
        let mut st = self.lock();
        while let Some(pos) = st.recordings.iter().position(|r| r.stop_done(now)) {
            let mut rec = st.recordings.remove(pos);
            rec.teardown(&self.core.pipeline.0);
            tracing::info!(recording = %rec.recording_id, bytes = rec.bytes_written(),
                complete = rec.completed(), "recording stopped");
            self.emit(recording_closed(&rec));
        }
    }

    fn poll_outputs(&self, now: Instant) {
        let mut st = self.lock();
        for idx in 0..st.outputs.len() {
            let out = &st.outputs[idx];
            let progress = out.tracker.is_running().then(|| out.progress());
            let fx = st.outputs[idx].tracker.tick(now, progress);
            self.apply_output_effects(&mut st, idx, fx);
        }
    }

    /// Inputs whose first frame has left the muxer (a removed one says nothing).
    fn report_visible(&self) {
        let serials = self.core.quality.take_visible();
        if serials.is_empty() {
            return;
        }
        let st = self.lock();
        for serial in serials {
            if let Some(input) = st.inputs.iter().find(|i| i.serial == serial) {
                let input_id = input.spec.input_id.clone();
                tracing::info!(input = %input_id, "input visible in the program");
                self.emit(Event::InputVisible { input_id });
            }
        }
    }

    fn on_keyframe_request(&self, serial: u64, now: Instant) {
        let mut st = self.lock();
        let Some(id) = st
            .inputs
            .iter()
            .find(|i| i.serial == serial)
            .map(|i| i.spec.input_id.clone())
        else {
            return;
        };
        if st.throttle.allow(&id, now) {
            tracing::debug!(input = %id, "keyframe request");
            self.emit(Event::KeyframeRequest { input_id: id });
        }
    }
}

/// The watcher loop: bus messages, keyframe requests and output polling until `stop` or a
/// fatal error.
fn watch(shared: &Shared, stop: &AtomicBool, keyframes: &Receiver<u64>) {
    let Some(bus) = shared.core.pipeline.0.bus() else {
        shared.emit(Event::Fatal {
            reason: "pipeline has no bus".into(),
        });
        return;
    };
    let mut next_poll = Instant::now();
    while !stop.load(Ordering::Acquire) {
        if let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(50)) {
            match msg.view() {
                gst::MessageView::Error(e) => {
                    shared.on_error(e);
                    if is_core_error(e) {
                        return;
                    }
                }
                gst::MessageView::Warning(w) => {
                    let src = w.src().map(|s| s.name().to_string()).unwrap_or_default();
                    tracing::warn!(source = %src, warning = %w.error(), "pipeline warning");
                }
                gst::MessageView::Element(m) => {
                    if let Some((serial, db)) = level_reading(m) {
                        shared.on_level(serial, db, Instant::now());
                    }
                }
                gst::MessageView::Eos(_) => {
                    shared.emit(Event::Fatal {
                        reason: "pipeline reached end of stream unexpectedly".into(),
                    });
                    return;
                }
                _ => {}
            }
        }
        let now = Instant::now();
        while let Ok(serial) = keyframes.try_recv() {
            shared.on_keyframe_request(serial, now);
        }
        shared.report_visible();
        shared.poll_checks(now);
        shared.poll_recordings(now);
        if now >= next_poll {
            next_poll = now + STATS_INTERVAL;
            shared.poll_outputs(now);
        }
    }
}

/// How a recording that is no longer written ended.
fn recording_closed(rec: &RecordingBranch) -> Event {
    let reason = (!rec.completed())
        .then(|| "closed before its last fragment was written (the file plays up to it)".into());
    Event::Recording {
        recording_id: rec.recording_id.clone(),
        state: RecordingState::Stopped,
        reason,
        bytes_written: rec.bytes_written(),
    }
}

/// The loudest channel's RMS (dBFS) of an input's `level` message, with the input's serial.
fn level_reading(m: &gst::message::Element) -> Option<(u64, f64)> {
    let s = m.structure()?;
    if s.name() != "level" {
        return None;
    }
    let Owner::Input(serial) = owner_of(&m.src()?.name()) else {
        return None;
    };
    let rms = s.get::<gst::glib::ValueArray>("rms").ok()?;
    let loudest = rms
        .iter()
        .filter_map(|v| v.get::<f64>().ok())
        .fold(f64::NEG_INFINITY, f64::max);
    Some((serial, loudest))
}

/// Turns on the compositor's `samples-selected` signal and applies pending placements from it:
/// it fires on the streaming thread right before each output frame is composed.
fn apply_layouts_between_frames(compositor: &gst::Element) -> PendingLayout {
    let pending: PendingLayout = Arc::new(Mutex::new(None));
    compositor.set_property("emit-signals", true);
    let slot = pending.clone();
    compositor.connect("samples-selected", false, move |_| {
        let batch = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        for (pad, placement) in batch.into_iter().flatten() {
            apply_placement(&pad, placement);
        }
        None
    });
    pending
}

fn is_core_error(e: &gst::message::Error) -> bool {
    let path = e.src().map(object_path).unwrap_or_default();
    let refs: Vec<&str> = path.iter().map(String::as_str).collect();
    classify_error(&refs) == ErrorAction::Fatal
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use gstreamer as gst;
    use gstreamer::prelude::*;

    use super::Mixer;
    use crate::control::{Codec, VideoSpec};
    use crate::inputs::InputSpec;
    use crate::pipeline::INPUT_LATENCY;

    /// The stills (here the "starting soon" slate) must leave the compositor a valid live
    /// latency next to an input whose minimum latency is above one frame (its jitterbuffer).
    /// An impossible one (max < min) made the compositor wait for data on every pad, so a
    /// camera that had not sent anything yet held back the room's first frame for seconds.
    #[test]
    fn stills_keep_the_compositor_latency_valid_next_to_a_silent_input() {
        let video = VideoSpec {
            width: 320,
            height: 180,
            fps: 15,
            bitrate_kbps: 300,
        };
        let (mixer, _events) = Mixer::start(video, vec![]).expect("mixer starts");
        mixer
            .add_input(InputSpec {
                input_id: "v1".into(),
                participant_id: "p1".into(),
                display_name: String::new(),
                codec: Codec::Vp8,
                payload_type: 96,
                clock_rate: 90_000,
            })
            .expect("input added");
        let slate = mixer
            .shared
            .lock()
            .scene
            .idle_pad()
            .cloned()
            .expect("the idle slate exists");
        // Once the slate has caps, its imagefreeze reports a frame-based latency.
        costream_testkit::wait_for(Instant::now() + Duration::from_secs(5), || {
            slate.current_caps()
        })
        .expect("the slate negotiated");
        let mut query = gst::query::Latency::new();
        let answered = mixer
            .shared
            .core
            .compositor
            .static_pad("src")
            .expect("compositor src pad")
            .query(&mut query);
        assert!(answered, "the compositor's latency is impossible");
        let (live, min, _max) = query.result();
        assert!(live);
        assert!(min.nseconds() >= INPUT_LATENCY.as_nanos() as u64, "{min}");
        mixer.shutdown();
    }

    /// serve-side code may move a Mixer into a thread or share it behind an Arc.
    #[test]
    fn mixer_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<super::Mixer>();
        assert_send_sync::<crate::synth::SynthVideo>();
    }
}
