//! Diagnostic: start the mixer N times against a private nginx and report how long until the
//! output is Live and whether the encoder produced frames. Run: cargo run --example startup_probe
use std::time::{Duration, Instant};

use costream_mixer::control::{Event, OutputSpec, OutputState, VideoSpec};
use costream_mixer::Mixer;

fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let nginx = costream_testkit::Nginx::start()?;
    for run in 0..runs {
        let t0 = Instant::now();
        let (mixer, rx) = Mixer::start(
            VideoSpec::default(),
            vec![OutputSpec::new(
                "out0",
                nginx.rtmp_url(&format!("probe{run}")),
            )],
        )?;
        let mut live = None;
        while t0.elapsed() < Duration::from_secs(6) && live.is_none() {
            if let Ok(Event::Output {
                state: OutputState::Live,
                ..
            }) = rx.recv_timeout(Duration::from_millis(100))
            {
                live = Some(t0.elapsed());
            }
        }
        println!("run {run}: live after {live:?}; {:?}", mixer.heartbeat());
        mixer.shutdown();
    }
    Ok(())
}
