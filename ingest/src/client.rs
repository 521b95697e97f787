//! A real WHIP publisher (RFC 9725): a sendonly webrtc-rs peer connection whose offer is POSTed
//! to a WHIP endpoint. Used by `costream publish` and by tests as a participant.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION};
use reqwest::{StatusCode, Url};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, info_span, warn, Instrument};

use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::MediaEngine;
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::APIBuilder;
use webrtc::interceptor::registry::Registry;
use webrtc::media::Sample;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::rtp_transceiver::RTCRtpTransceiverInit;
use webrtc::track::track_local::track_local_static_sample::TrackLocalStaticSample;
use webrtc::track::track_local::TrackLocal;

use crate::codec::{capability, register_codecs, CodecName, MediaKind};
use crate::error::IngestError;
use crate::gather::set_local_and_gather;
use crate::whip::{resolve_location, truncate_body};

/// ICE + DTLS after the answer. A healthy connection takes milliseconds on a LAN and well under
/// two seconds across the internet; a handshake that stalls (seen once in ~50 serve restarts:
/// ICE connected, webrtc-rs's DTLS never finished) is better abandoned early and tried again
/// than waited out, since `costream publish` reconnects with a fresh offer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(6);
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// A publisher's ICE timeouts: how fast it notices that the server is gone (killed, restarted,
/// unreachable), so `costream publish` can reconnect. webrtc-rs's defaults (disconnected after
/// 5 s, failed 25 s later, keepalive every 2 s) would add seconds to every reconnect. With a
/// keepalive every 500 ms the server answers at least four checks (and sends RTCP) inside the
/// 2 s window, so a healthy but busy server does not trip it.
const PUBLISHER_ICE_DISCONNECTED: Duration = Duration::from_secs(2);
const PUBLISHER_ICE_FAILED: Duration = Duration::from_secs(2);
const PUBLISHER_ICE_KEEPALIVE: Duration = Duration::from_millis(500);

/// What to publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishMedia {
    /// Video codec (VP8 or H.264), or None for audio only.
    pub video: Option<CodecName>,
    /// Publish an Opus track.
    pub audio: bool,
}

/// A connected WHIP publisher. Write samples with [`write_video`](Self::write_video) /
/// [`write_audio`](Self::write_audio); end with [`leave`](Self::leave).
pub struct WhipPublisher {
    pc: Arc<RTCPeerConnection>,
    video: Option<Arc<TrackLocalStaticSample>>,
    audio: Option<Arc<TrackLocalStaticSample>>,
    http: reqwest::Client,
    /// The WHIP session resource (absolute Location).
    resource: Url,
    /// Bearer token for DELETE; never logged.
    token: String,
    /// Where the RTCP reader reports PLI/FIR; swapped by `keyframe_requests`.
    keyframe_tx: Arc<Mutex<mpsc::Sender<()>>>,
    keyframe_rx: Option<mpsc::Receiver<()>>,
    closed: AtomicBool,
    /// Time from POST to Connected, for diagnostics.
    connect_time: Duration,
    /// The peer connection's state, for [`session_lost`](Self::session_lost).
    state: watch::Receiver<RTCPeerConnectionState>,
}

impl std::fmt::Debug for WhipPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhipPublisher")
            .field("resource", &self.resource.as_str())
            .finish_non_exhaustive()
    }
}

impl WhipPublisher {
    /// Creates a sendonly peer connection, POSTs its complete offer to `whip_url` (with
    /// `Authorization: Bearer <token>` unless the token is empty), applies the answer and waits
    /// until ICE+DTLS are up.
    pub async fn connect(
        whip_url: &str,
        token: &str,
        media: PublishMedia,
    ) -> Result<Self, IngestError> {
        let url = Url::parse(whip_url)
            .map_err(|e| IngestError::Whip(format!("{whip_url:?} is not a URL: {e}")))?;
        if let Some(codec) = media.video {
            if codec.kind() != MediaKind::Video {
                return Err(IngestError::UnsupportedCodec(format!(
                    "{codec:?} is not a video codec"
                )));
            }
        }
        if media.video.is_none() && !media.audio {
            return Err(IngestError::NoMedia);
        }
        let span = info_span!("whip_publish", host = url.host_str().unwrap_or(""));
        Self::connect_inner(url, token, media)
            .instrument(span)
            .await
    }

