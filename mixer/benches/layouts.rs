//! What each layout costs and how smooth the program stays while people come and go.
//!
//! Why: the issue asks for the CPU cost of every layout in a 4-participant room and for the
//! longest output gap during join / leave / layout changes. The mixer runs in this process; the
//! four publishers are `gst-launch-1.0` children (host 1280x720 + 3 guests 640x360, moving VP8 +
//! Opus), so this process's CPU is the mixer's alone. The output goes to a throwaway nginx-rtmp
//! and ffprobe reads its packet timestamps back.
//!
//! Run: `cargo bench -p costream-mixer --bench layouts` (about a minute; numbers on stdout).

mod support;

use std::time::{Duration, Instant};

use costream_mixer::control::{CustomTile, LayoutSpec, OutputSpec, VideoSpec};
use costream_mixer::Mixer;
use costream_testkit::{video_packets, Nginx};
use support::{cpu_seconds, join};

/// Seconds of steady state measured per layout.
const MEASURE: Duration = Duration::from_secs(6);

fn leave(mixer: &Mixer, who: &str) {
    let _ = mixer.remove_input(&format!("{who}-cam"));
    let _ = mixer.remove_input(&format!("{who}-mic"));
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
