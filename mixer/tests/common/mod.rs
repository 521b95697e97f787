//! Shared by the mixer's pipeline tests: GStreamer RTP senders standing in for publishers, an
//! event collector, and colour sampling of pulled-back frames.
#![allow(dead_code)] // each test file uses a different subset

use std::sync::mpsc::Receiver;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use costream_mixer::control::{Codec, Event, OutputSpec, OutputState, VideoSpec};
use costream_mixer::{InputSpec, Mixer};
use costream_testkit::{mean_rgb, wait_for, Nginx};
use gstreamer as gst;
use gstreamer::prelude::*;

/// Each test runs a 720p x264 encode; on 2 cores they must not run at the same time.
pub static HEAVY: Mutex<()> = Mutex::new(());

pub const RED: [u8; 3] = [255, 0, 0];
pub const BLUE: [u8; 3] = [0, 0, 255];
pub const TOL: u8 = 12;

/// Collects events from the mixer and answers questions about what has been seen so far.
pub struct Events {
    rx: Receiver<Event>,
    pub seen: Vec<Event>,
}

impl Events {
    pub fn new(rx: Receiver<Event>) -> Self {
        Self {
            rx,
            seen: Vec::new(),
        }
    }

    pub fn pump(&mut self) {
        while let Ok(ev) = self.rx.try_recv() {
            self.seen.push(ev);
        }
    }

    pub fn output_state(&mut self, id: &str) -> Option<(OutputState, Option<String>)> {
        self.pump();
        self.seen.iter().rev().find_map(|e| match e {
            Event::Output {
                output_id,
                state,
                reason,
                ..
            } if output_id == id => Some((*state, reason.clone())),
            _ => None,
        })
    }

    pub fn wait_output(
        &mut self,
        id: &str,
        want: OutputState,
        timeout: Duration,
    ) -> Option<String> {
        let got = wait_for(Instant::now() + timeout, || {
            self.output_state(id).filter(|(s, _)| *s == want)
        });
        match got {
            Some((_, reason)) => reason,
            None => panic!("{id} never {want:?}; events: {:?}", self.seen),
        }
    }
}

/// A small canvas for tests about audio or outputs, where picture size does not matter.
pub const SMALL: VideoSpec = VideoSpec {
    width: 640,
    height: 360,
    fps: 30,
    bitrate_kbps: 800,
};

/// A mixer pushing `video` to `nginx` under `key` as output `out0`, once that output is live.
/// Returns the mixer, its events and the stream's URL.
pub fn live_mixer(nginx: &Nginx, key: &str, video: VideoSpec) -> (Mixer, Events, String) {
    let (mixer, mut events, url) = mixer_to(nginx, key, video);
    events.wait_output("out0", OutputState::Live, Duration::from_secs(15));
    (mixer, events, url)
}

/// A mixer pushing `video` to `nginx` under `key` as output `out0`, just started (not yet
/// live). Returns the mixer, its events and the stream's URL.
pub fn mixer_to(nginx: &Nginx, key: &str, video: VideoSpec) -> (Mixer, Events, String) {
    let url = nginx.rtmp_url(key);
    let output = OutputSpec::new("out0", url.clone());
    let (mixer, rx) = Mixer::start(video, vec![output]).expect("mixer starts");
    (mixer, Events::new(rx), url)
}

pub fn video_input(id: &str, codec: Codec, pt: u8) -> InputSpec {
    input_of(id, id, codec, pt)
}

/// An input `id` belonging to `participant` (a participant's audio and video share the id).
pub fn input_of(id: &str, participant: &str, codec: Codec, pt: u8) -> InputSpec {
    InputSpec {
        input_id: id.into(),
        participant_id: participant.into(),
        display_name: String::new(),
        codec,
        payload_type: pt,
        clock_rate: if codec == Codec::Opus { 48_000 } else { 90_000 },
    }
}

/// A GStreamer RTP sender, stopped on drop.
pub struct Sender(gst::Element);

impl Sender {
    /// A named element of the sender's pipeline (to change it while it runs).
    pub fn element(&self, name: &str) -> gst::Element {
        let bin = self
            .0
            .downcast_ref::<gst::Bin>()
            .expect("a pipeline is a bin");
        bin.by_name(name)
            .unwrap_or_else(|| panic!("no element {name}"))
    }

