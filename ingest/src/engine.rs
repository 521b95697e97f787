//! The WHIP answerer: one webrtc-rs `API` (codecs, interceptors, network settings) shared by all
//! sessions, and `accept_offer`, which turns an offer into a session plus a complete answer.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{debug, info, trace, Instrument, Span};
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::MediaEngine;
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{APIBuilder, API};
use webrtc::ice::udp_network::{EphemeralUDP, UDPNetwork};
use webrtc::ice_transport::ice_candidate_type::RTCIceCandidateType;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::rtp_transceiver::RTCRtpTransceiverInit;
use webrtc::track::track_local::TrackLocal;

use crate::answer::repair_answer;
use crate::budget::PeerConnectionBudget;
use crate::codec::{check_offer, check_subscribe_offer, parse_sdp, register_codecs, MediaKind};
use crate::error::IngestError;
use crate::forward::ForwardSockets;
use crate::gather::set_local_and_gather;
use crate::naming::new_session_id;
use crate::redact::redact_sdp;
use crate::session::{PeerSession, SessionEvent};
use crate::sfu_track::SfuTrack;
use crate::subscription::{Subscription, SubscriptionEvent};

/// Longest we wait for ICE gathering before answering (non-trickle WHIP needs every candidate
/// in the answer). Host-only gathering normally takes a few milliseconds.
/// A session whose publisher has not connected by then is closed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How fast a peer that vanished without leaving (browser killed, network gone) is noticed.
///
/// ICE marks the connection "disconnected" after `disconnected` without any packet from the
/// peer (media, RTCP or STUN), and "failed" (session closed, `Closed` sent) when the silence
/// lasts `disconnected + failed`. Our side sends a STUN consent check every `keepalive`, and
/// the peer's answers count as traffic, so even a fully muted browser (which still sends RTCP
/// about once a second and its own consent checks every few seconds) is never silent that
/// long. While connecting, ICE also gives up after `disconnected + failed` of checking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IceTimeouts {
    pub disconnected: Duration,
    pub failed: Duration,
    pub keepalive: Duration,
}

impl Default for IceTimeouts {
    /// A vanished peer is closed ~3.5 s after its last packet (3 s + one check interval),
    /// inside the 5 s product bound with room for the mixer to drop its tile.
    fn default() -> Self {
        Self {
            disconnected: Duration::from_millis(2000),
            failed: Duration::from_millis(1000),
            keepalive: Duration::from_millis(500),
        }
    }
}

impl IceTimeouts {
    pub fn validate(&self) -> Result<(), IngestError> {
        let ms = |d: Duration| d.as_millis();
        if self.disconnected.is_zero() || self.failed.is_zero() || self.keepalive.is_zero() {
            return Err(IngestError::InvalidConfig(
                "ICE timeouts must all be greater than zero".into(),
            ));
        }
        if self.keepalive >= self.disconnected {
            return Err(IngestError::InvalidConfig(format!(
                "the ICE keepalive ({} ms) must be shorter than the disconnected timeout ({} ms), or every pause in traffic counts as a disconnect",
                ms(self.keepalive),
                ms(self.disconnected)
            )));
        }
        Ok(())
    }
}

/// Network settings of the ingest engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestConfig {
    /// UDP port range for ICE, inclusive (None = ephemeral ports).
    pub udp_ports: Option<(u16, u16)>,
    /// Extra IPs to advertise (1:1 NAT, e.g. a cloud VM's public IP), may be empty. They are
    /// announced as server-reflexive candidates next to the local host candidates, so clients
    /// on the LAN and on the internet both find a path.
    pub public_ips: Vec<String>,
    /// Include loopback candidates (needed when publisher and server share a machine).
    pub include_loopback: bool,
    /// How fast vanished publishers and subscribers are noticed.
    pub ice: IceTimeouts,
    /// Most peer connections (WHIP sessions + WHEP subscriptions) open at once; `None`: no cap.
    pub max_peer_connections: Option<usize>,
}