    async fn connect_inner(
        url: Url,
        token: &str,
        media: PublishMedia,
    ) -> Result<Self, IngestError> {
        let pc = Arc::new(new_peer_connection(IceProfile::DetectLossFast).await?);
        let (state_tx, state_rx) = watch::channel(RTCPeerConnectionState::New);
        pc.on_peer_connection_state_change(Box::new(move |state| {
            debug!(%state, "publisher connection state");
            let _ = state_tx.send(state);
            Box::pin(async {})
        }));

        let (keyframe_tx, keyframe_rx) = mpsc::channel(1);
        let keyframe_tx = Arc::new(Mutex::new(keyframe_tx));
        let video = match media.video {
            Some(codec) => {
                let track = sample_track(codec, "video");
                let sender = add_sendonly(&pc, &track).await?;
                spawn_rtcp_reader(sender, Some(Arc::clone(&keyframe_tx)));
                Some(track)
            }
            None => None,
        };
        let audio = if media.audio {
            let track = sample_track(CodecName::Opus, "audio");
            let sender = add_sendonly(&pc, &track).await?;
            spawn_rtcp_reader(sender, None);
            Some(track)
        } else {
            None
        };

        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .build()
            .map_err(|e| IngestError::Whip(format!("cannot create the HTTP client: {e}")))?;
        let started = Instant::now();
        let result = async {
            let offer = local_offer(&pc).await?;
            let (resource, answer) = post_offer(&http, &url, token, offer).await?;
            Ok::<_, IngestError>((resource, answer))
        }
        .await;
        let (resource, answer) = match result {
            Ok(ok) => ok,
            Err(e) => {
                let _ = pc.close().await;
                return Err(e);
            }
        };
        let publisher = Self {
            pc,
            video,
            audio,
            http,
            resource,
            token: token.to_owned(),
            keyframe_tx,
            keyframe_rx: Some(keyframe_rx),
            closed: AtomicBool::new(false),
            connect_time: Duration::ZERO,
            state: state_rx.clone(),
        };
        // From here on a failure must also end the server-side session: leave() does both.
        match publisher.finish_connect(answer, state_rx).await {
            Ok(()) => {
                let mut publisher = publisher;
                publisher.connect_time = started.elapsed();
                info!(
                    connect_ms = publisher.connect_time.as_millis() as u64,
                    "WHIP publisher connected"
                );
                Ok(publisher)
            }
            Err(e) => {
                if let Err(leave_error) = publisher.leave().await {
                    debug!("cleanup after failed connect: {leave_error}");
                }
                Err(e)
            }
        }
    }

    async fn finish_connect(
        &self,
        answer: String,
        mut state: watch::Receiver<RTCPeerConnectionState>,
    ) -> Result<(), IngestError> {
        let answer = RTCSessionDescription::answer(answer)
            .map_err(|e| IngestError::InvalidSdp(format!("the server's answer: {e}")))?;
        self.pc.set_remote_description(answer).await.map_err(|e| {
            IngestError::InvalidSdp(format!("the server's answer was rejected: {e}"))
        })?;
        let wait = state.wait_for(|s| {
            matches!(
                s,
                RTCPeerConnectionState::Connected
                    | RTCPeerConnectionState::Failed
                    | RTCPeerConnectionState::Closed
            )
        });
        let reached = tokio::time::timeout(CONNECT_TIMEOUT, wait)
            .await
            .map_err(|_| IngestError::Timeout {
                what: "the WebRTC connection to the WHIP server",
                after: CONNECT_TIMEOUT,
            })?
            .map_err(|_| IngestError::Closed)?;
        match *reached {
            RTCPeerConnectionState::Connected => Ok(()),
            other => Err(IngestError::Webrtc(format!(
                "the connection to the WHIP server ended in state {other}"
            ))),
        }
    }

    /// Sends one encoded video frame (VP8 frame or H.264 Annex-B access unit).
    pub async fn write_video(&self, frame: &[u8], duration: Duration) -> Result<(), IngestError> {
        let track = self.video.as_ref().ok_or_else(|| {
            IngestError::Whip("this publisher was connected without video".into())
        })?;
        write_sample(track, frame, duration).await
    }

