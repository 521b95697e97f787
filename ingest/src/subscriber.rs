//! A real WHEP subscriber: a recvonly webrtc-rs peer connection whose offer is POSTed to a
//! WHEP endpoint. It counts what arrives per media kind (packets, bytes, payload type,
//! keyframes) and can ask for a keyframe (PLI). Tests and the bench use it as a viewer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Url;
use tokio::sync::watch;
use tracing::{debug, info, info_span, Instrument};
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp_transceiver::rtp_codec::RTPCodecType;
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::rtp_transceiver::RTCRtpTransceiverInit;

use crate::client::{delete_resource, local_offer, new_peer_connection, post_offer, IceProfile};
use crate::codec::CodecName;
use crate::error::IngestError;
use crate::rtp_keyframe::starts_keyframe;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// What arrived for one media kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KindStats {
    pub packets: u64,
    /// RTP payload bytes.
    pub bytes: u64,
    /// Payload type and SSRC of the last packet.
    pub payload_type: Option<u8>,
    pub ssrc: Option<u32>,
    /// The codec the track was negotiated with, e.g. "video/VP8".
    pub mime_type: Option<String>,
    /// Key frames seen (video), counted once per frame.
    pub keyframes: u64,
    pub first_packet_at: Option<Instant>,
    pub last_keyframe_at: Option<Instant>,
    pub first_keyframe_at: Option<Instant>,
}

/// A snapshot of everything received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceivedStats {
    pub audio: KindStats,
    pub video: KindStats,
}

/// A connected WHEP subscriber; end it with [`leave`](Self::leave).
pub struct WhepSubscriber {
    pc: Arc<RTCPeerConnection>,
    http: reqwest::Client,
    resource: Url,
    /// Bearer token for DELETE; never logged.
    token: String,
    stats: Arc<Mutex<ReceivedStats>>,
    state: watch::Receiver<RTCPeerConnectionState>,
    connected_at: Instant,
    connect_time: Duration,
    closed: AtomicBool,
}

impl std::fmt::Debug for WhepSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhepSubscriber")
            .field("resource", &self.resource.as_str())
            .finish_non_exhaustive()
    }
}

impl WhepSubscriber {
    /// POSTs a recvonly audio+video offer to `whep_url` (bearer `token` unless empty), applies
    /// the answer and waits until ICE+DTLS are up.
    pub async fn connect(whep_url: &str, token: &str) -> Result<Self, IngestError> {
        let url = Url::parse(whep_url)
            .map_err(|e| IngestError::Whip(format!("{whep_url:?} is not a URL: {e}")))?;
        let span = info_span!("whep_subscribe", host = url.host_str().unwrap_or(""));
        Self::connect_inner(url, token).instrument(span).await
    }

