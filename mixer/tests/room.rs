//! The real pipeline against a real nginx-rtmp: RTP senders built with GStreamer feed the
//! mixer, ffprobe/ffmpeg check what the "CDN" received.

mod common;

use std::time::{Duration, Instant};

use common::*;
use costream_mixer::control::{Codec, Event, OutputSpec, OutputState, VideoSpec};
use costream_mixer::Mixer;
use costream_testkit::{close_to, probe_stream, wait_for, FrameReader, Nginx};

#[test]
fn two_inputs_are_composited_and_a_removed_input_disappears() {
    let _guard = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let nginx = Nginx::start().expect("nginx");
    let t_start = Instant::now();
    let (mixer, mut events, url) = live_mixer(&nginx, "room1", VideoSpec::default());
    eprintln!("Start -> Live (bytes acked): {:?}", t_start.elapsed());

    let red_port = mixer.add_input(video_input("red", Codec::Vp8, 96)).unwrap();
    let blue_port = mixer
        .add_input(video_input("blue", Codec::H264, 102))
        .unwrap();
    // Blue's microphone: a participant's audio shares its tile (an audio-only participant
    // would get a slate tile of its own).
    let audio_port = mixer
        .add_input(input_of("mic", "blue", Codec::Opus, 111))
        .unwrap();
    events.pump();
    for (id, port) in [("red", red_port), ("blue", blue_port), ("mic", audio_port)] {
        assert!(
            events.seen.contains(&Event::InputReady {
                input_id: id.into(),
                rtp_port: port,
                rtp_addr: Some(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
            }),
            "{:?}",
            events.seen
        );
    }
    assert!(events.seen.contains(&Event::KeyframeRequest {
        input_id: "red".into()
    }));
    let _red = vp8_sender(0xFF0000, red_port);
    let _blue = h264_sender(0x0000FF, blue_port);
    let _mic = opus_sender(audio_port);

    let info = probe_stream(&url).expect("ffprobe");
    assert_eq!(info.video_codec, "h264");
    assert_eq!((info.width, info.height), (1280, 720));
    assert!((info.fps - 30.0).abs() < 1.5, "fps {}", info.fps);
    assert_eq!(
        (info.audio_codec.as_str(), info.audio_rate),
        ("aac", 48_000)
    );

    let reader = FrameReader::start(&url, 320, 180, 10).expect("ffmpeg reader");
    // Two tiles side by side, 640x360 each, vertically centred.
    let both = wait_for(Instant::now() + Duration::from_secs(20), || {
        let f = reader.next_frame(Duration::from_secs(2))?;
        let (l, r) = (
            tile_color(&f, 0, 180, 640, 360),
            tile_color(&f, 640, 180, 640, 360),
        );
        (close_to(l, RED, TOL) && close_to(r, BLUE, TOL)).then_some((l, r))
    });
    assert!(both.is_some(), "never saw red|blue tiles");
    let f = reader.next_frame(Duration::from_secs(2)).unwrap();
    assert!(
        close_to(tile_color(&f, 0, 0, 1280, 180), [0, 0, 0], TOL),
        "letterbox band above the tiles should be black"
    );

    mixer.remove_input("red").unwrap();
    let removed_at = Instant::now();
    let closed_up = wait_for(removed_at + Duration::from_secs(5), || {
        let f = reader.frame_after(Instant::now() - Duration::from_millis(150))?;
        let c = tile_color(&f, 0, 0, 1280, 720);
        close_to(c, BLUE, TOL).then_some(c)
    });
    assert!(
        closed_up.is_some(),
        "blue did not fill the canvas within 5 s of removing red"
    );
    eprintln!(
        "removal -> blue full canvas seen: {:?}",
        removed_at.elapsed()
    );
    events.pump();
    assert!(events.seen.contains(&Event::InputRemoved {
        input_id: "red".into()
    }));
    // The stream goes on.
    let before = nginx.publisher_bytes_in("room1").unwrap_or(0);
    let grew = costream_testkit::wait_until(Instant::now() + Duration::from_secs(5), || {
        nginx.publisher_bytes_in("room1").unwrap_or(0) > before
    });
    assert!(grew, "nginx stopped receiving after the removal");
    if let Event::Heartbeat {
        frames_out,
        outputs,
        ..
    } = mixer.heartbeat()
    {
        assert!(frames_out > 30, "frames_out {frames_out}");
        assert!(outputs[0].bytes_sent > 0);
    }
    eprintln!(
        "{:.1} s CPU so far (mixer and the test's senders)",
        costream_testkit::cpu_seconds("self").unwrap_or(0.0)
    );
    mixer.shutdown();
}

#[test]
fn unreachable_output_fails_while_the_good_one_stays_live() {
    let _guard = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let nginx = Nginx::start().expect("nginx");
    let (mixer, rx) = Mixer::start(
        VideoSpec::default(),
        vec![
            OutputSpec::new("bad", "rtmp://127.0.0.1:1/live/secretkey123"),
            OutputSpec::new("good", nginx.rtmp_url("room2")),
        ],
    )
    .expect("mixer starts");
    let mut events = Events::new(rx);
    let reason = events
        .wait_output("bad", OutputState::Failed, Duration::from_secs(15))
        .expect("a Failed output carries a reason");
    eprintln!("failed output reason: {reason}");
    assert!(!reason.is_empty());
    assert!(
        !reason.contains("secretkey123"),
        "stream key leaked: {reason}"
    );
    events.wait_output("good", OutputState::Live, Duration::from_secs(15));
    let bytes = |m: &Mixer| match m.heartbeat() {
        Event::Heartbeat { outputs, .. } => outputs
            .iter()
            .find(|o| o.output_id == "good")
            .map(|o| o.bytes_sent)
            .unwrap_or(0),
        _ => 0,
    };
    let before = bytes(&mixer);
    let grew = costream_testkit::wait_until(Instant::now() + Duration::from_secs(5), || {
        bytes(&mixer) > before + 10_000
    });
    assert!(grew, "good output stopped after the bad one failed");
    assert_eq!(
        mixer.output_states(),
        vec![
            ("bad".to_string(), OutputState::Failed),
            ("good".to_string(), OutputState::Live)
        ]
    );
    mixer.shutdown();
}

#[test]
fn live_output_reconnects_after_the_server_restarts() {
    let _guard = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let mut nginx = Nginx::start().expect("nginx");
    let (mixer, mut events, _) = live_mixer(&nginx, "room3", SMALL);
    nginx.stop();
    let down_at = Instant::now();
    events.wait_output("out0", OutputState::Reconnecting, Duration::from_secs(15));
    eprintln!("server down -> Reconnecting: {:?}", down_at.elapsed());
    // Stay down long enough for at least one failed retry.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        events.output_state("out0").unwrap().0,
        OutputState::Reconnecting
    );
    nginx.restart().expect("nginx restarts");
    let up_at = Instant::now();
    events.wait_output("out0", OutputState::Live, Duration::from_secs(20));
    eprintln!("server up -> Live again: {:?}", up_at.elapsed());
    let publishing = costream_testkit::wait_until(Instant::now() + Duration::from_secs(5), || {
        nginx.publisher_bytes_in("room3").unwrap_or(0) > 0
    });
    assert!(publishing, "nginx sees no publisher after reconnect");
    let info = probe_stream(&nginx.rtmp_url("room3")).expect("stream plays after reconnect");
    assert_eq!((info.width, info.height), (640, 360));
    mixer.shutdown();
}
