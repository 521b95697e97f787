//! Stream keys are secrets: run outputs that connect, fail and get torn down with every log
//! level on, and make sure no key ever shows up in logs or events.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use costream_mixer::control::{encode_line, Event, OutputSpec, OutputState, VideoSpec};
use costream_mixer::Mixer;
use costream_testkit::{wait_until, Nginx};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn stream_keys_never_reach_logs_or_events() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let nginx = Nginx::start().expect("nginx");
    let good_key = "goodsecretkey42";
    let bad_key = "badsecretkey77";
    let small = VideoSpec {
        width: 320,
        height: 180,
        fps: 15,
        bitrate_kbps: 300,
    };
    let (mixer, rx) = Mixer::start(
        small,
        vec![
            OutputSpec::new("bad", format!("rtmp://127.0.0.1:1/live/{bad_key}")),
            OutputSpec::new("good", nginx.rtmp_url(good_key)),
        ],
    )
    .expect("mixer starts");
    let mut seen = String::new();
    let ok = wait_until(Instant::now() + Duration::from_secs(15), || {
        while let Ok(ev) = rx.try_recv() {
            seen.push_str(&encode_line(&ev));
        }
        seen.contains(r#""state":"failed""#) && seen.contains(r#""state":"live""#)
    });
    assert!(ok, "outputs did not settle: {seen}");
    let _ = mixer.heartbeat();
    assert!(matches!(mixer.output_states()[0].1, OutputState::Failed));
    mixer.shutdown();
    while let Ok(ev) = rx.try_recv() {
        if let Event::Output { .. } = ev {
            seen.push_str(&encode_line(&ev));
        }
    }
    let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
    assert!(
        logs.contains("output added"),
        "logging was not captured: {logs}"
    );
    for key in [good_key, bad_key] {
        assert!(!logs.contains(key), "{key} leaked into logs:\n{logs}");
        assert!(!seen.contains(key), "{key} leaked into events:\n{seen}");
    }
}