impl IngestConfig {
    /// Checks the settings; messages name the field.
    pub fn validate(&self) -> Result<(), IngestError> {
        if let Some((min, max)) = self.udp_ports {
            if min == 0 || max < min {
                return Err(IngestError::InvalidConfig(format!(
                    "udp_ports ({min}, {max}) must be a range of non-zero ports with min <= max"
                )));
            }
        }
        self.ice.validate()?;
        for ip in &self.public_ips {
            if ip.parse::<IpAddr>().is_err() {
                return Err(IngestError::InvalidConfig(format!(
                    "public_ips: {ip:?} is not an IP address"
                )));
            }
        }
        Ok(())
    }
}

/// Accepts WHIP offers. Cheap to clone; all clones share one webrtc-rs API and one set of
/// forwarding sockets.
#[derive(Clone)]
pub struct IngestEngine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    api: API,
    sockets: Arc<ForwardSockets>,
    budget: PeerConnectionBudget,
}

impl std::fmt::Debug for IngestEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestEngine").finish_non_exhaustive()
    }
}

impl IngestEngine {
    pub fn new(config: IngestConfig) -> Result<Self, IngestError> {
        config.validate()?;
        let mut setting_engine = SettingEngine::default();
        setting_engine.set_include_loopback_candidate(config.include_loopback);
        if let Some((min, max)) = config.udp_ports {
            let ports = EphemeralUDP::new(min, max)
                .map_err(|e| IngestError::InvalidConfig(format!("udp_ports: {e}")))?;
            setting_engine.set_udp_network(UDPNetwork::Ephemeral(ports));
        }
        if !config.public_ips.is_empty() {
            setting_engine.set_nat_1to1_ips(config.public_ips.clone(), RTCIceCandidateType::Srflx);
        }
        setting_engine.set_ice_timeouts(
            Some(config.ice.disconnected),
            Some(config.ice.failed),
            Some(config.ice.keepalive),
        );
        let api = build_api(setting_engine)?;
        let sockets = ForwardSockets::bind().map_err(|e| {
            IngestError::InvalidConfig(format!("cannot bind a UDP socket for forwarding: {e}"))
        })?;
        Ok(Self {
            inner: Arc::new(EngineInner {
                api,
                sockets: Arc::new(sockets),
                budget: PeerConnectionBudget::new(
                    config.max_peer_connections.unwrap_or(usize::MAX),
                ),
            }),
        })
    }

    /// Takes a WHIP offer; returns the session, the complete SDP answer (all candidates, no
    /// trickle) and the session's event receiver.
    pub async fn accept_offer(
        &self,
        offer_sdp: &str,
    ) -> Result<(PeerSession, String, mpsc::Receiver<SessionEvent>), IngestError> {
        let parsed = parse_sdp(offer_sdp)?;
        let summary = check_offer(&parsed)?;
        let offer = RTCSessionDescription::offer(offer_sdp.to_owned())
            .map_err(|e| IngestError::InvalidSdp(e.to_string()))?;

        let slot = self.take_slot()?;
        let id = new_session_id();
        // A root span: the session outlives the WHIP request that created it.
        let span = tracing::info_span!(parent: None, "ingest_session", session = %id);
        async {
            info!(codecs = ?summary.accepted, ignored = ?summary.ignored, "offer accepted for negotiation");
            trace!(offer = %redact_sdp(offer_sdp), "offer");
            let pc = Arc::new(
                self.inner
                    .api
                    .new_peer_connection(RTCConfiguration::default())
                    .await?,
            );
            let (session, events) = PeerSession::attach(
                id.clone(),
                Arc::clone(&pc),
                Arc::clone(&self.inner.sockets),
                Span::current(),
            );
            session.hold_slot(slot);
            match negotiate(&pc, offer).await {
                Ok(answer) => {
                    let answer = repair_answer(&answer);
                    let mut kinds: Vec<MediaKind> =
                        summary.accepted.iter().map(|c| c.kind()).collect();
                    kinds.dedup();
                    session.set_published_kinds(kinds);
                    session.spawn_connect_watchdog(CONNECT_TIMEOUT);
                    trace!(answer = %redact_sdp(&answer), "answer");
                    Ok((session, answer, events))
                }
                Err(e) => {
                    debug!("negotiation failed: {e}");
                    session.close().await;
                    Err(e)
                }
            }
        }
        .instrument(span)
        .await
    }
}

impl IngestEngine {
    /// Open peer connections and the server's cap.
    pub fn peer_connections(&self) -> &PeerConnectionBudget {
        &self.inner.budget
    }

