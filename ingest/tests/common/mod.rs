//! Test helpers: an independent webrtc-rs publisher (not our WhipPublisher, so the server is
//! tested against someone else's offer), event waiting with deadlines, RTP header parsing.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use costream_ingest::{IngestEngine, PeerSession, SessionEvent};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MediaEngine, MIME_TYPE_OPUS, MIME_TYPE_VP8};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::APIBuilder;
use webrtc::interceptor::registry::Registry;
use webrtc::media::Sample;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecCapability;
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::rtp_transceiver::RTCRtpTransceiverInit;
use webrtc::track::track_local::track_local_static_sample::TrackLocalStaticSample;
use webrtc::track::track_local::TrackLocal;

pub mod whip_server;

pub const WAIT: Duration = Duration::from_secs(10);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "costream_ingest=debug".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A sendonly publisher built directly on webrtc-rs with its default codec list (so its offer
/// looks like a browser's: many codecs, RTX, several H.264 profiles).
pub struct RawPublisher {
    pub pc: Arc<RTCPeerConnection>,
    pub video: Arc<TrackLocalStaticSample>,
    pub audio: Arc<TrackLocalStaticSample>,
    pub state: watch::Receiver<RTCPeerConnectionState>,
    /// Counts PLIs the server sent for the video track.
    pub plis: mpsc::UnboundedReceiver<u32>,
}

impl RawPublisher {
    pub async fn new(video_mime: &str) -> anyhow::Result<Self> {
        Self::with_video_fmtp(video_mime, "").await
    }

    /// Like `new`, with the video track's fmtp (e.g. one H.264 profile).
    pub async fn with_video_fmtp(video_mime: &str, fmtp: &str) -> anyhow::Result<Self> {
        let mut media_engine = MediaEngine::default();
        media_engine.register_default_codecs()?;
        let registry = register_default_interceptors(Registry::new(), &mut media_engine)?;
        let mut setting_engine = SettingEngine::default();
        setting_engine.set_include_loopback_candidate(true);
        let api = APIBuilder::new()
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_setting_engine(setting_engine)
            .build();
        let pc = Arc::new(api.new_peer_connection(RTCConfiguration::default()).await?);
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        pc.on_peer_connection_state_change(Box::new(move |s| {
            let _ = state_tx.send(s);
            Box::pin(async {})
        }));

        let video = Arc::new(TrackLocalStaticSample::new(
            RTCRtpCodecCapability {
                mime_type: video_mime.to_owned(),
                clock_rate: 90_000,
                sdp_fmtp_line: fmtp.to_owned(),
                ..Default::default()
            },
            "cam".to_owned(),
            "test-stream".to_owned(),
        ));
        let audio = Arc::new(TrackLocalStaticSample::new(
            RTCRtpCodecCapability {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48_000,
                channels: 2,
                ..Default::default()
            },
            "mic".to_owned(),
            "test-stream".to_owned(),
        ));
        let (pli_tx, plis) = mpsc::unbounded_channel();
        for (track, pli_tx) in [
            (
                Arc::clone(&video) as Arc<dyn TrackLocal + Send + Sync>,
                Some(pli_tx),
            ),
            (
                Arc::clone(&audio) as Arc<dyn TrackLocal + Send + Sync>,
                None,
            ),
        ] {
            let transceiver = pc
                .add_transceiver_from_track(
                    track,
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Sendonly,
                        send_encodings: vec![],
                    }),
                )
                .await?;
            let sender = transceiver.sender().await;
            tokio::spawn(async move {
                while let Ok((packets, _)) = sender.read_rtcp().await {
                    for p in packets {
                        if let Some(pli) = p.as_any().downcast_ref::<PictureLossIndication>() {
                            if let Some(tx) = &pli_tx {
                                let _ = tx.send(pli.media_ssrc);
                            }
                        }
                    }
                }
            });
        }
        Ok(Self {
            pc,
            video,
            audio,
            state,
            plis,
        })
    }

    /// Non-trickle offer: waits for gathering.
    pub async fn offer(&self) -> anyhow::Result<String> {
        let offer = self.pc.create_offer(None).await?;
        let mut gathered = self.pc.gathering_complete_promise().await;
        self.pc.set_local_description(offer).await?;
        tokio::time::timeout(WAIT, gathered.recv())
            .await
            .context("publisher gathering")?;
        Ok(self.pc.local_description().await.context("no offer")?.sdp)
    }

    pub async fn apply_answer(&self, answer: String) -> anyhow::Result<()> {
        self.pc
            .set_remote_description(RTCSessionDescription::answer(answer)?)
            .await?;
        Ok(())
    }

    pub async fn wait_connected(&mut self) -> anyhow::Result<()> {
        let state = tokio::time::timeout(
            WAIT,
            self.state.wait_for(|s| {
                matches!(
                    s,
                    RTCPeerConnectionState::Connected | RTCPeerConnectionState::Failed
                )
            }),
        )
        .await
        .context("publisher never reached connected")??;
        if *state != RTCPeerConnectionState::Connected {
            bail!("publisher connection {}", *state);
        }
        Ok(())
    }

    /// Writes synthetic samples (any bytes packetize fine) until the returned task is aborted.
    pub fn spawn_media(&self) -> JoinHandle<()> {
        let video = Arc::clone(&self.video);
        let audio = Arc::clone(&self.audio);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let mut n: u32 = 0;
            loop {
                tick.tick().await;
                n = n.wrapping_add(1);
                let _ = audio
                    .write_sample(&Sample {
                        data: Bytes::from(vec![0xF8, 0xFF, 0xFE, (n & 0xff) as u8]),
                        duration: Duration::from_millis(20),
                        ..Default::default()
                    })
                    .await;
                if n % 2 == 0 {
                    // ~25 fps; 3000 bytes so VP8 frames span several packets.
                    let frame = vec![(n & 0xff) as u8; 3000];
                    let _ = video
                        .write_sample(&Sample {
                            data: Bytes::from(frame),
                            duration: Duration::from_millis(40),
                            ..Default::default()
                        })
                        .await;
                }
            }
        })
    }
}

/// Receives session events until `pred` accepts one, with a deadline.
pub async fn wait_event(
    events: &mut mpsc::Receiver<SessionEvent>,
    seen: &mut Vec<SessionEvent>,
    mut pred: impl FnMut(&SessionEvent) -> bool,
) -> anyhow::Result<SessionEvent> {
    if let Some(e) = seen.iter().find(|e| pred(e)) {
        return Ok(e.clone());
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .with_context(|| format!("event not seen; got so far: {seen:?}"))?
            .context("event channel closed")?;
        seen.push(event.clone());
        if pred(&event) {
            return Ok(event);
        }
    }
}

/// (payload type, SSRC) of an RTP packet.
pub fn rtp_header(packet: &[u8]) -> Option<(u8, u32)> {
    if packet.len() < 12 || packet[0] >> 6 != 2 {
        return None;
    }
    let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
    Some((packet[1] & 0x7f, ssrc))
}

pub fn vp8() -> &'static str {
    MIME_TYPE_VP8
}

pub async fn engine_session(
    engine: &IngestEngine,
    publisher: &RawPublisher,
) -> anyhow::Result<(PeerSession, mpsc::Receiver<SessionEvent>)> {
    let offer = publisher.offer().await?;
    let (session, answer, events) = engine.accept_offer(&offer).await?;
    publisher.apply_answer(answer).await?;
    Ok((session, events))
}
