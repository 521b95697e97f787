//! Non-trickle signalling: set a local description and wait until ICE gathering has finished,
//! so the SDP carries every candidate. Both sides of WHIP (server answer, client offer) need it.

use std::time::{Duration, Instant};

use tracing::debug;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;

use crate::error::IngestError;

/// Host candidates on loopback gather in ~0 ms; STUN-less servers never need longer than this.
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);

/// Applies `local` and returns the complete local SDP once gathering is done.
pub(crate) async fn set_local_and_gather(
    pc: &RTCPeerConnection,
    local: RTCSessionDescription,
) -> Result<String, IngestError> {
    let mut gathered = pc.gathering_complete_promise().await;
    let started = Instant::now();
    pc.set_local_description(local).await?;
    tokio::time::timeout(GATHER_TIMEOUT, gathered.recv())
        .await
        .map_err(|_| IngestError::Timeout {
            what: "ICE candidate gathering",
            after: GATHER_TIMEOUT,
        })?;
    debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "ICE gathering complete"
    );
    let complete = pc
        .local_description()
        .await
        .ok_or_else(|| IngestError::Webrtc("no local description after gathering".into()))?;
    Ok(complete.sdp)
}
