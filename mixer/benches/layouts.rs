//! What each layout costs and how smooth the program stays while people come and go.
//!
//! Why: the issue asks for the CPU cost of every layout in a 4-participant room and for the
//! longest output gap during join / leave / layout changes. The mixer runs in this process; the
//! four publishers are `gst-launch-1.0` children (host 1280x720 + 3 guests 640x360, moving VP8 +
//! Opus), so this process's CPU is the mixer's alone. The output goes to a throwaway nginx-rtmp
//! and ffprobe reads its packet timestamps back.
//!
//! Run: `cargo bench -p costream-mixer --bench layouts` (about a minute; numbers on stdout).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use costream_mixer::control::{Codec, CustomTile, LayoutSpec, OutputSpec, VideoSpec};
use costream_mixer::{InputSpec, Mixer};
use costream_testkit::{video_packets, Nginx};

/// Seconds of steady state measured per layout.
const MEASURE: Duration = Duration::from_secs(6);

/// A publisher process; killed on drop.
struct Publisher(Child);

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn publish(width: u32, height: u32, video_port: u16, audio_port: u16, freq: u32) -> Publisher {
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

fn input(id: &str, participant: &str, codec: Codec, pt: u8) -> InputSpec {
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
fn join(mixer: &Mixer, who: &str, width: u32, height: u32, freq: u32) -> Publisher {
    let video = mixer
        .add_input(input(&format!("{who}-cam"), who, Codec::Vp8, 96))
        .expect("add video");
    let audio = mixer
        .add_input(input(&format!("{who}-mic"), who, Codec::Opus, 111))
        .expect("add audio");
    publish(width, height, video, audio, freq)
}

fn leave(mixer: &Mixer, who: &str) {
    let _ = mixer.remove_input(&format!("{who}-cam"));
    let _ = mixer.remove_input(&format!("{who}-mic"));
}

/// This process's user + system CPU seconds (the mixer's: publishers are other processes).
fn cpu_seconds() -> f64 {
    costream_testkit::cpu_seconds("self").expect("/proc/self/stat")
}

fn longest_gap_ms(url: &str, seconds: u32) -> (usize, f64) {
    let packets = video_packets(url, seconds).expect("ffprobe");
    let gap = packets
        .windows(2)
        .map(|w| w[1].pts - w[0].pts)
        .fold(0.0, f64::max);
    (packets.len(), gap * 1000.0)
}

fn main() {
    let nginx = Nginx::start().expect("nginx");
    let url = nginx.rtmp_url("layouts-bench");
    let (mixer, _events) = Mixer::start(
        VideoSpec::default(),
        vec![OutputSpec::new("out0", url.clone())],
    )
    .expect("mixer");
    let mut people = vec![join(&mixer, "host", 1280, 720, 300)];
    for (i, guest) in ["g1", "g2", "g3"].iter().enumerate() {
        people.push(join(&mixer, guest, 640, 360, 400 + 100 * i as u32));
    }
    std::thread::sleep(Duration::from_secs(3));

    let tile = |who: &str, x, y, w, h, z| CustomTile {
        participant_id: who.into(),
        x,
        y,
        width: w,
        height: h,
        z,
    };
    let layouts = [
        ("grid", LayoutSpec::Grid {}),
        ("speaker", LayoutSpec::Speaker { pin: None }),
        ("pip", LayoutSpec::Pip { pin: None }),
        (
            "custom",
            LayoutSpec::Custom {
                tiles: vec![
                    tile("host", 0.0, 0.0, 0.5, 1.0, 0),
                    tile("g1", 0.5, 0.0, 0.5, 0.5, 0),
                    tile("g2", 0.5, 0.5, 0.25, 0.5, 0),
                    tile("g3", 0.75, 0.5, 0.25, 0.5, 0),
                ],
            },
        ),
    ];
    println!("4-participant room (720p + 3x360p VP8 in, 720p30 x264 out), mixer CPU per layout:");
    println!("| layout | mixer CPU (% of one core) |");
    println!("| --- | --- |");
    for (name, layout) in &layouts {
        mixer.set_layout(layout.clone()).expect("layout");
        std::thread::sleep(Duration::from_secs(2));
        let (cpu0, t0) = (cpu_seconds(), Instant::now());
        std::thread::sleep(MEASURE);
        let share = (cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64();
        println!("| {name} | {:.0}% |", share * 100.0);
    }

    // Churn while watching the wire: a layout change, a leave, a join, another layout change.
    let probe_url = url.clone();
    let probe = std::thread::spawn(move || longest_gap_ms(&probe_url, 12));
    std::thread::sleep(Duration::from_secs(2));
    mixer.set_layout(LayoutSpec::Grid {}).expect("grid");
    std::thread::sleep(Duration::from_secs(2));
    leave(&mixer, "g3");
    people.pop();
    std::thread::sleep(Duration::from_secs(2));
    people.push(join(&mixer, "g3", 640, 360, 600));
    std::thread::sleep(Duration::from_secs(2));
    mixer
        .set_layout(LayoutSpec::Pip { pin: None })
        .expect("pip");
    let (packets, gap) = probe.join().expect("probe");
    println!(
        "\njoin / leave / layout changes over 12 s: {packets} output packets, longest gap {gap:.0} ms \
         (30 fps: 33 ms between frames)"
    );
    mixer.shutdown();
}