    async fn connect_inner(url: Url, token: &str) -> Result<Self, IngestError> {
        let pc = Arc::new(new_peer_connection(IceProfile::Default).await?);
        let (state_tx, mut state) = watch::channel(RTCPeerConnectionState::New);
        pc.on_peer_connection_state_change(Box::new(move |s| {
            debug!(state = %s, "subscriber connection state");
            let _ = state_tx.send(s);
            Box::pin(async {})
        }));
        let stats = Arc::new(Mutex::new(ReceivedStats::default()));
        let sink = Arc::clone(&stats);
        pc.on_track(Box::new(move |track, _receiver, _transceiver| {
            let stats = Arc::clone(&sink);
            tokio::spawn(async move {
                let mime = track.codec().capability.mime_type;
                let codec = CodecName::from_mime(&mime);
                let video = track.kind() == RTPCodecType::Video;
                let mut last_key_ts = None;
                while let Ok((packet, _)) = track.read_rtp().await {
                    let now = Instant::now();
                    let mut all = stats.lock().unwrap_or_else(|p| p.into_inner());
                    let kind = if video {
                        &mut all.video
                    } else {
                        &mut all.audio
                    };
                    kind.packets += 1;
                    kind.bytes += packet.payload.len() as u64;
                    kind.payload_type = Some(packet.header.payload_type);
                    kind.ssrc = Some(packet.header.ssrc);
                    kind.mime_type.get_or_insert_with(|| mime.clone());
                    kind.first_packet_at.get_or_insert(now);
                    let key = codec.is_some_and(|c| starts_keyframe(c, &packet.payload));
                    if key && last_key_ts != Some(packet.header.timestamp) {
                        last_key_ts = Some(packet.header.timestamp);
                        kind.keyframes += 1;
                        kind.last_keyframe_at = Some(now);
                        kind.first_keyframe_at.get_or_insert(now);
                    }
                }
                debug!("subscriber track ended");
            });
            Box::pin(async {})
        }));
        for kind in [RTPCodecType::Audio, RTPCodecType::Video] {
            pc.add_transceiver_from_kind(
                kind,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    send_encodings: vec![],
                }),
            )
            .await?;
        }
        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .build()
            .map_err(|e| IngestError::Whip(format!("cannot create the HTTP client: {e}")))?;
        let started = Instant::now();
        let negotiated = async {
            let offer = local_offer(&pc).await?;
            let (resource, answer) = post_offer(&http, &url, token, offer).await?;
            let answer = RTCSessionDescription::answer(answer)
                .map_err(|e| IngestError::InvalidSdp(format!("the server's answer: {e}")))?;
            Ok::<_, IngestError>((resource, answer))
        }
        .await;
        let (resource, answer) = match negotiated {
            Ok(ok) => ok,
            Err(e) => {
                let _ = pc.close().await;
                return Err(e);
            }
        };
        let connected = async {
            pc.set_remote_description(answer).await.map_err(|e| {
                IngestError::InvalidSdp(format!("the server's answer was rejected: {e}"))
            })?;
            let reached = tokio::time::timeout(
                CONNECT_TIMEOUT,
                state.wait_for(|s| {
                    matches!(
                        s,
                        RTCPeerConnectionState::Connected
                            | RTCPeerConnectionState::Failed
                            | RTCPeerConnectionState::Closed
                    )
                }),
            )
            .await
            .map_err(|_| IngestError::Timeout {
                what: "the WebRTC connection to the WHEP server",
                after: CONNECT_TIMEOUT,
            })?
            .map_err(|_| IngestError::Closed)?;
            match *reached {
                RTCPeerConnectionState::Connected => Ok(()),
                other => Err(IngestError::Webrtc(format!(
                    "the connection to the WHEP server ended in state {other}"
                ))),
            }
        }
        .await;
        if let Err(e) = connected {
            let _ = delete_resource(&http, &resource, token).await;
            let _ = pc.close().await;
            return Err(e);
        }
        let connect_time = started.elapsed();
        info!(
            connect_ms = connect_time.as_millis() as u64,
            "WHEP subscriber connected"
        );
        Ok(Self {
            pc,
            http,
            resource,
            token: token.to_owned(),
            stats,
            state,
            connected_at: Instant::now(),
            connect_time,
            closed: AtomicBool::new(false),
        })
    }

    /// Everything received so far.
    pub fn stats(&self) -> ReceivedStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// When ICE+DTLS came up.
    pub fn connected_at(&self) -> Instant {
        self.connected_at
    }

    /// How long connecting took, from POST to Connected.
    pub fn connect_time(&self) -> Duration {
        self.connect_time
    }

    /// The absolute URL of the WHEP session resource.
    pub fn resource_url(&self) -> &str {
        self.resource.as_str()
    }

    /// The peer connection's current state (e.g. to see the server close it).
    pub fn connection_state(&self) -> RTCPeerConnectionState {
        *self.state.borrow()
    }

    /// Sends a PLI for the video stream. Fails if no video arrived yet (its SSRC is unknown).
    pub async fn request_keyframe(&self) -> Result<(), IngestError> {
        let ssrc = self
            .stats()
            .video
            .ssrc
            .ok_or_else(|| IngestError::Whip("no video received yet".into()))?;
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: ssrc,
        };
        self.pc.write_rtcp(&[Box::new(pli)]).await?;
        Ok(())
    }

    /// Ends the subscription: DELETE on the resource, then close (always, even if DELETE fails).
    pub async fn leave(self) -> Result<(), IngestError> {
        self.closed.store(true, Ordering::SeqCst);
        let deleted = delete_resource(&self.http, &self.resource, &self.token).await;
        if let Err(e) = self.pc.close().await {
            debug!("subscriber close: {e}");
        }
        deleted
    }
}

impl Drop for WhepSubscriber {
    fn drop(&mut self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            let pc = Arc::clone(&self.pc);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = pc.close().await;
                });
            }
        }
    }
}
