//! WhipPublisher against a real (in-test) WHIP endpoint over HTTP: 201 + Location, media,
//! keyframe requests back to the publisher, DELETE on leave, HTTP errors surfaced.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::whip_server::{TestWhipServer, TOKEN};
use common::*;
use costream_ingest::{
    CodecName, IngestError, MediaKind, PublishMedia, SessionEvent, TrackInfo, WhipPublisher,
};
use tokio::net::UdpSocket;

/// Waits until tracks of all `kinds` started (in any order); returns (session id, tracks).
async fn started_tracks(
    server: &mut TestWhipServer,
    kinds: &[MediaKind],
) -> (String, Vec<TrackInfo>) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut tracks: Vec<TrackInfo> = Vec::new();
    let mut session = String::new();
    while !kinds.iter().all(|k| tracks.iter().any(|t| t.kind == *k)) {
        let (id, event) = tokio::time::timeout_at(deadline, server.events.recv())
            .await
            .unwrap_or_else(|_| panic!("tracks did not all start; got {tracks:?}"))
            .expect("events closed");
        if let SessionEvent::TrackStarted(info) = event {
            session = id;
            tracks.push(info);
        }
    }
    let ordered = kinds
        .iter()
        .map(|k| tracks.iter().find(|t| t.kind == *k).unwrap().clone())
        .collect();
    (session, ordered)
}

async fn wait_closed(server: &mut TestWhipServer) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, event) = tokio::time::timeout_at(deadline, server.events.recv())
            .await
            .expect("no Closed")
            .expect("events closed");
        if let SessionEvent::Closed { reason } = event {
            return reason;
        }
    }
}

