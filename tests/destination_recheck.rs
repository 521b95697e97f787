//! A mixer checks an output's destination again each time it connects (issue 13, item 4): a
//! name that passed the API's check may resolve to `127.0.0.1` by then (DNS rebinding). The
//! API's check cannot be fooled offline, so this starts at the mixer, where the rebinding would
//! land: `localhost` plays the rebound name (it resolves to loopback through /etc/hosts).
//!
//! Real processes: `costream mixer` driven over its stdio protocol as serve drives it, and
//! plain TCP listeners standing in for RTMP servers (an accepted connection is the proof that
//! the mixer connected; no RTMP needed for that).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use costream_mixer::control::{
    decode_line, encode_line, Command as MixerCommand, DestinationPolicy, Event, OutputSpec,
    OutputState, VideoSpec, PROTOCOL_VERSION,
};
use costream_testkit::{wait_for, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_costream");

const SMALL: VideoSpec = VideoSpec {
    width: 320,
    height: 180,
    fps: 15,
    bitrate_kbps: 300,
};

/// A `costream mixer` child: commands in on stdin, events out on stdout, logs kept.
struct MixerProcess {
    child: Child,
    stdin: ChildStdin,
    events: Receiver<Event>,
    seen: Vec<Event>,
    log: Arc<Mutex<String>>,
}

impl MixerProcess {
    /// Spawns a mixer, waits for its `Hello` and sends `Start`.
    fn start(outputs: Vec<OutputSpec>, destinations: DestinationPolicy) -> MixerProcess {
        let mut child = Command::new(BIN)
            .arg("mixer")
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn costream mixer");
        let stdin = child.stdin.take().expect("stdin piped");
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let event = decode_line::<Event>(&line).expect("every stdout line is an event");
                if tx.send(event).is_err() {
                    return;
                }
            }
        });
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut mixer = MixerProcess {
            child,
            stdin,
            events,
            seen: Vec::new(),
            log,
        };
        let hello = mixer.wait_event(Duration::from_secs(20), |e| {
            matches!(e, Event::Hello { .. }).then(|| e.clone())
        });
        assert!(
            matches!(hello, Event::Hello { protocol, .. } if protocol == PROTOCOL_VERSION),
            "{hello:?}"
        );
        mixer.send(&MixerCommand::Start {
            video: SMALL,
            outputs,
            destinations,
        });
        mixer.wait_event(Duration::from_secs(20), |e| {
            matches!(e, Event::Ready { .. }).then_some(())
        });
        mixer
    }

    fn send(&mut self, command: &MixerCommand) {
        self.stdin
            .write_all(encode_line(command).as_bytes())
            .and_then(|()| self.stdin.flush())
            .expect("write to the mixer");
    }

    /// Waits for the first event (seen before or arriving) that `pick` accepts.
    fn wait_event<T>(&mut self, within: Duration, pick: impl Fn(&Event) -> Option<T>) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(found) = self.seen.iter().find_map(&pick) {
                return found;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .events
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok(event) => self.seen.push(event),
                Err(_) if Instant::now() >= deadline => panic!(
                    "no such event within {within:?}; seen {:?}; log:\n{}",
                    self.seen,
                    self.log()
                ),
                Err(_) => {}
            }
        }
    }

    /// The reason of the first `Failed` report of `output_id`.
    fn failure_of(&mut self, output_id: &str) -> String {
        self.wait_event(Duration::from_secs(20), |e| match e {
            Event::Output {
                output_id: id,
                state: OutputState::Failed,
                reason,
                ..
            } if id == output_id => Some(reason.clone().unwrap_or_default()),
            _ => None,
        })
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for MixerProcess {
    fn drop(&mut self) {
        let _ = self
            .stdin
            .write_all(encode_line(&MixerCommand::Shutdown).as_bytes());
        let _ = self.stdin.flush();
        let exited = wait_until(Instant::now() + Duration::from_secs(5), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A TCP listener on loopback standing in for an RTMP server.
struct Server(TcpListener);

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        Server(listener)
    }

    /// The push URL a rebound name gives: `localhost`, not an address literal.
    fn url(&self, key: &str) -> String {
        let port = self.0.local_addr().expect("bound").port();
        format!("rtmp://localhost:{port}/live/{key}")
    }

    /// Whether anything connected within `within`.
    fn connected_within(&self, within: Duration) -> bool {
        wait_for(Instant::now() + within, || self.0.accept().ok()).is_some()
    }
}

fn strict() -> DestinationPolicy {
    DestinationPolicy::default()
}

#[test]
fn a_name_resolving_to_loopback_is_refused_at_connect_time_and_rechecked() {
    let refused = Server::start();
    let origin = Server::start();
    let added = Server::start();
    let mut mixer = MixerProcess::start(
        vec![
            OutputSpec::new("out0", refused.url("sk_refused_key")),
            // serve's own origin is exempt: it is on loopback by design.
            OutputSpec {
                internal: true,
                ..OutputSpec::new("origin", origin.url("room"))
            },
        ],
        strict(),
    );
    let reason = mixer.failure_of("out0");
    assert!(
        reason.contains("refused at connect time: the host now resolves to")
            && reason.contains("(loopback)")
            && reason.contains("[outputs] allow_private"),
        "{reason}"
    );
    assert!(!reason.contains("sk_refused_key"), "{reason}");
    // The pipeline runs and pushes: the exempt output connects.
    assert!(
        origin.connected_within(Duration::from_secs(15)),
        "the internal output never connected; log:\n{}",
        mixer.log()
    );
    // An output added while live is checked the same way.
    mixer.send(&MixerCommand::AddOutput {
        output: OutputSpec::new("out1", added.url("sk_added_key")),
    });
    let reason = mixer.failure_of("out1");
    assert!(reason.contains("(loopback)"), "{reason}");
    // Nothing reaches the refused destinations across several checks (250 ms, 500 ms, 1 s,
    // 1 s, ... apart): each retry is checked again and refused again.
    assert!(!refused.connected_within(Duration::from_secs(4)));
    assert!(added.0.accept().is_err(), "out1 connected");
    let log = mixer.log();
    let checks = log.matches("output destination refused").count();
    assert!(
        checks >= 6,
        "{checks} refusals (expected rechecks); log:\n{log}"
    );
    assert!(
        !log.contains("sk_refused_key"),
        "the key leaked into the log:\n{log}"
    );
    // Refused outputs are not given up on (DNS may change back), nor re-reported each retry.
    let failed_reports = mixer
        .seen
        .iter()
        .filter(|e| matches!(e, Event::Output { output_id, state: OutputState::Failed, .. } if output_id == "out0"))
        .count();
    assert_eq!(failed_reports, 1, "{:?}", mixer.seen);
}

/// A room whose only output is refused still mixes (the encoder never waits on the stopped
/// branch), ready to push once the name resolves somewhere allowed.
#[test]
fn a_mixer_whose_only_output_is_refused_keeps_mixing() {
    let refused = Server::start();
    let mut mixer =
        MixerProcess::start(vec![OutputSpec::new("out0", refused.url("key"))], strict());
    mixer.failure_of("out0");
    let frames = |mixer: &mut MixerProcess, above: u64| {
        mixer.wait_event(Duration::from_secs(10), |e| match e {
            Event::Heartbeat { frames_out, .. } if *frames_out > above => Some(*frames_out),
            _ => None,
        })
    };
    let first = frames(&mut mixer, 0);
    let later = frames(&mut mixer, first + 15);
    assert!(later > first);
    assert!(
        !mixer.seen.iter().any(|e| matches!(e, Event::Fatal { .. })),
        "{:?}",
        mixer.seen
    );
    assert!(!refused.connected_within(Duration::from_millis(500)));
}

#[test]
fn the_same_name_connects_where_private_destinations_are_allowed() {
    let server = Server::start();
    let listed = Server::start();
    let _mixer = MixerProcess::start(
        vec![OutputSpec::new("out0", server.url("key"))],
        DestinationPolicy {
            allow_private: true,
            allow_hosts: Vec::new(),
        },
    );
    assert!(server.connected_within(Duration::from_secs(15)));
    // A host on the allow-list connects under a strict policy too.
    let _mixer = MixerProcess::start(
        vec![OutputSpec::new("out0", listed.url("key"))],
        DestinationPolicy {
            allow_private: false,
            allow_hosts: vec!["localhost".into()],
        },
    );
    assert!(listed.connected_within(Duration::from_secs(15)));
}