    /// Sends one Opus packet.
    pub async fn write_audio(
        &self,
        opus_packet: &[u8],
        duration: Duration,
    ) -> Result<(), IngestError> {
        let track = self.audio.as_ref().ok_or_else(|| {
            IngestError::Whip("this publisher was connected without audio".into())
        })?;
        write_sample(track, opus_packet, duration).await
    }

    /// A receiver that gets `()` whenever the server asks for a video keyframe (PLI or FIR).
    /// Requests arriving while one is pending coalesce. Calling this again replaces the
    /// previous receiver.
    pub fn keyframe_requests(&mut self) -> mpsc::Receiver<()> {
        if let Some(rx) = self.keyframe_rx.take() {
            return rx;
        }
        let (tx, rx) = mpsc::channel(1);
        *self.keyframe_tx.lock().unwrap_or_else(|p| p.into_inner()) = tx;
        rx
    }

    /// The absolute URL of the WHIP session resource (the Location the server returned).
    pub fn resource_url(&self) -> &str {
        self.resource.as_str()
    }

    /// How long connecting took, from POST to Connected.
    pub fn connect_time(&self) -> Duration {
        self.connect_time
    }

    /// Resolves when the session is lost: the peer connection went `disconnected` (no answer
    /// from the server for 2 s), `failed` or `closed`. Returns that state's name. The server
    /// keeps no session it cannot reach, so a caller that wants to carry on connects anew.
    pub async fn session_lost(&self) -> String {
        let mut state = self.state.clone();
        let lost = state
            .wait_for(|s| {
                matches!(
                    s,
                    RTCPeerConnectionState::Disconnected
                        | RTCPeerConnectionState::Failed
                        | RTCPeerConnectionState::Closed
                )
            })
            .await
            .map(|s| s.to_string());
        // The sender only goes away with the peer connection.
        lost.unwrap_or_else(|_| RTCPeerConnectionState::Closed.to_string())
    }

    /// Ends the session: DELETE on the resource, then close the peer connection (always,
    /// even if the DELETE fails).
    pub async fn leave(self) -> Result<(), IngestError> {
        self.closed.store(true, Ordering::SeqCst);
        let deleted = self.delete_resource().await;
        if let Err(e) = self.pc.close().await {
            debug!("publisher close: {e}");
        }
        deleted
    }

    /// DELETE on the session resource without closing anything here: how a client whose
    /// session was lost asks the server why (`403 removed`: the host removed it).
    pub async fn delete_session(&self) -> Result<(), IngestError> {
        self.delete_resource().await
    }

    async fn delete_resource(&self) -> Result<(), IngestError> {
        delete_resource(&self.http, &self.resource, &self.token).await
    }
}

/// DELETE on a WHIP/WHEP session resource.
pub(crate) async fn delete_resource(
    http: &reqwest::Client,
    resource: &Url,
    token: &str,
) -> Result<(), IngestError> {
    let mut request = http.delete(resource.clone());
    if !token.is_empty() {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = request.send().await.map_err(|e| {
        IngestError::Whip(format!(
            "DELETE {}: {}",
            redact_query(resource),
            e.without_url()
        ))
    })?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        let body = response.text().await.unwrap_or_default();
        Err(IngestError::Http {
            status: status.as_u16(),
            body: truncate_body(&body),
        })
    }
}

impl Drop for WhipPublisher {
    /// A publisher dropped without `leave` still releases its sockets; the server notices
    /// through ICE consent failure.
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

/// ICE timing of a client peer connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IceProfile {
    /// webrtc-rs's defaults.
    Default,
    /// Short timeouts: a publisher notices a vanished server within ~2 s.
    DetectLossFast,
}

