//! Inputs misbehave, the program does not: a guest changing resolution mid-stream, a guest
//! losing 5% of its packets, and the A/V sync of one participant through the whole mix, each
//! checked on the output pulled back from a real nginx-rtmp.

mod common;

use std::time::{Duration, Instant};

use common::*;
use costream_mixer::control::{Codec, OutputState, VideoSpec};
use costream_testkit::{av_onsets, close_to, video_packets, wait_for, FrameReader, Nginx};
use gstreamer as gst;
use gstreamer::prelude::*;

/// Longest distance between consecutive video packets' timestamps, in seconds.
fn longest_gap(url: &str, seconds: u32) -> (usize, f64) {
    let packets = video_packets(url, seconds).expect("ffprobe packets");
    let gap = packets
        .windows(2)
        .map(|w| w[1].pts - w[0].pts)
        .fold(0.0, f64::max);
    (packets.len(), gap)
}

#[test]
fn a_guest_switching_from_360p_to_720p_mid_stream_keeps_its_tile() {
    let _guard = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let nginx = Nginx::start().expect("nginx");
    let (mixer, _events, url) = live_mixer(&nginx, "resize", VideoSpec::default());
    let port = mixer
        .add_input(input_of("g-cam", "g", Codec::Vp8, 96))
        .unwrap();
    let sender = Sender::start(&format!(
        "videotestsrc name=src is-live=true pattern=solid-color foreground-color=0xffff0000 ! \
         capsfilter name=size caps=video/x-raw,width=640,height=360,framerate=30/1 ! \
         vp8enc deadline=1 cpu-used=8 keyframe-max-dist=60 ! rtpvp8pay pt=96 ! \
         udpsink host=127.0.0.1 port={port}"
    ));
    let reader = FrameReader::start(&url, 320, 180, 10).expect("reader");
    let full = |color: [u8; 3]| {
        wait_for(Instant::now() + Duration::from_secs(10), || {
            let f = reader.frame_after(Instant::now() - Duration::from_millis(100))?;
            close_to(tile_color(&f, 0, 0, 1280, 720), color, TOL).then_some(())
        })
    };
    assert!(
        full(RED).is_some(),
        "the 360p guest never filled the canvas"
    );

    let probe_url = url.clone();
    let gaps = std::thread::spawn(move || longest_gap(&probe_url, 6));
    std::thread::sleep(Duration::from_secs(1));
    // The guest's camera goes to 720p (and blue, to see the new frames arrive).
    sender.element("size").set_property(
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("width", 1280i32)
            .field("height", 720i32)
            .field("framerate", gst::Fraction::new(30, 1))
            .build(),
    );
    sender
        .element("src")
        .set_property("foreground-color", 0xff00_00ffu32);
    let changed = Instant::now();
    assert!(
        full(BLUE).is_some(),
        "the guest's 720p frames never reached the output"
    );
    eprintln!(
        "360p -> 720p: new frames in the output after {:?}",
        changed.elapsed()
    );
    let (packets, gap) = gaps.join().unwrap();
    eprintln!(
        "across the resolution change: {packets} packets, longest gap {:.0} ms",
        gap * 1000.0
    );
    assert!(packets > 120, "only {packets} output packets in 6 s");
    assert!(
        gap < 0.07,
        "output gap of {gap:.3} s at the resolution change"
    );
    mixer.shutdown();
}

#[test]
fn five_percent_loss_on_a_guest_never_stalls_the_output() {
    let _guard = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let nginx = Nginx::start().expect("nginx");
    let (mixer, mut events, url) = live_mixer(&nginx, "lossy", VideoSpec::default());
    let port = mixer
        .add_input(input_of("g-cam", "g", Codec::Vp8, 96))
        .unwrap();
    // Moving content at a real bitrate, small packets, and 5% of them dropped by the sender.
    let _sender = Sender::start(&format!(
        "videotestsrc is-live=true pattern=ball background-color=0xffff0000 ! \
         video/x-raw,width=640,height=360,framerate=30/1 ! \
         vp8enc deadline=1 cpu-used=8 keyframe-max-dist=30 target-bitrate=1000000 ! \
         rtpvp8pay pt=96 mtu=600 ! identity drop-probability=0.05 ! \
         udpsink host=127.0.0.1 port={port}"
    ));
    let reader = FrameReader::start(&url, 320, 180, 10).expect("reader");
    let seen = wait_for(Instant::now() + Duration::from_secs(10), || {
        let f = reader.frame_after(Instant::now() - Duration::from_millis(100))?;
        close_to(tile_color(&f, 0, 0, 1280, 720), RED, TOL).then_some(())
    });
    assert!(seen.is_some(), "the lossy guest never showed up");
    let (packets, gap) = longest_gap(&url, 8);
    eprintln!(
        "5% loss: {packets} output packets in 8 s, longest gap {:.0} ms",
        gap * 1000.0
    );
    // Frames keep coming, and never a stall: losing an input's packets may cost the program a
    // late frame now and then (measured 60–105 ms gaps on a loaded machine), never a pause.
    // The count only proves the output moves (240 at 30 fps): with compilers competing for the
    // two cores the encoder was seen at 24 fps, which is load, not loss.
    assert!(packets > 160, "only {packets} output packets in 8 s");
    assert!(gap < 0.2, "output stalled for {gap:.3} s under input loss");
    // The guest is still on screen at the end.
    let f = reader
        .next_frame(Duration::from_secs(2))
        .expect("frames keep coming");
    assert!(close_to(tile_color(&f, 0, 0, 1280, 720), RED, TOL));
    events.pump();
    assert_eq!(mixer.output_states()[0].1, OutputState::Live);
    mixer.shutdown();
}

#[test]
fn a_flash_and_its_beep_stay_within_45_ms_through_the_mix() {
    let _guard = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let nginx = Nginx::start().expect("nginx");
    let (mixer, _events, url) = live_mixer(&nginx, "sync", VideoSpec::default());
    let video = mixer
        .add_input(input_of("p-cam", "p", Codec::Vp8, 96))
        .unwrap();
    let audio = mixer
        .add_input(input_of("p-mic", "p", Codec::Opus, 111))
        .unwrap();
    let _sender = flash_beep_sender(video, audio);
    // Let the inputs settle (first keyframe, jitterbuffers) before measuring.
    std::thread::sleep(Duration::from_secs(2));
    let onsets = av_onsets(&url, 8).expect("ffmpeg analysis");
    let offsets = onsets.offsets();
    eprintln!(
        "A/V offsets (audio - video, ms): {:?} from {} flashes / {} beeps",
        offsets
            .iter()
            .map(|o| (o * 1000.0).round())
            .collect::<Vec<_>>(),
        onsets.flashes.len(),
        onsets.beeps.len()
    );
    assert!(offsets.len() >= 5, "too few flash/beep pairs: {onsets:?}");
    let worst = offsets.iter().map(|o| o.abs()).fold(0.0, f64::max);
    assert!(worst <= 0.045, "A/V offset up to {:.0} ms", worst * 1000.0);
    mixer.shutdown();
}
