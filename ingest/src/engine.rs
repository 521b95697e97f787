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

use crate::answer::repair_answer;
use crate::codec::{check_offer, parse_sdp, register_codecs};
use crate::error::IngestError;
use crate::forward::ForwardSockets;
use crate::gather::set_local_and_gather;
use crate::naming::new_session_id;
use crate::redact::redact_sdp;
use crate::session::{PeerSession, SessionEvent};

/// Longest we wait for ICE gathering before answering (non-trickle WHIP needs every candidate
/// in the answer). Host-only gathering normally takes a few milliseconds.
/// A session whose publisher has not connected by then is closed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// ICE consent: "disconnected" after this long without traffic from the publisher...
const ICE_DISCONNECTED_TIMEOUT: Duration = Duration::from_secs(5);
/// ...and "failed" (session closed, `Closed` sent) after this much more.
const ICE_FAILED_TIMEOUT: Duration = Duration::from_secs(10);
const ICE_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);

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
            Some(ICE_DISCONNECTED_TIMEOUT),
            Some(ICE_FAILED_TIMEOUT),
            Some(ICE_KEEPALIVE_INTERVAL),
        );
        let api = build_api(setting_engine)?;
        let sockets = ForwardSockets::bind().map_err(|e| {
            IngestError::InvalidConfig(format!("cannot bind a UDP socket for forwarding: {e}"))
        })?;
        Ok(Self {
            inner: Arc::new(EngineInner {
                api,
                sockets: Arc::new(sockets),
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
            match negotiate(&pc, offer).await {
                Ok(answer) => {
                    let answer = repair_answer(&answer);
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
