//! Measures the mixer's own CPU for a 2-guest room (two 640x360 VP8 inputs + Opus, 720p30
//! x264 veryfast 2.5 Mbit/s + AAC to a local nginx-rtmp). The RTP senders run as separate
//! gst-launch-1.0 processes so /proc/self/stat counts only the mixer.
//! Run: cargo run --release --example room_cpu   (or the dev profile, which is -O1/-O2 here)
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use costream_mixer::control::{Codec, OutputSpec, VideoSpec};
use costream_mixer::{InputSpec, Mixer};

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    // After the command: state is field 0, utime 11, stime 12 (clock ticks, 100 per second).
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

fn sender(pipeline: &str) -> std::io::Result<Child> {
    Command::new("gst-launch-1.0")
        .arg("-q")
        .args(pipeline.split_whitespace())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

fn main() -> anyhow::Result<()> {
    let nginx = costream_testkit::Nginx::start()?;
    let (mixer, _events) = Mixer::start(
        VideoSpec::default(),
        vec![OutputSpec::new("out0", nginx.rtmp_url("cpu"))],
    )?;
    let input = |id: &str, codec, pt| InputSpec {
        input_id: id.into(),
        participant_id: id.into(),
        display_name: String::new(),
        codec,
        payload_type: pt,
        clock_rate: if codec == Codec::Opus { 48_000 } else { 90_000 },
    };
    let mut children = Vec::new();
    for (i, color) in ["0xFFFF0000", "0xFF0000FF"].iter().enumerate() {
        let port = mixer.add_input(input(&format!("v{i}"), Codec::Vp8, 96))?;
        children.push(sender(&format!(
            "videotestsrc is-live=true pattern=ball foreground-color={color} ! \
             video/x-raw,width=640,height=360,framerate=30/1 ! \
             vp8enc deadline=1 cpu-used=8 ! rtpvp8pay pt=96 ! udpsink host=127.0.0.1 port={port}"
        ))?);
    }
    let port = mixer.add_input(input("a0", Codec::Opus, 111))?;
    children.push(sender(&format!(
        "audiotestsrc is-live=true ! opusenc ! rtpopuspay pt=111 ! udpsink host=127.0.0.1 port={port}"
    ))?);
    std::thread::sleep(Duration::from_secs(3));
    let (c0, t0) = (cpu_seconds(), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let used = cpu_seconds() - c0;
    let wall = t0.elapsed().as_secs_f64();
    println!(
        "mixer CPU over {wall:.1} s: {:.0}% of one core; {:?}",
        100.0 * used / wall,
        mixer.heartbeat()
    );
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    mixer.shutdown();
    Ok(())
}
