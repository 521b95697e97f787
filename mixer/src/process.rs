//! `costream mixer`: the child-process body. Commands arrive as JSON lines on stdin, events
//! leave as JSON lines on stdout (one flush per line); logs go to stderr.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::control::{decode_line, encode_line, Command, Event};
use crate::inputs::InputSpec;
use crate::mixer::Mixer;

const HEARTBEAT: Duration = Duration::from_secs(1);

enum Msg {
    Cmd(Command),
    StdinClosed,
    Event(Event),
}

/// Runs the mixer protocol on stdio until `Shutdown` (exit 0), stdin EOF (serve died: stop and
/// exit 0, never leave an orphan pushing), or a fatal error (exit 1).
pub fn run_stdio() -> ExitCode {
    let (tx, rx) = mpsc::channel::<Msg>();
    let stdin_tx = tx.clone();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            if let Some(cmd) = parse_command(&line) {
                if stdin_tx.send(Msg::Cmd(cmd)).is_err() {
                    return;
                }
            }
        }
        let _ = stdin_tx.send(Msg::StdinClosed);
    });
    let mut out = std::io::stdout().lock();
    // Warm up before anything is asked of us: serve keeps this process in its warm pool and a
    // later `Start` then costs only the pipeline, not GStreamer's init and plugin loading.
    if let Err(reason) = warm_up() {
        tracing::error!(%reason, "mixer cannot initialize GStreamer");
        write_event(&mut out, &Event::Fatal { reason });
        return ExitCode::FAILURE;
    }
    let settings = match settings_from_env() {
        Ok(settings) => settings,
        Err(reason) => {
            tracing::error!(%reason, "mixer cannot start");
            write_event(&mut out, &Event::Fatal { reason });
            return ExitCode::FAILURE;
        }
    };
    let (version, binary) = identity();
    let hello = Event::Hello {
        version,
        binary,
        protocol: crate::control::PROTOCOL_VERSION,
    };
    if !write_event(&mut out, &hello) {
        return ExitCode::SUCCESS;
    }
    let code = run_loop(&rx, &tx, &mut out, &settings);
    let _ = out.flush();
    code
}

/// Elements a room's pipeline may use; loading their plugins is most of a cold start.
const WARM_ELEMENTS: &[&str] = &[
    "compositor",
    "audiomixer",
    "x264enc",
    "avenc_aac",
    "flvmux",
    "rtmp2sink",
    "tee",
    "queue",
    "errorignore",
    "udpsrc",
    "rtpjitterbuffer",
    "rtpvp8depay",
    "rtph264depay",
    "rtpopusdepay",
    "avdec_vp8",
    "avdec_h264",
    "opusdec",
    "videoconvert",
    "videoscale",
    "audioconvert",
    "audioresample",
    "videotestsrc",
    "audiotestsrc",
    "capsfilter",
    "h264parse",
    "aacparse",
    // The room's look (`stills`): the idle slate is drawn at every `Start`.
    "textoverlay",
    "imagefreeze",
    "dataurisrc",
    "pngdec",
];

/// Initializes GStreamer and loads every plugin a room needs. A missing one is not an error
/// here: the pipeline build names it precisely when (and if) a room needs it.
fn warm_up() -> Result<(), String> {
    gstreamer::init().map_err(|e| e.to_string())?;
    for name in WARM_ELEMENTS {
        if let Some(factory) = gstreamer::ElementFactory::find(name) {
            let _ = gstreamer::prelude::PluginFeatureExtManual::load(&factory);
        }
    }
    Ok(())
}

/// What the parent (serve, or a fleet worker) set for this mixer.
#[derive(Debug, Clone)]
struct ProcessSettings {
    /// Where inputs receive RTP.
    rtp_bind: std::net::IpAddr,
    /// Stop when the parent is silent this long (see [`crate::control::WATCHDOG_ENV`]).
    watchdog: Option<Duration>,
    /// Where recordings go (see [`crate::recording::RECORDINGS_DIR_ENV`]); none: refused.
    recordings_dir: Option<std::path::PathBuf>,
}

impl Default for ProcessSettings {
    fn default() -> Self {
        Self {
            rtp_bind: crate::control::DEFAULT_RTP_BIND,
            watchdog: None,
            recordings_dir: None,
        }
    }
}