/// Writes synthetic frames until aborted.
fn spawn_writer(publisher: Arc<WhipPublisher>, video: bool) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut n = 0u32;
        // A fake H.264 access unit (SPS, PPS, IDR) in Annex B; VP8 accepts any bytes.
        let h264 = [
            &[0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1f, 0x8c][..],
            &[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80][..],
            &[0, 0, 0, 1, 0x65][..],
            &[0x88; 2000][..],
        ]
        .concat();
        loop {
            tick.tick().await;
            n += 1;
            publisher
                .write_audio(&[0xF8, 0xFF, 0xFE], Duration::from_millis(20))
                .await
                .unwrap();
            if video && n % 2 == 0 {
                publisher
                    .write_video(&h264, Duration::from_millis(40))
                    .await
                    .unwrap();
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_vp8_and_opus_over_whip_then_leave_with_delete() {
    init_tracing();
    let mut server = TestWhipServer::start().await;
    let started = Instant::now();
    let mut publisher = WhipPublisher::connect(
        &server.url("room1"),
        TOKEN,
        PublishMedia {
            video: Some(CodecName::Vp8),
            audio: true,
        },
    )
    .await
    .expect("connect");
    eprintln!(
        "WHIP connect took {:?} (publisher says {:?})",
        started.elapsed(),
        publisher.connect_time()
    );
    let mut keyframes = publisher.keyframe_requests();
    let resource = publisher.resource_url().to_owned();
    assert!(
        resource.starts_with(&format!("http://{}/whip/room1/", server.addr)),
        "relative Location resolved against the POST URL: {resource}"
    );
    let publisher = Arc::new(publisher);
    let writer = spawn_writer(Arc::clone(&publisher), true);

    let (session_id, tracks) =
        started_tracks(&mut server, &[MediaKind::Video, MediaKind::Audio]).await;
    let (video, audio) = (&tracks[0], &tracks[1]);
    assert!(resource.ends_with(&session_id));
    assert_eq!(video.codec, CodecName::Vp8);
    assert_eq!(audio.codec, CodecName::Opus);
    let session = server.session(&session_id);

    let sink = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    session.set_forward_targets(&video.track_id, vec![sink.local_addr().unwrap()]);
    let mut buf = [0u8; 2048];
    let (n, _) = tokio::time::timeout(WAIT, sink.recv_from(&mut buf))
        .await
        .expect("no forwarded RTP")
        .unwrap();
    assert_eq!(rtp_header(&buf[..n]).unwrap().0, video.payload_type);

    session.request_keyframe(&video.track_id).await;
    tokio::time::timeout(WAIT, keyframes.recv())
        .await
        .expect("publisher saw no keyframe request")
        .expect("keyframe channel closed");

    writer.abort();
    let _ = writer.await;
    let publisher = Arc::try_unwrap(publisher).expect("sole owner");
    publisher.leave().await.expect("leave");
    let deleted = tokio::time::timeout(WAIT, server.deleted.recv())
        .await
        .expect("no DELETE")
        .unwrap();
    assert_eq!(deleted, session_id);
    let reason = wait_closed(&mut server).await;
    eprintln!("server session closed: {reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_h264_audio_and_video() {
    init_tracing();
    let mut server = TestWhipServer::start().await;
    let publisher = WhipPublisher::connect(
        &server.url("room2"),
        TOKEN,
        PublishMedia {
            video: Some(CodecName::H264),
            audio: true,
        },
    )
    .await
    .expect("connect");
    let publisher = Arc::new(publisher);
    let writer = spawn_writer(Arc::clone(&publisher), true);
    let (_, tracks) = started_tracks(&mut server, &[MediaKind::Video, MediaKind::Audio]).await;
    assert_eq!(
        (tracks[0].codec, tracks[0].clock_rate),
        (CodecName::H264, 90_000)
    );
    writer.abort();
    let _ = writer.await;
    Arc::try_unwrap(publisher).unwrap().leave().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_only_publisher() {
    init_tracing();
    let mut server = TestWhipServer::start().await;
    let publisher = WhipPublisher::connect(
        &server.url("room3"),
        TOKEN,
        PublishMedia {
            video: None,
            audio: true,
        },
    )
    .await
    .expect("connect");
    let publisher = Arc::new(publisher);
    let writer = spawn_writer(Arc::clone(&publisher), false);
    let (_, tracks) = started_tracks(&mut server, &[MediaKind::Audio]).await;
    assert_eq!(tracks[0].codec, CodecName::Opus);
    assert!(publisher
        .write_video(b"x", Duration::from_millis(1))
        .await
        .is_err());
    writer.abort();
    let _ = writer.await;
    Arc::try_unwrap(publisher).unwrap().leave().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_carry_status_and_body() {
    init_tracing();
    let server = TestWhipServer::start().await;
    let media = PublishMedia {
        video: Some(CodecName::Vp8),
        audio: true,
    };
    match WhipPublisher::connect(&server.url("room1"), "wrong-token", media).await {
        Err(IngestError::Http { status, body }) => {
            assert_eq!(status, 401);
            assert!(body.contains("bearer token"), "{body}");
        }
        other => panic!("expected Http 401, got {other:?}"),
    }
    // Nothing listens at /nope: axum answers 404 (empty body), still an Http error.
    let url = format!("http://{}/nope", server.addr);
    assert!(matches!(
        WhipPublisher::connect(&url, TOKEN, media).await,
        Err(IngestError::Http { status: 404, .. })
    ));
    // Unreachable server.
    assert!(matches!(
        WhipPublisher::connect("http://127.0.0.1:9/whip/x", TOKEN, media).await,
        Err(IngestError::Whip(_))
    ));
    assert!(matches!(
        WhipPublisher::connect("not a url", TOKEN, media).await,
        Err(IngestError::Whip(_))
    ));
    assert!(matches!(
        WhipPublisher::connect(
            &server.url("room1"),
            TOKEN,
            PublishMedia {
                video: Some(CodecName::Opus),
                audio: false
            }
        )
        .await,
        Err(IngestError::UnsupportedCodec(_))
    ));
}
