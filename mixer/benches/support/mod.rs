//! What the mixer benches share: publisher processes (`gst-launch-1.0` children, so this
//! process's CPU is the mixer's alone), inputs, and this process's CPU time.

use std::process::{Child, Command, Stdio};

use costream_mixer::control::Codec;
use costream_mixer::{InputSpec, Mixer};

/// A publisher process; killed on drop.
pub struct Publisher(Child);

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Moving VP8 video (`width`x`height`, 30 fps) and an Opus tone at `freq` Hz, as RTP to the
/// mixer's ports.
pub fn publish(width: u32, height: u32, video_port: u16, audio_port: u16, freq: u32) -> Publisher {
    let launch = format!(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate=30/1 ! \
         vp8enc deadline=1 cpu-used=8 keyframe-max-dist=60 target-bitrate=1500000 ! rtpvp8pay pt=96 ! \
         udpsink host=127.0.0.1 port={video_port} \
         audiotestsrc is-live=true wave=sine freq={freq} volume=0.3 ! audio/x-raw,rate=48000,channels=2 ! \
         opusenc ! rtpopuspay pt=111 ! udpsink host=127.0.0.1 port={audio_port}"
    );
    let child = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(launch.split_whitespace())
        .stdout(Stdio::null())
        .spawn()
        .expect("gst-launch-1.0");
    Publisher(child)
}

pub fn input(id: &str, participant: &str, codec: Codec, pt: u8) -> InputSpec {
    InputSpec {
        input_id: id.into(),
        participant_id: participant.into(),
        display_name: participant.into(),
        codec,
        payload_type: pt,
        clock_rate: if codec == Codec::Opus { 48_000 } else { 90_000 },
    }
}

/// Adds one participant's camera and microphone and starts its publisher process.
pub fn join(mixer: &Mixer, who: &str, width: u32, height: u32, freq: u32) -> Publisher {
    let video = mixer
        .add_input(input(&format!("{who}-cam"), who, Codec::Vp8, 96))
        .expect("add video");
    let audio = mixer
        .add_input(input(&format!("{who}-mic"), who, Codec::Opus, 111))
        .expect("add audio");
    publish(width, height, video, audio, freq)
}

/// This process's user + system CPU seconds (the mixer's: publishers are other processes).
pub fn cpu_seconds() -> f64 {
    costream_testkit::cpu_seconds("self").expect("/proc/self/stat")
}