fn settings_from_env() -> Result<ProcessSettings, String> {
    use crate::control::{RTP_BIND_ENV, WATCHDOG_ENV};
    let mut settings = ProcessSettings::default();
    if let Ok(value) = std::env::var(RTP_BIND_ENV) {
        settings.rtp_bind = value
            .parse()
            .map_err(|e| format!("{RTP_BIND_ENV}={value:?} is not an IP address: {e}"))?;
    }
    if let Ok(value) = std::env::var(WATCHDOG_ENV) {
        let ms: u64 = value
            .parse()
            .map_err(|e| format!("{WATCHDOG_ENV}={value:?} is not milliseconds: {e}"))?;
        settings.watchdog = Some(Duration::from_millis(ms.max(100)));
    }
    settings.recordings_dir = std::env::var_os(crate::recording::RECORDINGS_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from);
    Ok(settings)
}

/// This mixer build: crate version and the path of the running executable.
pub fn identity() -> (String, String) {
    let binary = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    (env!("CARGO_PKG_VERSION").to_string(), binary)
}

/// One stdin line → a command; a malformed one is logged (without its content, which may hold
/// a stream key) and skipped.
fn parse_command(line: &str) -> Option<Command> {
    match decode_line::<Command>(line) {
        Ok(cmd) => Some(cmd),
        Err(e) => {
            tracing::warn!(error = %e, "ignoring malformed control line");
            None
        }
    }
}

fn write_event(out: &mut impl Write, ev: &Event) -> bool {
    out.write_all(encode_line(ev).as_bytes())
        .and_then(|_| out.flush())
        .is_ok()
}

