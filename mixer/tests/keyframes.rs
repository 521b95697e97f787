//! Packet loss on an input makes the depayloader ask for a keyframe; the mixer forwards it as
//! `KeyframeRequest`, throttled per input.

use std::time::{Duration, Instant};

use costream_mixer::control::{Codec, Event, VideoSpec};
use costream_mixer::{InputSpec, Mixer};
use gstreamer as gst;
use gstreamer::prelude::*;

#[test]
fn lossy_input_triggers_throttled_keyframe_requests() {
    let small = VideoSpec {
        width: 320,
        height: 180,
        fps: 15,
        bitrate_kbps: 300,
    };
    let (mixer, rx) = Mixer::start(small, vec![]).expect("mixer starts");
    let port = mixer
        .add_input(InputSpec {
            input_id: "lossy".into(),
            participant_id: "p".into(),
            display_name: String::new(),
            codec: Codec::Vp8,
            payload_type: 96,
            clock_rate: 90_000,
        })
        .unwrap();
    let added = Instant::now();
    // Long GOP so only the requests (not the encoder's schedule) matter; 5% packet loss.
    let sender = gst::parse::launch(&format!(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,framerate=30/1 ! \
         vp8enc deadline=1 cpu-used=8 keyframe-max-dist=3000 target-bitrate=1500000 ! \
         rtpvp8pay pt=96 mtu=600 ! identity drop-probability=0.05 ! udpsink host=127.0.0.1 port={port}"
    ))
    .unwrap();
    sender.set_state(gst::State::Playing).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let _ = sender.set_state(gst::State::Null);
    let requests: Vec<Instant> = rx
        .try_iter()
        .filter(|e| matches!(e, Event::KeyframeRequest { input_id } if input_id == "lossy"))
        .map(|_| Instant::now())
        .collect();
    // One at add time, then more because of loss, but never more than one per 500 ms.
    assert!(
        requests.len() >= 2,
        "expected loss-driven requests, got {}",
        requests.len()
    );
    assert!(
        requests.len() <= 1 + (added.elapsed().as_millis() / 500) as usize,
        "throttle exceeded: {} requests",
        requests.len()
    );
    mixer.shutdown();
}
