//! Our logs (at TRACE, where SDPs are dumped) never contain the bearer token, an ICE password
//! or a full DTLS fingerprint.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::whip_server::{TestWhipServer, TOKEN};
use costream_ingest::{CodecName, PublishMedia, WhipPublisher};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Values of `a=<key>:` lines in an SDP.
fn values<'a>(sdp: &'a str, key: &str) -> Vec<&'a str> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix(key))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_ice_passwords_and_fingerprints_stay_out_of_logs() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_env_filter("costream_ingest=trace")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let server = TestWhipServer::start().await;
    let publisher = WhipPublisher::connect(
        &server.url("room1"),
        TOKEN,
        PublishMedia {
            video: Some(CodecName::Vp8),
            audio: true,
        },
    )
    .await
    .expect("connect");
    publisher.leave().await.expect("leave");
    // Failure paths log too.
    let _ = WhipPublisher::connect(
        &format!("{}?token={TOKEN}", server.url("room1")),
        "wrong",
        PublishMedia {
            video: None,
            audio: true,
        },
    )
    .await;

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("offer"), "trace logs were captured:\n{logs}");
    assert!(!logs.contains(TOKEN), "token leaked:\n{logs}");
    let sdps = server.sdps.lock().unwrap().clone();
    assert!(!sdps.is_empty());
    for sdp in &sdps {
        for pwd in values(sdp, "a=ice-pwd:") {
            assert!(!logs.contains(pwd), "ICE password {pwd} leaked");
        }
        for fingerprint in values(sdp, "a=fingerprint:") {
            assert!(!logs.contains(fingerprint), "fingerprint leaked");
        }
    }
}
