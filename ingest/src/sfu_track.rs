//! The outgoing track of one subscription (the SFU return path): RTP of one publisher track,
//! rewritten for one subscriber connection.
//!
//! Why not `TrackLocalStaticRTP`: it binds exactly one codec, fixed when the track is created.
//! A subscription is answered as soon as the publisher has negotiated, before its first packet
//! says which of the negotiated codecs it really sends (a webrtc-rs publisher may send H.264
//! although VP8 is listed first). This track binds every codec both sides support and picks the
//! subscriber's payload type per packet from the source's actual codec.
//!
//! Per packet: SSRC and payload type become the subscriber's, the publisher's header extensions
//! are dropped (their ids mean other things on this connection) and only the MID extension
//! (negotiated here) is added back. Sequence numbers and timestamps pass through unchanged: one
//! subscription track has exactly one source for its whole life.

use std::any::Any;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use bytes::Bytes;
use tracing::{debug, warn};
use webrtc::rtp::packet::Packet;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpCodecParameters, RTPCodecType,
};
use webrtc::track::track_local::{TrackLocal, TrackLocalContext, TrackLocalWriter};

use crate::codec::{CodecName, MediaKind};

/// One binding to the subscriber's peer connection (made when the answer is applied).
struct Binding {
    /// The binding's id (webrtc-rs calls unbind with the same context).
    id: String,
    ssrc: u32,
    codecs: Vec<RTCRtpCodecParameters>,
    /// The MID header extension (id, value) if negotiated on this connection.
    mid: Option<(u8, Bytes)>,
    writer: Arc<dyn TrackLocalWriter + Send + Sync>,
}

impl std::fmt::Debug for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Binding")
            .field("ssrc", &self.ssrc)
            .finish_non_exhaustive()
    }
}

/// Cached payload-type mapping, packed into one atomic: `VALID | src << 8 | dst`, or
/// `VALID | NO_MATCH | src << 8` when the subscriber cannot take the source's codec.
const VALID: u32 = 1 << 17;
const NO_MATCH: u32 = 1 << 16;

/// See the module docs. Created by a subscription, fed by the source track's read loop.
pub(crate) struct SfuTrack {
    kind: MediaKind,
    id: String,
    stream_id: String,
    binding: ArcSwapOption<Binding>,
    pt_map: AtomicU32,
    packets_sent: AtomicU64,
    bytes_sent: AtomicU64,
    packets_dropped: AtomicU64,
}

impl std::fmt::Debug for SfuTrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SfuTrack")
            .field("id", &self.id)
            .field("stream_id", &self.stream_id)
            .finish_non_exhaustive()
    }
}

/// Counters of one outgoing track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SfuTrackStats {
    pub packets_sent: u64,
    pub bytes_sent: u64,
    /// Not sent: not yet connected, no common codec, or a failed write.
    pub packets_dropped: u64,
}

impl SfuTrack {
    /// `stream_id` groups the tracks of one source (browsers put them in one MediaStream).
    pub fn new(kind: MediaKind, stream_id: &str) -> Self {
        let id = match kind {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        };
        Self {
            kind,
            id: id.to_owned(),
            stream_id: stream_id.to_owned(),
            binding: ArcSwapOption::empty(),
            pt_map: AtomicU32::new(0),
            packets_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            packets_dropped: AtomicU64::new(0),
        }
    }

    pub fn kind(&self) -> MediaKind {
        self.kind
    }

    pub fn stats(&self) -> SfuTrackStats {
        SfuTrackStats {
            packets_sent: self.packets_sent.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            packets_dropped: self.packets_dropped.load(Ordering::Relaxed),
        }
    }