    fn take_slot(&self) -> Result<crate::budget::PcSlot, IngestError> {
        self.inner.budget.take().ok_or(IngestError::AtCapacity {
            max: self.inner.budget.max(),
        })
    }

    /// Takes a WHEP offer (recvonly audio and/or video) for the media `source` publishes;
    /// returns the subscription, the complete answer and the subscription's events. Media
    /// flows once the owner calls [`PeerSession::add_subscription`] and the subscriber
    /// connects; the source's codec (as negotiated with it) is sent unchanged.
    pub async fn accept_subscription(
        &self,
        offer_sdp: &str,
        source: &PeerSession,
    ) -> Result<(Subscription, String, mpsc::Receiver<SubscriptionEvent>), IngestError> {
        let parsed = parse_sdp(offer_sdp)?;
        let wanted = check_subscribe_offer(&parsed)?;
        let offer = RTCSessionDescription::offer(offer_sdp.to_owned())
            .map_err(|e| IngestError::InvalidSdp(e.to_string()))?;
        let slot = self.take_slot()?;
        let id = new_session_id();
        let span = tracing::info_span!(parent: None, "subscription", subscription = %id, source = %source.id());
        async {
            let pc = Arc::new(
                self.inner
                    .api
                    .new_peer_connection(RTCConfiguration::default())
                    .await?,
            );
            let published = source.published_kinds();
            let kinds: Vec<MediaKind> = [MediaKind::Audio, MediaKind::Video]
                .into_iter()
                .filter(|k| wanted.contains(k) && published.contains(k))
                .collect();
            info!(?kinds, "subscription offer accepted for negotiation");
            let tracks: Vec<Arc<SfuTrack>> = kinds
                .iter()
                .map(|&kind| Arc::new(SfuTrack::new(kind, source.id())))
                .collect();
            let (subscription, events) = Subscription::new(
                id.clone(),
                source,
                Arc::clone(&pc),
                tracks.clone(),
                Span::current(),
            );
            subscription.hold_slot(slot);
            let result = async {
                // Added before the offer is applied so webrtc-rs pairs them with the offer's
                // recvonly sections.
                for track in &tracks {
                    let local: Arc<dyn TrackLocal + Send + Sync> = Arc::clone(track) as _;
                    let transceiver = pc
                        .add_transceiver_from_track(
                            local,
                            Some(RTCRtpTransceiverInit {
                                direction: RTCRtpTransceiverDirection::Sendonly,
                                send_encodings: vec![],
                            }),
                        )
                        .await?;
                    subscription.spawn_rtcp_reader(transceiver.sender().await, track.kind());
                }
                negotiate(&pc, offer).await
            }
            .await;
            match result {
                Ok(answer) => {
                    subscription.spawn_connect_watchdog(CONNECT_TIMEOUT);
                    trace!(answer = %redact_sdp(&answer), "subscription answer");
                    Ok((subscription, answer, events))
                }
                Err(e) => {
                    debug!("subscription negotiation failed: {e}");
                    subscription.close().await;
                    Err(e)
                }
            }
        }
        .instrument(span)
        .await
    }
}

fn build_api(setting_engine: SettingEngine) -> Result<API, IngestError> {
    let mut media_engine = MediaEngine::default();
    register_codecs(&mut media_engine)?;
    // NACK generator (ask for lost packets), receiver/sender reports, and TWCC feedback so
    // browsers can run their congestion control; the NACK responder serves the SFU return path.
    let registry = register_default_interceptors(Registry::new(), &mut media_engine)?;
    Ok(APIBuilder::new()
        .with_setting_engine(setting_engine)
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .build())
}

/// Applies the offer, creates the answer and waits for gathering to finish.
async fn negotiate(
    pc: &RTCPeerConnection,
    offer: RTCSessionDescription,
) -> Result<String, IngestError> {
    pc.set_remote_description(offer)
        .await
        .map_err(|e| IngestError::InvalidSdp(format!("the offer was rejected: {e}")))?;
    let answer = pc
        .create_answer(None)
        .await
        .map_err(|e| IngestError::UnsupportedCodec(format!("cannot answer the offer: {e}")))?;
    set_local_and_gather(pc, answer).await
}
