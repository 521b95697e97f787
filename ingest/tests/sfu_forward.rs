//! The SFU return path: a publisher's RTP forwarded into another peer connection's
//! `TrackLocalStaticRTP` (ForwardTarget::Rtp) reaches that connection's remote peer.

mod common;

use common::whip_server;

use std::sync::Arc;

use common::*;
use costream_ingest::{ForwardTarget, IngestConfig, IngestEngine, MediaKind, SessionEvent};
use tokio::sync::mpsc;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MediaEngine, MIME_TYPE_VP8};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::APIBuilder;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecCapability;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;

async fn peer() -> Arc<RTCPeerConnection> {
    let mut media_engine = MediaEngine::default();
    media_engine.register_default_codecs().unwrap();
    let registry = register_default_interceptors(Registry::new(), &mut media_engine).unwrap();
    let mut settings = SettingEngine::default();
    settings.set_include_loopback_candidate(true);
    let api = APIBuilder::new()
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .build();
    Arc::new(
        api.new_peer_connection(RTCConfiguration::default())
            .await
            .unwrap(),
    )
}

async fn gathered_local(
    pc: &RTCPeerConnection,
    desc: webrtc::peer_connection::sdp::session_description::RTCSessionDescription,
) -> webrtc::peer_connection::sdp::session_description::RTCSessionDescription {
    let mut done = pc.gathering_complete_promise().await;
    pc.set_local_description(desc).await.unwrap();
    tokio::time::timeout(WAIT, done.recv()).await.unwrap();
    pc.local_description().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_reaches_a_subscriber_through_track_local_static_rtp() {
    init_tracing();
    let engine = IngestEngine::new(IngestConfig {
        include_loopback: true,
        ..Default::default()
    })
    .unwrap();
    let mut publisher = RawPublisher::new(vp8()).await.unwrap();
    let (session, mut events) = engine_session(&engine, &publisher).await.unwrap();
    let media = publisher.spawn_media();
    publisher.wait_connected().await.unwrap();
    let mut seen = Vec::new();
    let video = match wait_event(
        &mut events,
        &mut seen,
        |e| matches!(e, SessionEvent::TrackStarted(t) if t.kind == MediaKind::Video),
    )
    .await
    .unwrap()
    {
        SessionEvent::TrackStarted(info) => info,
        _ => unreachable!(),
    };

    // Server-side "subscriber" connection with an outgoing RTP track, and the viewer it feeds.
    let outgoing = Arc::new(TrackLocalStaticRTP::new(
        RTCRtpCodecCapability {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90_000,
            ..Default::default()
        },
        "fwd-video".to_owned(),
        "participant-a".to_owned(),
    ));
    let server_side = peer().await;
    let viewer = peer().await;
    let sender = server_side
        .add_track(Arc::clone(&outgoing) as _)
        .await
        .unwrap();
    tokio::spawn(async move { while sender.read_rtcp().await.is_ok() {} });
    let (got_tx, mut got) = mpsc::unbounded_channel();
    viewer.on_track(Box::new(move |track, _, _| {
        let got_tx = got_tx.clone();
        tokio::spawn(async move {
            if let Ok((packet, _)) = track.read_rtp().await {
                let _ = got_tx.send((packet.header.payload_type, packet.header.ssrc));
            }
        });
        Box::pin(async {})
    }));
    let offer = server_side.create_offer(None).await.unwrap();
    let offer = gathered_local(&server_side, offer).await;
    viewer.set_remote_description(offer).await.unwrap();
    let answer = viewer.create_answer(None).await.unwrap();
    let answer = gathered_local(&viewer, answer).await;
    server_side.set_remote_description(answer).await.unwrap();

    session.set_forward_sinks(
        &video.track_id,
        vec![ForwardTarget::Rtp(Arc::clone(&outgoing))],
    );
    let (payload_type, ssrc) = tokio::time::timeout(WAIT, got.recv())
        .await
        .expect("viewer received no forwarded RTP")
        .unwrap();
    assert_eq!(payload_type, 96, "VP8 as negotiated with the viewer");
    assert_ne!(ssrc, video.ssrc, "webrtc-rs rewrites the SSRC per binding");
    // The counter moves after the write returns, which can be after the viewer already read
    // the packet: wait for it (bounded) rather than race it.
    let counted = tokio::time::timeout(WAIT, async {
        while !session
            .stats()
            .tracks
            .iter()
            .any(|t| t.track_id == video.track_id && t.packets_forwarded > 0)
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(counted.is_ok(), "forwarded packets never counted");

    media.abort();
    session.close().await;
    for pc in [&server_side, &viewer, &publisher.pc] {
        let _ = pc.close().await;
    }
}

/// WHEP end to end inside ingest: a publisher sending H.264 (profile 42e01f, its payload type
/// 125) and Opus; a `WhepSubscriber` (which numbers 42e01f as 106) receives both with its own
/// payload types and SSRCs, and its PLI reaches the publisher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_subscriber_gets_the_publishers_media_and_its_pli_reaches_the_publisher(
) -> anyhow::Result<()> {
    use costream_ingest::{CodecName, WhepSubscriber};
    use std::time::{Duration, Instant};

    init_tracing();
    let server = whip_server::TestWhipServer::start().await;
    let mut publisher = RawPublisher::with_video_fmtp(
        webrtc::api::media_engine::MIME_TYPE_H264,
        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
    )
    .await?;
    let (session, mut events) = engine_session(&server.engine, &publisher).await?;
    server
        .sessions
        .lock()
        .unwrap()
        .insert(session.id().to_owned(), session.clone());
    // Subscribed before any media: the codec is only known once packets arrive.
    let subscriber = WhepSubscriber::connect(
        &format!("http://{}/whep/{}", server.addr, session.id()),
        whip_server::TOKEN,
    )
    .await?;
    assert_eq!(session.subscription_count(), 1);
    let media = publisher.spawn_media();
    publisher.wait_connected().await?;
    let mut seen = Vec::new();
    let SessionEvent::TrackStarted(video) = wait_event(
        &mut events,
        &mut seen,
        |e| matches!(e, SessionEvent::TrackStarted(t) if t.kind == MediaKind::Video),
    )
    .await?
    else {
        unreachable!()
    };
    assert_eq!(video.codec, CodecName::H264);
    assert_eq!(video.payload_type, 125, "the publisher's own numbering");

    let deadline = Instant::now() + WAIT;
    let stats = loop {
        let stats = subscriber.stats();
        if stats.video.packets >= 50 && stats.audio.packets >= 20 {
            break stats;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "subscriber got too little: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(stats.video.mime_type.as_deref(), Some("video/H264"));
    assert_eq!(stats.video.payload_type, Some(106), "{stats:?}");
    assert_ne!(stats.video.ssrc, Some(video.ssrc), "SSRC rewritten");
    assert_eq!(stats.audio.payload_type, Some(111), "{stats:?}");

    // The subscriber's PLI reaches the publisher (past the 500 ms throttle of the PLI sent
    // when the subscriber connected).
    while publisher.plis.try_recv().is_ok() {}
    let before = session
        .stats()
        .tracks
        .iter()
        .find(|t| t.track_id == video.track_id)
        .map_or(0, |t| t.keyframe_requests);
    let deadline = Instant::now() + WAIT;
    loop {
        subscriber.request_keyframe().await?;
        if let Ok(Some(ssrc)) =
            tokio::time::timeout(Duration::from_millis(200), publisher.plis.recv()).await
        {
            assert_eq!(ssrc, video.ssrc);
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the subscriber's PLI never arrived"
        );
    }
    // Counted once the RTCP write returned, which may be just after the publisher read it.
    let video_stats = || {
        session
            .stats()
            .tracks
            .into_iter()
            .find(|t| t.track_id == video.track_id)
            .unwrap()
    };
    let deadline = Instant::now() + WAIT;
    while video_stats().keyframe_requests <= before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let track = video_stats();
    assert!(track.keyframe_requests > before, "{track:?}");
    assert!(track.subscriber_packets > 0, "{track:?}");
    println!(
        "MEASURE sfu_forward_delay_us_avg={} max={} samples={}",
        track.forward_delay_us_sum / track.forward_delay_samples.max(1),
        track.forward_delay_us_max,
        track.forward_delay_samples
    );

    // DELETE ends it; the publisher stops feeding it.
    subscriber.leave().await?;
    assert_eq!(session.subscription_count(), 0);
    media.abort();
    session.close().await;
    let _ = publisher.pc.close().await;
    Ok(())
}