pub(crate) async fn new_peer_connection(ice: IceProfile) -> Result<RTCPeerConnection, IngestError> {
    let mut media_engine = MediaEngine::default();
    register_codecs(&mut media_engine)?;
    // The NACK responder retransmits what the server's NACK generator asks for.
    let registry = register_default_interceptors(Registry::new(), &mut media_engine)?;
    let mut setting_engine = SettingEngine::default();
    // The WHIP server may well be on this machine (tests, local origin).
    setting_engine.set_include_loopback_candidate(true);
    if ice == IceProfile::DetectLossFast {
        setting_engine.set_ice_timeouts(
            Some(PUBLISHER_ICE_DISCONNECTED),
            Some(PUBLISHER_ICE_FAILED),
            Some(PUBLISHER_ICE_KEEPALIVE),
        );
    }
    let api = APIBuilder::new()
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_setting_engine(setting_engine)
        .build();
    Ok(api.new_peer_connection(RTCConfiguration::default()).await?)
}

fn sample_track(codec: CodecName, id: &str) -> Arc<TrackLocalStaticSample> {
    Arc::new(TrackLocalStaticSample::new(
        capability(codec),
        id.to_owned(),
        "costream".to_owned(),
    ))
}

async fn add_sendonly(
    pc: &RTCPeerConnection,
    track: &Arc<TrackLocalStaticSample>,
) -> Result<Arc<RTCRtpSender>, IngestError> {
    let track: Arc<dyn TrackLocal + Send + Sync> = Arc::clone(track) as _;
    let transceiver = pc
        .add_transceiver_from_track(
            track,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                send_encodings: vec![],
            }),
        )
        .await?;
    Ok(transceiver.sender().await)
}

/// Reads RTCP for one sender: required anyway so the interceptors (NACK responder, reports)
/// see it, and the place where keyframe requests show up.
fn spawn_rtcp_reader(sender: Arc<RTCRtpSender>, keyframes: Option<Arc<Mutex<mpsc::Sender<()>>>>) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        while let Ok((packets, _)) = sender.read(&mut buf).await {
            let Some(keyframes) = &keyframes else {
                continue;
            };
            let wants_keyframe = packets.iter().any(|p| {
                let any = p.as_any();
                any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
            });
            if wants_keyframe {
                let tx = keyframes.lock().unwrap_or_else(|p| p.into_inner()).clone();
                // Full = a request is already pending; one keyframe answers both.
                let _ = tx.try_send(());
            }
        }
        debug!("RTCP reader ended");
    });
}

/// Creates the offer and waits for gathering so it carries every candidate.
pub(crate) async fn local_offer(pc: &RTCPeerConnection) -> Result<String, IngestError> {
    let offer = pc.create_offer(None).await?;
    set_local_and_gather(pc, offer).await
}

/// POSTs the offer; returns the absolute session URL and the SDP answer.
pub(crate) async fn post_offer(
    http: &reqwest::Client,
    url: &Url,
    token: &str,
    offer: String,
) -> Result<(Url, String), IngestError> {
    let mut request = http
        .post(url.clone())
        .header(CONTENT_TYPE, "application/sdp")
        .body(offer);
    if !token.is_empty() {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = request.send().await.map_err(|e| {
        // reqwest's message embeds the full URL, query (maybe a token) included.
        IngestError::Whip(format!("POST {}: {}", redact_query(url), e.without_url()))
    })?;
    let status = response.status();
    let final_url = response.url().clone();
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response
        .text()
        .await
        .map_err(|e| IngestError::Whip(format!("reading the WHIP response: {e}")))?;
    if status != StatusCode::CREATED {
        return Err(IngestError::Http {
            status: status.as_u16(),
            body: truncate_body(&body),
        });
    }
    let location = location.ok_or_else(|| {
        IngestError::Whip("the server's 201 response has no Location header".into())
    })?;
    let resource = resolve_location(&final_url, &location)?;
    if body.trim().is_empty() {
        warn!("WHIP server returned 201 without an SDP answer");
        return Err(IngestError::InvalidSdp(
            "the server's 201 response has no SDP answer".into(),
        ));
    }
    Ok((resource, body))
}

/// URLs may carry tokens in their query; logs and errors get the path only.
fn redact_query(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.to_string()
}

async fn write_sample(
    track: &TrackLocalStaticSample,
    data: &[u8],
    duration: Duration,
) -> Result<(), IngestError> {
    let sample = Sample {
        data: Bytes::copy_from_slice(data),
        duration,
        ..Default::default()
    };
    Ok(track.write_sample(&sample).await?)
}
