//! Server side over real WebRTC on loopback, no HTTP: an independent webrtc-rs publisher →
//! `IngestEngine::accept_offer` → events, UDP forwarding, PLI, close.

mod common;

use std::time::{Duration, Instant};

use common::*;
use costream_ingest::{CodecName, IngestConfig, IngestEngine, MediaKind, SessionEvent, TrackInfo};
use tokio::net::UdpSocket;

fn engine() -> IngestEngine {
    IngestEngine::new(IngestConfig {
        include_loopback: true,
        ..Default::default()
    })
    .expect("engine")
}

async fn recv_rtp(socket: &UdpSocket) -> anyhow::Result<(u8, u32, usize)> {
    let mut buf = [0u8; 2048];
    let (n, _) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf)).await??;
    let (pt, ssrc) = rtp_header(&buf[..n]).ok_or_else(|| anyhow::anyhow!("not RTP"))?;
    Ok((pt, ssrc, n))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_connects_tracks_start_rtp_is_forwarded_and_pli_reaches_publisher() {
    init_tracing();
    let engine = engine();
    let mut publisher = RawPublisher::new(vp8()).await.unwrap();

    let offer = publisher.offer().await.unwrap();
    let started = Instant::now();
    let (session, answer, mut events) = engine.accept_offer(&offer).await.unwrap();
    let answer_time = started.elapsed();
    assert!(
        answer.contains("a=candidate"),
        "answer must carry candidates:\n{answer}"
    );
    assert!(
        answer.contains("a=recvonly"),
        "sendonly offer gets a recvonly answer"
    );
    assert!(!answer.contains("a=end-of-candidates") || answer.contains("a=candidate"));
    for candidate in answer.lines().filter(|l| l.starts_with("a=candidate")) {
        eprintln!("answer {candidate}");
    }
    publisher.apply_answer(answer.clone()).await.unwrap();
    let media = publisher.spawn_media();

    let mut seen = Vec::new();
    wait_event(&mut events, &mut seen, |e| {
        matches!(e, SessionEvent::Connected)
    })
    .await
    .unwrap();
    let connect_time = started.elapsed();
    publisher.wait_connected().await.unwrap();

    let video = track(&mut events, &mut seen, MediaKind::Video).await;
    let audio = track(&mut events, &mut seen, MediaKind::Audio).await;
    eprintln!(
        "answer after {answer_time:?}, Connected after {connect_time:?}, tracks: {video:?} {audio:?}"
    );
    // webrtc-rs' default codecs put VP8 at 96 and Opus at 111; the answer keeps the offer's PTs.
    assert_eq!(
        (video.codec, video.payload_type, video.clock_rate),
        (CodecName::Vp8, 96, 90_000)
    );
    assert_eq!(
        (audio.codec, audio.payload_type, audio.clock_rate),
        (CodecName::Opus, 111, 48_000)
    );
    assert_ne!(video.ssrc, 0);
    assert_ne!(video.track_id, audio.track_id);
    assert_eq!(
        video.track_id, "cam",
        "the publisher's msid track id is kept"
    );

    let video_sink = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let audio_sink = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    session.set_forward_targets(&video.track_id, vec![video_sink.local_addr().unwrap()]);
    session.set_forward_targets(&audio.track_id, vec![audio_sink.local_addr().unwrap()]);
    for _ in 0..5 {
        let (pt, ssrc, _) = recv_rtp(&video_sink).await.unwrap();
        assert_eq!((pt, ssrc), (96, video.ssrc));
        let (pt, ssrc, _) = recv_rtp(&audio_sink).await.unwrap();
        assert_eq!((pt, ssrc), (111, audio.ssrc));
    }

    session.request_keyframe(&video.track_id).await;
    let pli_ssrc = tokio::time::timeout(WAIT, publisher.plis.recv())
        .await
        .expect("publisher saw no PLI")
        .unwrap();
    assert_eq!(pli_ssrc, video.ssrc);
    // Throttled: an immediate second request is not sent.
    session.request_keyframe(&video.track_id).await;
    // Audio has no keyframes; must be a harmless no-op.
    session.request_keyframe(&audio.track_id).await;
    session.request_keyframe("no-such-track").await;

    // Retargeting replaces the set: the old socket stops receiving.
    let second = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    session.set_forward_targets(&video.track_id, vec![second.local_addr().unwrap()]);
    recv_rtp(&second).await.unwrap();
    drain(&video_sink).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), recv_rtp(&video_sink))
            .await
            .is_err(),
        "old target still receives after retargeting"
    );

    let stats = session.stats();
    let video_stats = stats
        .tracks
        .iter()
        .find(|t| t.track_id == video.track_id)
        .unwrap();
    assert!(video_stats.packets_forwarded >= 5, "{video_stats:?}");
    assert!(video_stats.bytes_forwarded > 0);
    assert_eq!(
        video_stats.keyframe_requests, 1,
        "second PLI must be throttled"
    );
    assert_eq!(video_stats.codec, Some(CodecName::Vp8));
    assert!(video_stats.live);

    session.close().await;
    session.close().await; // idempotent
    let closed = wait_event(&mut events, &mut seen, |e| {
        matches!(e, SessionEvent::Closed { .. })
    })
    .await
    .unwrap();
    eprintln!("{closed:?}");
    wait_event(&mut events, &mut seen, |e| {
        matches!(e, SessionEvent::TrackEnded { .. })
    })
    .await
    .unwrap();
    let closed_count = seen
        .iter()
        .filter(|e| matches!(e, SessionEvent::Closed { .. }))
        .count();
    assert_eq!(closed_count, 1);
    media.abort();
    let _ = publisher.pc.close().await;
}

