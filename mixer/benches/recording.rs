//! What recording the program costs the mixer: its CPU with and without a recording, in the
//! same run, alternating so drift and noise hit both alike.
//!
//! Why: the issue asks for the recording's overhead. The recording taps the encoded streams
//! (no second encode): mp4mux and a file write, so it should cost a few percent at most. A
//! 2-participant room (720p host + 360p guest, VP8 + Opus in, 720p30 x264 out) pushes to a
//! throwaway nginx-rtmp; publishers are other processes, so this process's CPU is the mixer's.
//!
//! Run: `cargo bench -p costream-mixer --bench recording` (about a minute; numbers on stdout).

mod support;

use std::time::{Duration, Instant};

use costream_mixer::control::{OutputSpec, VideoSpec};
use costream_mixer::Mixer;
use costream_testkit::Nginx;
use support::{cpu_seconds, join};

/// One measured window.
const WINDOW: Duration = Duration::from_secs(6);
/// Windows per variant (alternating off, on, off, on, …).
const ROUNDS: usize = 4;

/// The mixer's share of one core over `WINDOW`.
fn measure() -> f64 {
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    std::thread::sleep(WINDOW);
    (cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64()
}

fn main() {
    let nginx = Nginx::start().expect("nginx");
    let dir = std::env::temp_dir().join(format!("costream-rec-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (mixer, _events) = Mixer::start(
        VideoSpec::default(),
        vec![OutputSpec::new("out0", nginx.rtmp_url("rec-bench"))],
    )
    .expect("mixer");
    let _people = [
        join(&mixer, "host", 1280, 720, 300),
        join(&mixer, "guest", 640, 360, 500),
    ];
    std::thread::sleep(Duration::from_secs(3));

    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        off.push(measure());
        let id = format!("bench-{round}");
        mixer
            .start_recording(&id, dir.join(format!("{id}.mp4")))
            .expect("recording starts");
        std::thread::sleep(Duration::from_millis(500));
        on.push(measure());
        mixer.stop_recording(&id).expect("recording stops");
        std::thread::sleep(Duration::from_secs(1));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let bytes: u64 = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    println!(
        "2-participant room (720p + 360p VP8 in, 720p30 x264 out), mixer CPU (% of one core):"
    );
    println!("| variant | windows | mean | each |");
    println!("| --- | --- | --- | --- |");
    for (name, v) in [("no recording", &off), ("recording", &on)] {
        let each: Vec<String> = v.iter().map(|s| format!("{:.1}", s * 100.0)).collect();
        println!(
            "| {name} | {} | {:.1}% | {} |",
            v.len(),
            mean(v) * 100.0,
            each.join(", ")
        );
    }
    println!(
        "\nrecording / no recording = {:.3}; {:.1} MB written in {} s of recording",
        mean(&on) / mean(&off),
        bytes as f64 / 1e6,
        ROUNDS as u64 * WINDOW.as_secs()
    );
    mixer.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