fn run_loop(
    rx: &mpsc::Receiver<Msg>,
    tx: &mpsc::Sender<Msg>,
    out: &mut impl Write,
    settings: &ProcessSettings,
) -> ExitCode {
    let mut mixer: Option<Mixer> = None;
    let mut next_heartbeat = Instant::now() + HEARTBEAT;
    let mut last_word = Instant::now();
    loop {
        if let Some(limit) = settings.watchdog {
            if mixer.is_some() && last_word.elapsed() > limit {
                tracing::warn!(
                    silent_ms = last_word.elapsed().as_millis() as u64,
                    "no word from the worker: stopping this mixer (the room has moved on)"
                );
                return stop(mixer, "watchdog", ExitCode::SUCCESS);
            }
        }
        // A warm mixer waiting for `Start` sleeps until a command comes: a warm pool costs no
        // CPU. Heartbeats start with the room.
        let msg = if mixer.is_none() {
            Some(rx.recv().unwrap_or(Msg::StdinClosed))
        } else {
            let wait = next_heartbeat.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(m) => Some(m),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => Some(Msg::StdinClosed),
            }
        };
        if mixer.is_some() && Instant::now() >= next_heartbeat {
            next_heartbeat += HEARTBEAT;
            let hb = match &mixer {
                Some(m) => m.heartbeat(),
                None => Event::Heartbeat {
                    frames_out: 0,
                    outputs: Vec::new(),
                    quality: None,
                },
            };
            if !write_event(out, &hb) {
                return stop(mixer, "stdout closed", ExitCode::SUCCESS);
            }
        }
        let Some(msg) = msg else { continue };
        if matches!(msg, Msg::Cmd(_)) {
            last_word = Instant::now();
        }
        match msg {
            Msg::Cmd(Command::Keepalive) => {}
            Msg::Cmd(Command::Start {
                video,
                outputs,
                destinations,
            }) => {
                if mixer.is_some() {
                    tracing::warn!("ignoring second Start");
                    continue;
                }
                match Mixer::start_on(video, outputs, settings.rtp_bind, destinations) {
                    Ok((m, events)) => {
                        let tx = tx.clone();
                        std::thread::spawn(move || {
                            for ev in events {
                                if tx.send(Msg::Event(ev)).is_err() {
                                    break;
                                }
                            }
                        });
                        mixer = Some(m);
                        next_heartbeat = Instant::now() + HEARTBEAT;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "mixer failed to start");
                        write_event(
                            out,
                            &Event::Fatal {
                                reason: e.to_string(),
                            },
                        );
                        return ExitCode::FAILURE;
                    }
                }
            }
            Msg::Cmd(Command::AddInput {
                input_id,
                participant_id,
                display_name,
                codec,
                payload_type,
                clock_rate,
            }) => {
                let Some(m) = &mixer else {
                    tracing::warn!(input = %input_id, "AddInput before Start, ignored");
                    continue;
                };
                let spec = InputSpec {
                    input_id,
                    participant_id,
                    display_name,
                    codec,
                    payload_type,
                    clock_rate,
                };
                if let Err(e) = m.add_input(spec) {
                    tracing::warn!(error = %e, "add input failed");
                }
            }
            Msg::Cmd(Command::RemoveInput { input_id }) => {
                if let Some(m) = &mixer {
                    if let Err(e) = m.remove_input(&input_id) {
                        tracing::warn!(error = %e, "remove input failed");
                    }
                }
            }
            Msg::Cmd(Command::SetLayout { layout }) => match &mixer {
                Some(m) => {
                    if let Err(e) = m.set_layout(layout) {
                        tracing::warn!(error = %e, "set layout refused");
                    }
                }
                None => tracing::warn!("SetLayout before Start, ignored"),
            },
            Msg::Cmd(Command::SetLook { look }) => match &mixer {
                Some(m) => {
                    if let Err(e) = m.set_look(look) {
                        tracing::warn!(error = %e, "set look refused");
                    }
                }
                None => tracing::warn!("SetLook before Start, ignored"),
            },
            Msg::Cmd(Command::SetAudio {
                participant_id,
                audio,
            }) => match &mixer {
                Some(m) => {
                    if let Err(e) = m.set_audio(&participant_id, audio) {
                        tracing::warn!(error = %e, "set audio refused");
                    }
                }
                None => tracing::warn!("SetAudio before Start, ignored"),
            },
            Msg::Cmd(Command::AddOutput { output }) => match &mixer {
                Some(m) => {
                    let output_id = output.output_id.clone();
                    if let Err(e) = m.add_output(output) {
                        // Said as the output's state, so serve shows why it never went live.
                        tracing::warn!(output = %output_id, error = %e, "add output failed");
                        let ev = Event::Output {
                            output_id,
                            state: crate::control::OutputState::Failed,
                            reason: Some(format!("cannot add output: {e}")),
                            bytes_sent: 0,
                        };
                        if !write_event(out, &ev) {
                            return stop(mixer, "stdout closed", ExitCode::SUCCESS);
                        }
                    }
                }
                None => {
                    tracing::warn!(output = %output.output_id, "AddOutput before Start, ignored")
                }
            },
            Msg::Cmd(Command::RemoveOutput { output_id }) => match &mixer {
                Some(m) => {
                    if let Err(e) = m.remove_output(&output_id) {
                        tracing::warn!(error = %e, "remove output failed");
                    }
                }
                None => tracing::warn!(output = %output_id, "RemoveOutput before Start, ignored"),
            },
            Msg::Cmd(Command::StartRecording { recording_id, file }) => {
                let Some(m) = &mixer else {
                    tracing::warn!(recording = %recording_id, "StartRecording before Start, ignored");
                    continue;
                };
                let started = settings
                    .recordings_dir
                    .as_deref()
                    .ok_or_else(|| "this mixer has no recordings directory".to_string())
                    .and_then(|dir| crate::recording::resolve_file(dir, &file))
                    .and_then(|path| {
                        m.start_recording(&recording_id, path)
                            .map_err(|e| e.to_string())
                    });
                if let Err(reason) = started {
                    tracing::warn!(recording = %recording_id, %reason, "recording not started");
                    let ev = Event::Recording {
                        recording_id,
                        state: crate::control::RecordingState::Failed,
                        reason: Some(reason),
                        bytes_written: 0,
                    };
                    if !write_event(out, &ev) {
                        return stop(mixer, "stdout closed", ExitCode::SUCCESS);
                    }
                }
            }
            Msg::Cmd(Command::StopRecording { recording_id }) => {
                if let Some(m) = &mixer {
                    if let Err(e) = m.stop_recording(&recording_id) {
                        tracing::warn!(error = %e, "stop recording failed");
                    }
                }
            }
            Msg::Cmd(Command::Shutdown) => return stop(mixer, "shutdown", ExitCode::SUCCESS),
            Msg::StdinClosed => return stop(mixer, "stdin closed", ExitCode::SUCCESS),
            Msg::Event(ev) => {
                let fatal = matches!(ev, Event::Fatal { .. });
                if !write_event(out, &ev) {
                    return stop(mixer, "stdout closed", ExitCode::SUCCESS);
                }
                if fatal {
                    drop(mixer);
                    return ExitCode::FAILURE;
                }
            }
        }
    }
}