    pub fn start(desc: &str) -> Sender {
        let p = gst::parse::launch(desc).expect("sender pipeline parses");
        p.set_state(gst::State::Playing).expect("sender plays");
        Sender(p)
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

pub fn vp8_sender(rgb: u32, port: u16) -> Sender {
    Sender::start(&format!(
        "videotestsrc is-live=true pattern=solid-color foreground-color={:#010x} ! \
         video/x-raw,width=640,height=360,framerate=30/1 ! \
         vp8enc deadline=1 cpu-used=8 keyframe-max-dist=30 ! rtpvp8pay pt=96 ! \
         udpsink host=127.0.0.1 port={port}",
        0xFF00_0000u32 | rgb
    ))
}

pub fn h264_sender(rgb: u32, port: u16) -> Sender {
    Sender::start(&format!(
        "videotestsrc is-live=true pattern=solid-color foreground-color={:#010x} ! \
         video/x-raw,width=640,height=360,framerate=30/1 ! \
         x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! \
         video/x-h264,profile=constrained-baseline ! rtph264pay pt=102 config-interval=-1 ! \
         udpsink host=127.0.0.1 port={port}",
        0xFF00_0000u32 | rgb
    ))
}

pub fn opus_sender(port: u16) -> Sender {
    tone_sender(port, "sine")
}

/// Opus RTP of an `audiotestsrc` `wave` (e.g. "sine", or "silence" for a muted talker).
pub fn tone_sender(port: u16, wave: &str) -> Sender {
    loud_tone_sender(port, wave, 440, 0.8)
}

/// Opus RTP of a tone at `freq` Hz with peak amplitude `volume` (1.0 = full scale).
pub fn loud_tone_sender(port: u16, wave: &str, freq: u32, volume: f64) -> Sender {
    Sender::start(&format!(
        "audiotestsrc is-live=true wave={wave} freq={freq} volume={volume} ! \
         audio/x-raw,rate=48000,channels=2 ! \
         opusenc ! rtpopuspay pt=111 ! udpsink host=127.0.0.1 port={port}"
    ))
}

/// Mean colour of a 320x180 frame's region given in 1280x720 canvas coordinates, shrunk to the
/// middle half so scaling edges do not count.
pub fn tile_color(frame: &[u8], x: u32, y: u32, w: u32, h: u32) -> [u8; 3] {
    let (x, y, w, h) = (x / 4, y / 4, w / 4, h / 4);
    mean_rgb(frame, 320, x + w / 4, y + h / 4, w / 2, h / 2)
}

/// Flash + beep: a black 320x180 VP8 picture that turns white, and a 1 kHz tone that sounds,
/// for the first 100 ms of every second of the sender's clock. Both are cut from live test
/// sources by buffer timestamp, so they are simultaneous by construction.
pub fn flash_beep_sender(video_port: u16, audio_port: u16) -> Sender {
    const ON: u64 = 100_000_000; // ns per second lit / sounding
    let sender = Sender::start(&format!(
        "videotestsrc name=v is-live=true pattern=solid-color foreground-color=0xff000000 ! \
         video/x-raw,format=I420,width=320,height=180,framerate=30/1 ! \
         vp8enc deadline=1 cpu-used=8 keyframe-max-dist=30 ! rtpvp8pay pt=96 ! \
         udpsink host=127.0.0.1 port={video_port} \
         audiotestsrc name=a is-live=true wave=sine freq=1000 volume=0.5 samplesperbuffer=480 ! \
         audio/x-raw,format=S16LE,rate=48000,channels=2 ! opusenc frame-size=10 ! \
         rtpopuspay pt=111 ! udpsink host=127.0.0.1 port={audio_port}"
    ));
    let lit = |buffer: &gst::BufferRef| {
        buffer
            .pts()
            .is_some_and(|pts| pts.nseconds() % 1_000_000_000 < ON)
    };
    let video = sender.element("v").static_pad("src").expect("src");
    video.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(gst::PadProbeData::Buffer(buffer)) = &mut info.data {
            if lit(buffer) {
                let buffer = buffer.make_mut();
                if let Ok(mut map) = buffer.map_writable() {
                    let luma = 320 * 180;
                    map[..luma].fill(235);
                }
            }
        }
        gst::PadProbeReturn::Ok
    });
    let audio = sender.element("a").static_pad("src").expect("src");
    audio.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(gst::PadProbeData::Buffer(buffer)) = &mut info.data {
            if !lit(buffer) {
                let buffer = buffer.make_mut();
                if let Ok(mut map) = buffer.map_writable() {
                    map.fill(0);
                }
            }
        }
        gst::PadProbeReturn::Ok
    });
    sender
}