    /// Sends one source packet (extensions already stripped) to the subscriber. Returns false
    /// if it was dropped. Never waits for the connection: before DTLS is up webrtc-rs discards.
    pub async fn write(
        &self,
        packet: &Packet,
        source: &RTCRtpCodecCapability,
        size: usize,
    ) -> bool {
        let Some(binding) = self.binding.load_full() else {
            self.packets_dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let Some(payload_type) =
            self.map_payload_type(packet.header.payload_type, source, &binding)
        else {
            self.packets_dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let mut out = packet.clone();
        out.header.ssrc = binding.ssrc;
        out.header.payload_type = payload_type;
        if let Some((id, mid)) = &binding.mid {
            let _ = out.header.set_extension(*id, mid.clone());
        }
        match binding.writer.write_rtp(&out).await {
            Ok(_) => {
                self.packets_sent.fetch_add(1, Ordering::Relaxed);
                self.bytes_sent.fetch_add(size as u64, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.packets_dropped.fetch_add(1, Ordering::Relaxed);
                debug!(track = %self.id, "forward to subscriber failed: {e}");
                false
            }
        }
    }

    fn map_payload_type(
        &self,
        source_pt: u8,
        source: &RTCRtpCodecCapability,
        binding: &Binding,
    ) -> Option<u8> {
        let cached = self.pt_map.load(Ordering::Relaxed);
        if cached & VALID != 0 && ((cached >> 8) & 0xff) as u8 == source_pt {
            return (cached & NO_MATCH == 0).then_some((cached & 0xff) as u8);
        }
        let found = matching_payload_type(source, &binding.codecs);
        let packed = VALID | (u32::from(source_pt) << 8) | found.map_or(NO_MATCH, u32::from);
        self.pt_map.store(packed, Ordering::Relaxed);
        if found.is_none() {
            warn!(
                track = %self.id,
                codec = %source.mime_type,
                "the subscriber did not offer the publisher's codec; this track is not forwarded"
            );
        }
        found
    }
}

/// The subscriber's payload type for the source's codec: same codec, and for H.264 the same
/// packetization mode (1) preferring the same profile, like webrtc-rs' own fuzzy match.
pub(crate) fn matching_payload_type(
    source: &RTCRtpCodecCapability,
    codecs: &[RTCRtpCodecParameters],
) -> Option<u8> {
    let name = CodecName::from_mime(&source.mime_type)?;
    let same_codec = codecs
        .iter()
        .filter(|c| CodecName::from_mime(&c.capability.mime_type) == Some(name));
    if name != CodecName::H264 {
        return same_codec.map(|c| c.payload_type).next();
    }
    let mode_1: Vec<&RTCRtpCodecParameters> = same_codec
        .filter(|c| fmtp_value(&c.capability.sdp_fmtp_line, "packetization-mode") == Some("1"))
        .collect();
    let profile = |fmtp: &str| {
        fmtp_value(fmtp, "profile-level-id")
            .filter(|p| p.len() >= 4)
            .map(|p| p[..4].to_ascii_lowercase())
    };
    let wanted = profile(&source.sdp_fmtp_line);
    mode_1
        .iter()
        .find(|c| wanted.is_some() && profile(&c.capability.sdp_fmtp_line) == wanted)
        .or_else(|| mode_1.first())
        .map(|c| c.payload_type)
}

fn fmtp_value<'a>(fmtp: &'a str, key: &str) -> Option<&'a str> {
    fmtp.split(';').find_map(|param| {
        let (k, v) = param.split_once('=')?;
        (k.trim().eq_ignore_ascii_case(key)).then_some(v.trim())
    })
}

#[async_trait]
impl TrackLocal for SfuTrack {
    async fn bind(&self, t: &TrackLocalContext) -> webrtc::error::Result<RTCRtpCodecParameters> {
        let codecs: Vec<RTCRtpCodecParameters> = t.codec_parameters().to_vec();
        let first = codecs
            .iter()
            .find(|c| {
                CodecName::from_mime(&c.capability.mime_type).map(CodecName::kind)
                    == Some(self.kind)
            })
            .cloned()
            .ok_or(webrtc::Error::ErrUnsupportedCodec)?;
        let mid = t
            .header_extensions()
            .iter()
            .find(|e| e.uri == webrtc::sdp::extmap::SDES_MID_URI)
            .and_then(|e| {
                let id = u8::try_from(e.id).ok()?;
                let mid = t.mid()?;
                Some((id, Bytes::copy_from_slice(mid.as_bytes())))
            });
        self.binding.store(Some(Arc::new(Binding {
            id: t.id(),
            ssrc: t.ssrc(),
            codecs,
            mid,
            writer: t.write_stream(),
        })));
        self.pt_map.store(0, Ordering::Relaxed);
        Ok(first)
    }

    async fn unbind(&self, t: &TrackLocalContext) -> webrtc::error::Result<()> {
        let current = self.binding.load();
        if current.as_ref().is_some_and(|b| b.id == t.id()) {
            self.binding.store(None);
        }
        Ok(())
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn rid(&self) -> Option<&str> {
        None
    }

    fn stream_id(&self) -> &str {
        &self.stream_id
    }

    fn kind(&self) -> RTPCodecType {
        match self.kind {
            MediaKind::Audio => RTPCodecType::Audio,
            MediaKind::Video => RTPCodecType::Video,
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(mime: &str, fmtp: &str, pt: u8) -> RTCRtpCodecParameters {
        RTCRtpCodecParameters {
            capability: RTCRtpCodecCapability {
                mime_type: mime.to_owned(),
                clock_rate: 90_000,
                sdp_fmtp_line: fmtp.to_owned(),
                ..Default::default()
            },
            payload_type: pt,
            ..Default::default()
        }
    }

    fn cap(mime: &str, fmtp: &str) -> RTCRtpCodecCapability {
        params(mime, fmtp, 0).capability
    }

    #[test]
    fn vp8_maps_to_the_subscribers_vp8() {
        let codecs = [
            params(
                "video/H264",
                "packetization-mode=1;profile-level-id=42e01f",
                102,
            ),
            params("video/VP8", "", 120),
        ];
        assert_eq!(
            matching_payload_type(&cap("video/vp8", ""), &codecs),
            Some(120)
        );
        assert_eq!(
            matching_payload_type(&cap("video/VP8", ""), &codecs[..1]),
            None
        );
    }

    #[test]
    fn h264_prefers_the_same_profile_and_needs_mode_1() {
        let codecs = [
            params(
                "video/H264",
                "packetization-mode=0;profile-level-id=42e01f",
                100,
            ),
            params(
                "video/H264",
                "packetization-mode=1;profile-level-id=42001f",
                101,
            ),
            params(
                "video/H264",
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
                102,
            ),
        ];
        let source = cap("video/H264", "packetization-mode=1;profile-level-id=42E01F");
        assert_eq!(matching_payload_type(&source, &codecs), Some(102));
        let high = cap("video/H264", "packetization-mode=1;profile-level-id=64001f");
        assert_eq!(matching_payload_type(&high, &codecs), Some(101));
        assert_eq!(matching_payload_type(&source, &codecs[..1]), None);
    }

    #[test]
    fn opus_maps_by_name() {
        let codecs = [params("audio/opus", "minptime=10;useinbandfec=1", 109)];
        assert_eq!(
            matching_payload_type(&cap("audio/OPUS", ""), &codecs),
            Some(109)
        );
    }
}
