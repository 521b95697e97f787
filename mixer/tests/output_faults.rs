//! RTMP output faults against real nginx-rtmp servers, one mixer pipeline in-process:
//! a server restart (the output is back within 2 s, the other output never notices), a stalled
//! server (SIGSTOP: detected within 15 s), and a rejected stream key or a bad URL (failed within
//! 5 s with the server's reason, no endless retry).

use std::sync::mpsc::Receiver;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use costream_mixer::control::{Codec, Event, OutputSpec, OutputState, VideoSpec};
use costream_mixer::{InputSpec, Mixer};
use costream_testkit::{packets, wait_for, wait_until, FrameReader, Nginx};
use gstreamer as gst;
use gstreamer::prelude::*;

/// Each test runs an x264 encode; on 2 cores they must not run at the same time.
static HEAVY: Mutex<()> = Mutex::new(());

const SMALL: VideoSpec = VideoSpec {
    width: 640,
    height: 360,
    fps: 30,
    bitrate_kbps: 800,
};

struct Events {
    rx: Receiver<Event>,
    seen: Vec<(Instant, Event)>,
}

impl Events {
    fn new(rx: Receiver<Event>) -> Self {
        Self {
            rx,
            seen: Vec::new(),
        }
    }

    fn pump(&mut self) {
        while let Ok(ev) = self.rx.try_recv() {
            self.seen.push((Instant::now(), ev));
        }
    }

    /// Every state `id` reported, in order.
    fn states(&mut self, id: &str) -> Vec<(OutputState, Option<String>)> {
        self.pump();
        self.seen
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Output {
                    output_id,
                    state,
                    reason,
                    ..
                } if output_id == id => Some((*state, reason.clone())),
                _ => None,
            })
            .collect()
    }

    fn wait_output(&mut self, id: &str, want: OutputState, timeout: Duration) -> Option<String> {
        let got = wait_for(Instant::now() + timeout, || {
            self.states(id).pop().filter(|(s, _)| *s == want)
        });
        match got {
            Some((_, reason)) => reason,
            None => panic!(
                "{id} not {want:?} within {timeout:?}; states {:?}",
                self.states(id)
            ),
        }
    }
}

/// A VP8 RTP sender of moving noise: it makes the mix use its whole bitrate, as a real camera
/// does (an input-less mix of a still background is a few kbit/s, which socket buffers absorb
/// for minutes before a stalled server shows).
struct NoiseSender(gst::Element);

impl NoiseSender {
    fn start(mixer: &Mixer) -> NoiseSender {
        let port = mixer
            .add_input(InputSpec {
                input_id: "noise".into(),
                participant_id: "noise".into(),
                display_name: String::new(),
                codec: Codec::Vp8,
                payload_type: 96,
                clock_rate: 90_000,
            })
            .expect("input added");
        let desc = format!(
            "videotestsrc is-live=true pattern=snow ! video/x-raw,width=320,height=180,framerate=30/1 ! \
             vp8enc deadline=1 cpu-used=8 target-bitrate=1000000 keyframe-max-dist=30 ! \
             rtpvp8pay pt=96 ! udpsink host=127.0.0.1 port={port}"
        );
        let p = gst::parse::launch(&desc).expect("sender pipeline parses");
        p.set_state(gst::State::Playing).expect("sender plays");
        NoiseSender(p)
    }
}