async fn track(
    events: &mut tokio::sync::mpsc::Receiver<SessionEvent>,
    seen: &mut Vec<SessionEvent>,
    kind: MediaKind,
) -> TrackInfo {
    match wait_event(
        events,
        seen,
        |e| matches!(e, SessionEvent::TrackStarted(t) if t.kind == kind),
    )
    .await
    .unwrap()
    {
        SessionEvent::TrackStarted(info) => info,
        _ => unreachable!(),
    }
}

async fn drain(socket: &UdpSocket) {
    let mut buf = [0u8; 2048];
    while socket.try_recv(&mut buf).is_ok() {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_publisher_is_reported_closed() {
    init_tracing();
    let engine = engine();
    let mut publisher = RawPublisher::new(vp8()).await.unwrap();
    let (_session, mut events) = engine_session(&engine, &publisher).await.unwrap();
    let mut seen = Vec::new();
    wait_event(&mut events, &mut seen, |e| {
        matches!(e, SessionEvent::Connected)
    })
    .await
    .unwrap();
    publisher.wait_connected().await.unwrap();
    // Closing the publisher's connection without any signalling is what a crashed browser
    // looks like (webrtc-rs may also send a DTLS close_notify, which is fine too).
    let gone = Instant::now();
    publisher.pc.close().await.unwrap();
    let deadline = Duration::from_secs(25);
    let closed = tokio::time::timeout(deadline, async {
        loop {
            match events.recv().await {
                Some(SessionEvent::Closed { reason }) => return reason,
                Some(_) => continue,
                None => panic!("channel closed without Closed"),
            }
        }
    })
    .await
    .expect("no Closed event after the publisher vanished");
    eprintln!("Closed after {:?}: {closed}", gone.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_range_and_public_ip_show_up_in_the_answer_and_still_connect() {
    init_tracing();
    let engine = IngestEngine::new(IngestConfig {
        udp_ports: Some((41_000, 41_100)),
        public_ips: vec!["203.0.113.7".into()],
        include_loopback: true,
        ..Default::default()
    })
    .unwrap();
    let mut publisher = RawPublisher::new(vp8()).await.unwrap();
    let offer = publisher.offer().await.unwrap();
    let (session, answer, mut events) = engine.accept_offer(&offer).await.unwrap();
    let candidates: Vec<&str> = answer
        .lines()
        .filter(|l| l.starts_with("a=candidate") && l.contains(" 1 udp "))
        .collect();
    for c in &candidates {
        eprintln!("{c}");
        let port: u16 = c.split_whitespace().nth(5).unwrap().parse().unwrap();
        assert!(
            (41_000..=41_100).contains(&port),
            "port outside the range: {c}"
        );
    }
    assert!(
        candidates
            .iter()
            .any(|c| c.contains("203.0.113.7") && c.contains("typ srflx")),
        "public IP advertised as srflx: {candidates:?}"
    );
    assert!(
        candidates.iter().any(|c| c.contains("typ host")),
        "host candidates kept"
    );
    publisher.apply_answer(answer).await.unwrap();
    let mut seen = Vec::new();
    wait_event(&mut events, &mut seen, |e| {
        matches!(e, SessionEvent::Connected)
    })
    .await
    .unwrap();
    publisher.wait_connected().await.unwrap();
    session.close().await;
    let _ = publisher.pc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_offer_with_many_profiles_answers_packetization_mode_1_only() {
    init_tracing();
    let engine = engine();
    // webrtc-rs' default codec list offers H.264 in modes 0 and 1 and several profiles, like
    // a browser does.
    let publisher = RawPublisher::new(webrtc::api::media_engine::MIME_TYPE_H264)
        .await
        .unwrap();
    let offer = publisher.offer().await.unwrap();
    assert!(offer.contains("packetization-mode=0"));
    let (session, answer, mut events) = engine.accept_offer(&offer).await.unwrap();
    let h264_pts: Vec<String> = answer
        .lines()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .filter(|l| l.contains("H264/90000"))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert!(!h264_pts.is_empty(), "{answer}");
    for pt in &h264_pts {
        let fmtp = answer
            .lines()
            .find(|l| l.starts_with(&format!("a=fmtp:{pt} ")))
            .unwrap_or_else(|| panic!("no fmtp for {pt}:\n{answer}"));
        assert!(fmtp.contains("packetization-mode=1"), "{fmtp}");
    }
    publisher.apply_answer(answer).await.unwrap();
    let media = publisher.spawn_media();
    let mut seen = Vec::new();
    let started = wait_event(
        &mut events,
        &mut seen,
        |e| matches!(e, SessionEvent::TrackStarted(t) if t.kind == MediaKind::Video),
    )
    .await
    .unwrap();
    let SessionEvent::TrackStarted(video) = started else {
        unreachable!()
    };
    assert_eq!(video.codec, CodecName::H264);
    assert!(h264_pts.contains(&video.payload_type.to_string()));
    media.abort();
    session.close().await;
    let _ = publisher.pc.close().await;
}
