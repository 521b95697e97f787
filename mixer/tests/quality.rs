//! Program quality measured by a real pipeline: heartbeat latency samples in a sane range, and
//! `InputVisible` once per input, only when the layout shows it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use costream_mixer::control::{Codec, Event, ProgramQuality, VideoSpec};
use costream_mixer::Mixer;
use costream_testkit::wait_until;

/// A moving picture (the ball), so the program is never still.
fn ball_sender(port: u16) -> Sender {
    Sender::start(&format!(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=180,framerate=15/1 ! \
         vp8enc deadline=1 cpu-used=8 keyframe-max-dist=15 ! rtpvp8pay pt=96 ! \
         udpsink host=127.0.0.1 port={port}"
    ))
}

fn quality(mixer: &Mixer) -> ProgramQuality {
    match mixer.heartbeat() {
        Event::Heartbeat {
            quality: Some(q), ..
        } => q,
        other => panic!("a heartbeat with quality, got {other:?}"),
    }
}

fn visible(events: &mut Events, id: &str) -> bool {
    events.pump();
    events
        .seen
        .iter()
        .any(|e| matches!(e, Event::InputVisible { input_id } if input_id == id))
}

#[test]
fn latency_is_measured_and_inputs_report_when_visible() {
    let _guard = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let small = VideoSpec {
        width: 320,
        height: 180,
        fps: 15,
        bitrate_kbps: 300,
    };
    let (mixer, rx) = Mixer::start(small, vec![]).expect("mixer starts");
    let mut events = Events::new(rx);
    // One participant, two cameras: the layout shows the first only.
    let shown = mixer
        .add_input(input_of("cam", "p", Codec::Vp8, 96))
        .unwrap();
    let hidden = mixer
        .add_input(input_of("cam2", "p", Codec::Vp8, 96))
        .unwrap();
    let added = Instant::now();
    let _shown = ball_sender(shown);
    let _hidden = ball_sender(hidden);

    assert!(
        wait_until(added + Duration::from_secs(10), || visible(
            &mut events,
            "cam"
        )),
        "cam never visible: {:?}",
        events.seen
    );
    eprintln!("add -> visible: {:?}", added.elapsed());

    // A fresh window, then one heartbeat interval of frames (a measurement, not a wait).
    quality(&mixer);
    std::thread::sleep(Duration::from_secs(1));
    let q = quality(&mixer);
    eprintln!("{q:?}");
    assert!(q.latency_samples >= 5, "{q:?}");
    assert!((1..2000).contains(&q.latency_ms), "{q:?}");
    assert!(
        q.latency_max_ms >= q.latency_ms && q.latency_max_ms < 2000,
        "{q:?}"
    );
    assert!(!q.frozen && !q.black, "{q:?}");
    assert!(q.still_ms < 1000, "the ball moves: {q:?}");
    assert!(
        !visible(&mut events, "cam2"),
        "a hidden camera is not visible"
    );

    // The first camera goes: the second is shown, and reports.
    mixer.remove_input("cam").unwrap();
    let removed = Instant::now();
    assert!(
        wait_until(removed + Duration::from_secs(10), || visible(
            &mut events,
            "cam2"
        )),
        "cam2 never visible once shown: {:?}",
        events.seen
    );
    let reports = events
        .seen
        .iter()
        .filter(|e| matches!(e, Event::InputVisible { .. }))
        .count();
    assert_eq!(reports, 2, "once per input: {:?}", events.seen);
    mixer.shutdown();
}
