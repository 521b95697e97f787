//! Live layout switches on the real pipeline: tiles land where the pure layout says (sampled
//! colours of the pulled-back output), the speaker layout follows the voice, and switching
//! never leaves a gap in the output's timestamps nor triggers extra keyframes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use costream_mixer::control::VideoSpec;
use costream_mixer::control::{Codec, CustomTile, Event, LayoutSpec, OutputSpec, OutputState};
use costream_mixer::Mixer;
use costream_testkit::{close_to, video_packets, wait_for, FrameReader, Nginx};

const GREEN: [u8; 3] = [0, 255, 0];

/// Canvas rect `(x, y, w, h)` that must show `color`.
type Expect = ((u32, u32, u32, u32), [u8; 3]);

/// Waits (≤ 5 s) for a frame where every expected region has its colour; returns how long.
fn wait_for_picture(reader: &FrameReader, what: &str, expect: &[Expect]) -> Duration {
    let since = Instant::now();
    let mut last = Vec::new();
    let seen = wait_for(since + Duration::from_secs(5), || {
        let f = reader.frame_after(Instant::now() - Duration::from_millis(100))?;
        last = expect
            .iter()
            .map(|((x, y, w, h), _)| tile_color(&f, *x, *y, *w, *h))
            .collect();
        expect
            .iter()
            .zip(&last)
            .all(|((_, want), got)| close_to(*got, *want, TOL))
            .then_some(())
    });
    assert!(
        seen.is_some(),
        "{what}: never saw {expect:?}; last {last:?}"
    );
    since.elapsed()
}

#[test]
fn layouts_switch_live_without_gaps_and_follow_the_speaker() {
    let _guard = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let nginx = Nginx::start().expect("nginx");
    let url = nginx.rtmp_url("layouts");
    let (mixer, rx) = Mixer::start(
        VideoSpec::default(),
        vec![OutputSpec {
            output_id: "out0".into(),
            url: url.clone(),
        }],
    )
    .expect("mixer starts");
    let mut events = Events::new(rx);
    events.wait_output("out0", OutputState::Live, Duration::from_secs(15));

    let mut senders = Vec::new();
    for (who, rgb) in [("red", 0xFF0000), ("blue", 0x0000FF), ("green", 0x00FF00)] {
        let port = mixer
            .add_input(input_of(&format!("{who}-cam"), who, Codec::Vp8, 96))
            .unwrap();
        senders.push(vp8_sender(rgb, port));
    }
    // Blue talks, red's microphone is open but silent.
    for (who, wave) in [("blue", "sine"), ("red", "silence")] {
        let port = mixer
            .add_input(input_of(&format!("{who}-mic"), who, Codec::Opus, 111))
            .unwrap();
        senders.push(tone_sender(port, wave));
    }
    let reader = FrameReader::start(&url, 320, 180, 10).expect("ffmpeg reader");

    // Grid of three: 2x2 cells of 640x360 in join order.
    wait_for_picture(
        &reader,
        "grid",
        &[
            ((0, 0, 640, 360), RED),
            ((640, 0, 640, 360), BLUE),
            ((0, 360, 640, 360), GREEN),
        ],
    );

    // Watch the wire while the layout changes.
    let probe_url = url.clone();
    let packets = std::thread::spawn(move || video_packets(&probe_url, 10));
    std::thread::sleep(Duration::from_secs(1)); // ffprobe connects and starts reading

    mixer.set_layout(LayoutSpec::Speaker { pin: None }).unwrap();
    let took = wait_for_picture(
        &reader,
        "speaker (voice)",
        &[
            ((128, 0, 1024, 576), BLUE),
            ((384, 576, 256, 144), RED),
            ((640, 576, 256, 144), GREEN),
        ],
    );
    eprintln!("speaker layout visible after {took:?}");
    assert_eq!(mixer.active_speaker().as_deref(), Some("blue"));
    events.pump();
    assert!(events.seen.contains(&Event::ActiveSpeaker {
        participant_id: Some("blue".into())
    }));

    mixer
        .set_layout(LayoutSpec::Pip {
            pin: Some("red".into()),
        })
        .unwrap();
    wait_for_picture(
        &reader,
        "pip pinned red",
        &[
            ((0, 0, 560, 480), RED),
            ((936, 516, 320, 180), BLUE),
            ((592, 516, 320, 180), GREEN),
        ],
    );

    let tile = |who: &str, x, y, width, height, z| CustomTile {
        participant_id: who.into(),
        x,
        y,
        width,
        height,
        z,
    };
    mixer
        .set_layout(LayoutSpec::Custom {
            tiles: vec![
                tile("green", 0.0, 0.0, 1.0, 1.0, 0),
                tile("red", 0.5, 0.0, 0.5, 0.5, 1),
            ],
        })
        .unwrap();
    wait_for_picture(
        &reader,
        "custom (blue hidden)",
        &[
            ((640, 0, 640, 360), RED),
            ((0, 0, 640, 360), GREEN),
            ((0, 360, 1280, 360), GREEN),
        ],
    );

    let packets = packets.join().unwrap().expect("ffprobe packets");
    assert!(
        packets.len() > 150,
        "only {} packets in 10 s",
        packets.len()
    );
    let longest_gap = packets
        .windows(2)
        .map(|w| w[1].pts - w[0].pts)
        .fold(0.0f64, f64::max);
    let keyframes = packets.iter().filter(|p| p.keyframe).count();
    eprintln!(
        "across 3 layout switches: {} packets, longest pts gap {:.0} ms, {keyframes} keyframes",
        packets.len(),
        longest_gap * 1000.0
    );
    // 30 fps: consecutive frames are 33 ms apart; allow one late frame, never a hole.
    assert!(
        longest_gap < 0.07,
        "output gap of {longest_gap:.3} s across layout switches"
    );
    // A fixed GOP of 2 s: 5 or 6 keyframes in 10 s, so switching added none.
    assert!(
        keyframes <= 6,
        "{keyframes} keyframes in 10 s: switching added keyframes"
    );
    let key_times: Vec<f64> = packets
        .iter()
        .filter(|p| p.keyframe)
        .map(|p| p.pts)
        .collect();
    for pair in key_times.windows(2) {
        let gop = pair[1] - pair[0];
        assert!(
            (gop - 2.0).abs() < 0.05,
            "GOP of {gop:.3} s (keyframes {key_times:?})"
        );
    }

    let bad = mixer.set_layout(LayoutSpec::Custom {
        tiles: vec![tile("red", 0.8, 0.0, 0.5, 0.5, 0)],
    });
    assert!(bad.is_err(), "an out-of-canvas custom tile must be refused");
    mixer.shutdown();
}