impl Drop for NoiseSender {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

fn output(id: &str, url: String) -> OutputSpec {
    OutputSpec::new(id, url)
}

fn bytes_in_grows(nginx: &Nginx, key: &str, within: Duration) -> bool {
    let before = nginx.publisher_bytes_in(key).unwrap_or(0);
    wait_until(Instant::now() + within, || {
        nginx.publisher_bytes_in(key).unwrap_or(0) > before
    })
}

#[test]
fn a_restarted_server_gets_its_output_back_within_2s_and_the_other_output_never_notices() {
    let _guard = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let mut flaky = Nginx::start().expect("nginx");
    let steady = Nginx::start().expect("nginx");
    let (mixer, rx) = Mixer::start(
        SMALL,
        vec![
            output("flaky", flaky.rtmp_url("a")),
            output("steady", steady.rtmp_url("b")),
        ],
    )
    .expect("mixer starts");
    let mut events = Events::new(rx);
    events.wait_output("flaky", OutputState::Live, Duration::from_secs(15));
    events.wait_output("steady", OutputState::Live, Duration::from_secs(15));

    flaky.stop();
    let down_at = Instant::now();
    events.wait_output("flaky", OutputState::Reconnecting, Duration::from_secs(15));
    println!(
        "MEASURE rtmp_server_down_to_reconnecting_ms={}",
        down_at.elapsed().as_millis()
    );
    // Down for a while (several failed attempts); the other output keeps flowing meanwhile.
    assert!(
        bytes_in_grows(&steady, "b", Duration::from_secs(3)),
        "the steady output stopped while the other server was down"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        events.states("flaky").pop().unwrap().0,
        OutputState::Reconnecting
    );

    flaky.restart().expect("nginx restarts");
    let up_at = Instant::now();
    // A player waiting on the stream gets a picture as soon as the publisher is back: the mixer
    // forces a keyframe on reconnect instead of making it wait up to a GOP (2 s).
    let reader = FrameReader::start(&flaky.rtmp_url("a"), 64, 36, 10).expect("ffmpeg");
    let back = wait_until(up_at + Duration::from_secs(2), || {
        flaky.publisher_bytes_in("a").unwrap_or(0) > 0
    });
    let back_after = up_at.elapsed();
    println!(
        "MEASURE rtmp_server_up_to_publishing_ms={}",
        back_after.as_millis()
    );
    assert!(back, "not publishing to the restarted server within 2 s");
    events.wait_output("flaky", OutputState::Live, Duration::from_secs(5));
    let picture = reader.next_frame(Duration::from_secs(6));
    println!(
        "MEASURE rtmp_server_up_to_first_frame_ms={}",
        up_at.elapsed().as_millis()
    );
    assert!(picture.is_some(), "no picture from the restarted server");

    let steady_states = events.states("steady");
    assert!(
        steady_states
            .iter()
            .all(|(s, _)| matches!(s, OutputState::Connecting | OutputState::Live)),
        "the other output was disturbed: {steady_states:?}"
    );
    assert!(bytes_in_grows(&steady, "b", Duration::from_secs(3)));
    mixer.shutdown();
}

#[test]
fn a_reconnected_output_starts_with_a_keyframe() {
    let _guard = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let mut nginx = Nginx::start().expect("nginx");
    let (mixer, rx) = Mixer::start(SMALL, vec![output("rec", nginx.rtmp_app_url("rec", "k"))])
        .expect("mixer starts");
    let mut events = Events::new(rx);
    events.wait_output("rec", OutputState::Live, Duration::from_secs(15));
    // Somewhere in the middle of a GOP (2 s), cut the server off and bring it back.
    std::thread::sleep(Duration::from_millis(2700));
    nginx.restart().expect("nginx restarts");
    events.wait_output("rec", OutputState::Reconnecting, Duration::from_secs(5));
    events.wait_output("rec", OutputState::Live, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    mixer.shutdown();
    // nginx recorded each publish session to its own file: the second one is the reconnect.
    let files = nginx.recordings("k");
    assert_eq!(
        files.len(),
        2,
        "one recording per publish expected: {files:?}"
    );
    // nginx records video from its first keyframe on, audio at once: the gap between them is
    // how long the new connection waited for a keyframe (up to a GOP, 2 s, without forcing one).
    let packets = packets(files[1].to_str().unwrap(), 30).expect("ffprobe recording");
    let first = |video: bool| {
        packets
            .iter()
            .find(|p| p.video == video)
            .map(|p| p.pts)
            .expect("audio and video recorded")
    };
    let wait = first(true) - first(false);
    println!(
        "MEASURE reconnect_first_audio_to_first_keyframe_ms={:.0}",
        wait * 1000.0
    );
    assert!(
        wait < 0.3,
        "the reconnected stream's first keyframe came {wait:.3} s after its audio"
    );
}

#[test]
fn a_stalled_server_is_detected_within_15s_and_the_output_recovers() {
    let _guard = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let nginx = Nginx::start().expect("nginx");
    let steady = Nginx::start().expect("nginx");
    let (mixer, rx) = Mixer::start(
        SMALL,
        vec![
            output("stall", nginx.rtmp_url("s")),
            output("steady", steady.rtmp_url("t")),
        ],
    )
    .expect("mixer starts");
    let _noise = NoiseSender::start(&mixer);
    let mut events = Events::new(rx);
    events.wait_output("stall", OutputState::Live, Duration::from_secs(15));
    events.wait_output("steady", OutputState::Live, Duration::from_secs(15));
    // A stream that has run a while: the server acknowledged at least one window (256 KB).
    assert!(
        wait_until(Instant::now() + Duration::from_secs(20), || {
            nginx.publisher_bytes_in("s").unwrap_or(0) > 600_000
        }),
        "the noisy mix did not reach 600 KB"
    );

    nginx.pause().expect("SIGSTOP nginx");
    let stalled_at = Instant::now();
    let reason = events.wait_output("stall", OutputState::Reconnecting, Duration::from_secs(15));
    let detected = stalled_at.elapsed();
    println!("MEASURE rtmp_stall_detected_ms={}", detected.as_millis());
    assert!(detected <= Duration::from_secs(15), "{detected:?}");
    let reason = reason.unwrap_or_default();
    assert!(reason.contains("stalled"), "{reason}");
    assert!(
        bytes_in_grows(&steady, "t", Duration::from_secs(3)),
        "other output disturbed"
    );
    assert_eq!(events.states("steady").pop().unwrap().0, OutputState::Live);

    nginx.resume().expect("SIGCONT nginx");
    let resumed_at = Instant::now();
    events.wait_output("stall", OutputState::Live, Duration::from_secs(15));
    println!(
        "MEASURE rtmp_stall_resumed_to_live_ms={}",
        resumed_at.elapsed().as_millis()
    );
    mixer.shutdown();
}

#[test]
fn a_rejected_key_or_a_bad_url_fails_within_5s_with_the_reason() {
    let _guard = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let nginx = Nginx::start().expect("nginx");
    let closed_port = costream_testkit::free_port().expect("port");
    let started = Instant::now();
    let (mixer, rx) = Mixer::start(
        SMALL,
        vec![
            // on_publish answers 403: the CDN refuses this key.
            output("rejected", nginx.rtmp_app_url("locked", "secretkey1")),
            output(
                "refused",
                format!("rtmp://127.0.0.1:{closed_port}/live/secretkey2"),
            ),
            output("no_app", nginx.rtmp_app_url("nosuchapp", "secretkey3")),
            output("good", nginx.rtmp_url("fine")),
        ],
    )
    .expect("mixer starts");
    let mut events = Events::new(rx);
    for id in ["rejected", "refused", "no_app"] {
        let reason = events
            .wait_output(id, OutputState::Failed, Duration::from_secs(5))
            .unwrap_or_default();
        println!(
            "MEASURE rtmp_{id}_failed_ms={} reason={reason:?}",
            started.elapsed().as_millis()
        );
        assert!(!reason.is_empty(), "{id}: no reason");
        assert!(
            !reason.contains("secretkey"),
            "{id}: key leaked in {reason}"
        );
    }
    assert!(started.elapsed() <= Duration::from_secs(5) + Duration::from_millis(500));
    events.wait_output("good", OutputState::Live, Duration::from_secs(15));
    // Failed means failed: no retry afterwards.
    std::thread::sleep(Duration::from_secs(2));
    for id in ["rejected", "refused", "no_app"] {
        let states = events.states(id);
        assert_eq!(
            states.last().unwrap().0,
            OutputState::Failed,
            "{id}: {states:?}"
        );
        assert_eq!(
            states
                .iter()
                .filter(|(s, _)| *s == OutputState::Failed)
                .count(),
            1,
            "{id}: {states:?}"
        );
    }
    mixer.shutdown();
}