fn stop(mixer: Option<Mixer>, why: &str, code: ExitCode) -> ExitCode {
    tracing::info!(why, "mixer stopping");
    if let Some(m) = mixer {
        m.shutdown();
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{Codec, DestinationPolicy, VideoSpec, DEFAULT_RTP_BIND};

    fn events_of(out: &[u8]) -> Vec<Event> {
        String::from_utf8_lossy(out)
            .lines()
            .map(|l| decode_line::<Event>(l).expect("every stdout line is an event"))
            .collect()
    }

    #[test]
    fn malformed_lines_are_skipped() {
        assert!(parse_command("{nope").is_none());
        assert!(parse_command(r#"{"type":"shutdown"}"#).is_some());
    }

    #[test]
    fn start_add_remove_shutdown_over_the_protocol() {
        let (tx, rx) = mpsc::channel();
        let small = VideoSpec {
            width: 320,
            height: 180,
            fps: 15,
            bitrate_kbps: 300,
        };
        tx.send(Msg::Cmd(Command::Start {
            video: small,
            outputs: vec![],
            destinations: DestinationPolicy::default(),
        }))
        .unwrap();
        tx.send(Msg::Cmd(Command::AddInput {
            input_id: "v1".into(),
            participant_id: "p1".into(),
            display_name: String::new(),
            codec: Codec::Vp8,
            payload_type: 96,
            clock_rate: 90_000,
        }))
        .unwrap();
        let feeder = tx.clone();
        std::thread::spawn(move || {
            // Let a heartbeat or two pass with the input in place.
            std::thread::sleep(Duration::from_millis(1500));
            let _ = feeder.send(Msg::Cmd(Command::RemoveInput {
                input_id: "v1".into(),
            }));
            std::thread::sleep(Duration::from_millis(300));
            let _ = feeder.send(Msg::Cmd(Command::Shutdown));
        });
        let mut out = Vec::new();
        let code = run_loop(&rx, &tx, &mut out, &ProcessSettings::default());
        assert_eq!(code, ExitCode::SUCCESS);
        let events = events_of(&out);
        assert!(
            events.iter().any(|e| matches!(e, Event::Ready { .. })),
            "{events:?}"
        );
        assert!(
            events.iter().any(
                |e| matches!(e, Event::InputReady { input_id, rtp_port, rtp_addr }
                if input_id == "v1" && *rtp_port > 0
                    && *rtp_addr == Some(std::net::SocketAddr::new(DEFAULT_RTP_BIND, *rtp_port)))
            ),
            "{events:?}"
        );
        assert!(events.contains(&Event::KeyframeRequest {
            input_id: "v1".into()
        }));
        assert!(events.contains(&Event::InputRemoved {
            input_id: "v1".into()
        }));
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Heartbeat { frames_out, .. } if *frames_out > 0)),
            "{events:?}"
        );
    }

    #[test]
    fn bad_start_is_fatal_and_exits_nonzero() {
        let (tx, rx) = mpsc::channel();
        let odd = VideoSpec {
            width: 321,
            ..VideoSpec::default()
        };
        tx.send(Msg::Cmd(Command::Start {
            video: odd,
            outputs: vec![],
            destinations: DestinationPolicy::default(),
        }))
        .unwrap();
        let mut out = Vec::new();
        assert_eq!(
            run_loop(&rx, &tx, &mut out, &ProcessSettings::default()),
            ExitCode::FAILURE
        );
        assert!(matches!(events_of(&out).last(), Some(Event::Fatal { .. })));
    }

    #[test]
    fn stdin_eof_stops_cleanly() {
        let (tx, rx) = mpsc::channel();
        tx.send(Msg::StdinClosed).unwrap();
        let mut out = Vec::new();
        assert_eq!(
            run_loop(&rx, &tx, &mut out, &ProcessSettings::default()),
            ExitCode::SUCCESS
        );
    }

    #[test]
    fn a_silent_parent_stops_a_watched_mixer_and_keepalives_hold_it() {
        let small = VideoSpec {
            width: 320,
            height: 180,
            fps: 15,
            bitrate_kbps: 300,
        };
        let watched = ProcessSettings {
            watchdog: Some(Duration::from_millis(1500)),
            ..ProcessSettings::default()
        };
        let (tx, rx) = mpsc::channel();
        tx.send(Msg::Cmd(Command::Start {
            video: small,
            outputs: vec![],
            destinations: DestinationPolicy::default(),
        }))
        .unwrap();
        // Keepalives for 3 s (twice the watchdog), then silence: the mixer outlives the first
        // part and stops by itself in the second, with no Shutdown ever sent.
        let feeder = tx.clone();
        std::thread::spawn(move || {
            for _ in 0..6 {
                std::thread::sleep(Duration::from_millis(500));
                let _ = feeder.send(Msg::Cmd(Command::Keepalive));
            }
        });
        let started = Instant::now();
        let mut out = Vec::new();
        assert_eq!(run_loop(&rx, &tx, &mut out, &watched), ExitCode::SUCCESS);
        let lived = started.elapsed();
        assert!(
            lived >= Duration::from_secs(4) && lived < Duration::from_secs(12),
            "stopped after {lived:?}"
        );
        assert!(events_of(&out)
            .iter()
            .any(|e| matches!(e, Event::Heartbeat { .. })));
    }
}
