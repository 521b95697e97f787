//! Which codecs costream accepts, and the pure check of an offer against them.
//!
//! webrtc-rs negotiates whatever the MediaEngine knows and silently falls back to "same mime
//! type, different fmtp" matches (e.g. H.264 packetization-mode=0). We check the offer
//! ourselves first so a publisher gets a clear error instead of a session that never
//! produces a usable track.

use std::io::Cursor;

use webrtc::api::media_engine::{MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8};
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpCodecParameters, RTPCodecType,
};
use webrtc::rtp_transceiver::RTCPFeedback;
use webrtc::sdp::description::media::MediaDescription;
use webrtc::sdp::SessionDescription;

use crate::error::IngestError;

/// Audio or video.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
}

/// A codec costream can receive, forward and mix.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodecName {
    Vp8,
    /// H.264 with packetization-mode=1 (any profile the publisher offers).
    H264,
    Opus,
}

impl CodecName {
    pub fn kind(self) -> MediaKind {
        match self {
            CodecName::Vp8 | CodecName::H264 => MediaKind::Video,
            CodecName::Opus => MediaKind::Audio,
        }
    }

    /// The RTP clock rate every payload of this codec uses.
    pub fn clock_rate(self) -> u32 {
        match self {
            CodecName::Vp8 | CodecName::H264 => 90_000,
            CodecName::Opus => 48_000,
        }
    }

    /// Maps a webrtc-rs mime type ("video/VP8", case-insensitive) to our codec.
    pub fn from_mime(mime: &str) -> Option<Self> {
        let (_, name) = mime.split_once('/')?;
        Self::from_encoding_name(name)
    }

    /// Maps an SDP rtpmap encoding name ("VP8", "H264", "opus") to our codec.
    fn from_encoding_name(name: &str) -> Option<Self> {
        if name.eq_ignore_ascii_case("vp8") {
            Some(CodecName::Vp8)
        } else if name.eq_ignore_ascii_case("h264") {
            Some(CodecName::H264)
        } else if name.eq_ignore_ascii_case("opus") {
            Some(CodecName::Opus)
        } else {
            None
        }
    }
}

/// H.264 fmtp we register. webrtc-rs matches H.264 on packetization-mode plus the first two
/// bytes of profile-level-id (profile + constraints), so one entry per common profile makes
/// every packetization-mode=1 offer an exact match and keeps mode 0 out of the answer.
const H264_FMTPS: [(u8, &str); 4] = [
    (
        106,
        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
    ),
    (
        102,
        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
    ),
    (
        108,
        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f",
    ),
    (
        112,
        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f",
    ),
];

const OPUS_FMTP: &str = "minptime=10;useinbandfec=1";

/// The capability a local (sending) track of this codec announces.
pub(crate) fn capability(codec: CodecName) -> RTCRtpCodecCapability {
    match codec {
        CodecName::Vp8 => RTCRtpCodecCapability {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90_000,
            ..Default::default()
        },
        CodecName::H264 => RTCRtpCodecCapability {
            mime_type: MIME_TYPE_H264.to_owned(),
            clock_rate: 90_000,
            sdp_fmtp_line: H264_FMTPS[0].1.to_owned(),
            ..Default::default()
        },
        CodecName::Opus => RTCRtpCodecCapability {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: OPUS_FMTP.to_owned(),
            ..Default::default()
        },
    }
}

/// Registers exactly the codecs costream accepts; nothing else can be negotiated.
pub(crate) fn register_codecs(media_engine: &mut MediaEngine) -> Result<(), webrtc::Error> {
    // nack/pli/fir are what we use (NACK generator, keyframe requests). No goog-remb: we never
    // send REMB; transport-cc is added by the interceptor registry.
    let video_feedback = vec![
        feedback("ccm", "fir"),
        feedback("nack", ""),
        feedback("nack", "pli"),
    ];
    media_engine.register_codec(
        RTCRtpCodecParameters {
            capability: capability(CodecName::Opus),
            payload_type: 111,
            ..Default::default()
        },
        RTPCodecType::Audio,
    )?;
    media_engine.register_codec(
        RTCRtpCodecParameters {
            capability: RTCRtpCodecCapability {
                rtcp_feedback: video_feedback.clone(),
                ..capability(CodecName::Vp8)
            },
            payload_type: 96,
            ..Default::default()
        },
        RTPCodecType::Video,
    )?;
    for (payload_type, fmtp) in H264_FMTPS {
        media_engine.register_codec(
            RTCRtpCodecParameters {
                capability: RTCRtpCodecCapability {
                    sdp_fmtp_line: fmtp.to_owned(),
                    rtcp_feedback: video_feedback.clone(),
                    ..capability(CodecName::H264)
                },
                payload_type,
                ..Default::default()
            },
            RTPCodecType::Video,
        )?;
    }
    Ok(())
}

fn feedback(typ: &str, parameter: &str) -> RTCPFeedback {
    RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    }
}

/// Parses SDP text. The parser is third-party code fed with untrusted input, so a panic in it
/// is caught and reported as invalid SDP rather than taking the handler task down.
pub(crate) fn parse_sdp(text: &str) -> Result<SessionDescription, IngestError> {
    if text.trim().is_empty() {
        return Err(IngestError::InvalidSdp("the SDP is empty".into()));
    }
    if !text.trim_start().starts_with("v=") {
        return Err(IngestError::InvalidSdp(
            "SDP must start with a \"v=0\" line".into(),
        ));
    }
    let parsed = std::panic::catch_unwind(|| {
        let mut reader = Cursor::new(text.as_bytes());
        SessionDescription::unmarshal(&mut reader)
    });
    match parsed {
        Ok(Ok(sdp)) => Ok(sdp),
        Ok(Err(e)) => Err(IngestError::InvalidSdp(e.to_string())),
        Err(_) => Err(IngestError::InvalidSdp(
            "the SDP parser could not read this input".into(),
        )),
    }
}

/// What an acceptable offer will send us.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct OfferSummary {
    /// Codecs of each accepted section, in section order (first acceptable codec per section).
    pub accepted: Vec<CodecName>,
    /// Human-readable notes on sections we will not receive (for logs).
    pub ignored: Vec<String>,
}

/// Checks that the offer sends at least one audio or video section in a codec we accept.
/// Sections we cannot use are tolerated (webrtc-rs rejects them in the answer) as long as
/// something is usable; otherwise the error says what was offered.
pub(crate) fn check_offer(sdp: &SessionDescription) -> Result<OfferSummary, IngestError> {
    let mut summary = OfferSummary::default();
    let mut media_sections = 0;
    let mut sending_sections = 0;
    for (index, media) in sdp.media_descriptions.iter().enumerate() {
        let kind = match media.media_name.media.to_ascii_lowercase().as_str() {
            "audio" => MediaKind::Audio,
            "video" => MediaKind::Video,
            _ => continue,
        };
        media_sections += 1;
        let label = section_label(media, index, kind);
        if media.media_name.port.value == 0 {
            summary
                .ignored
                .push(format!("{label} is disabled (port 0)"));
            continue;
        }
        if !sends_media(media) {
            summary
                .ignored
                .push(format!("{label} does not send (recvonly/inactive)"));
            continue;
        }
        sending_sections += 1;
        let offered = offered_codecs(media);
        match offered
            .iter()
            .find_map(|c| c.accepted.filter(|a| a.kind() == kind))
        {
            Some(codec) => summary.accepted.push(codec),
            None => {
                let names: Vec<&str> = offered.iter().map(|c| c.description.as_str()).collect();
                let names = if names.is_empty() {
                    "no codecs".to_string()
                } else {
                    names.join(", ")
                };
                summary.ignored.push(format!("{label} offers only {names}"));
            }
        }
    }
    if media_sections == 0 {
        return Err(IngestError::NoMedia);
    }
    if summary.accepted.is_empty() {
        if sending_sections == 0 {
            return Err(IngestError::InvalidSdp(format!(
                "the offer does not send any media ({}); a WHIP offer needs sendonly or sendrecv audio/video",
                summary.ignored.join("; ")
            )));
        }
        return Err(IngestError::UnsupportedCodec(summary.ignored.join("; ")));
    }
    Ok(summary)
}

/// Which media kinds a WHEP (subscribe) offer wants to receive: its audio/video sections that
/// are enabled and recvonly or sendrecv. An offer that receives nothing is an error.
pub(crate) fn check_subscribe_offer(
    sdp: &SessionDescription,
) -> Result<Vec<MediaKind>, IngestError> {
    let mut kinds = Vec::new();
    let mut media_sections = 0;
    for media in &sdp.media_descriptions {
        let kind = match media.media_name.media.to_ascii_lowercase().as_str() {
            "audio" => MediaKind::Audio,
            "video" => MediaKind::Video,
            _ => continue,
        };
        media_sections += 1;
        let receives = !(media.has_attribute("sendonly") || media.has_attribute("inactive"));
        if media.media_name.port.value != 0 && receives && !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    if media_sections == 0 {
        return Err(IngestError::NoMedia);
    }
    if kinds.is_empty() {
        return Err(IngestError::InvalidSdp(
            "the offer receives no media; a WHEP offer needs recvonly audio and/or video sections (addTransceiver('video', {direction: 'recvonly'}))".into(),
        ));
    }
    Ok(kinds)
}

fn section_label(media: &MediaDescription, index: usize, kind: MediaKind) -> String {
    let kind = match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    };
    match media.attribute("mid").flatten() {
        Some(mid) => format!("the {kind} section (mid {mid})"),
        None => format!("the {kind} section #{index}"),
    }
}

/// Direction defaults to sendrecv when the section names none (RFC 4566).
fn sends_media(media: &MediaDescription) -> bool {
    !(media.has_attribute("recvonly") || media.has_attribute("inactive"))
}

struct OfferedCodec {
    /// e.g. "H264/90000 (packetization-mode=0)"
    description: String,
    accepted: Option<CodecName>,
}

fn offered_codecs(media: &MediaDescription) -> Vec<OfferedCodec> {
    let mut codecs = Vec::new();
    for format in &media.media_name.formats {
        let Some(rtpmap) = attribute_for_payload(media, "rtpmap", format) else {
            // Static payload types (0 = PCMU, 8 = PCMA) may come without an rtpmap.
            codecs.push(OfferedCodec {
                description: format!("payload type {format}"),
                accepted: None,
            });
            continue;
        };
        let name = rtpmap.split('/').next().unwrap_or_default().trim();
        // Retransmission, FEC and DTMF ride along with a media codec; not worth mentioning.
        if [
            "rtx",
            "red",
            "ulpfec",
            "flexfec-03",
            "telephone-event",
            "cn",
        ]
        .iter()
        .any(|aux| name.eq_ignore_ascii_case(aux))
        {
            continue;
        }
        let fmtp = attribute_for_payload(media, "fmtp", format).unwrap_or_default();
        let accepted = match CodecName::from_encoding_name(name) {
            Some(CodecName::H264) if !h264_packetization_mode_1(fmtp) => None,
            other => other,
        };
        let description = if accepted.is_none() && name.eq_ignore_ascii_case("h264") {
            format!("{rtpmap} (packetization-mode=0)")
        } else {
            rtpmap.trim().to_string()
        };
        codecs.push(OfferedCodec {
            description,
            accepted,
        });
    }
    codecs
}

/// The value of `a=<key>:<payload type> <value>` for this payload type.
fn attribute_for_payload<'a>(
    media: &'a MediaDescription,
    key: &str,
    payload_type: &str,
) -> Option<&'a str> {
    media.attributes.iter().find_map(|attribute| {
        if attribute.key != key {
            return None;
        }
        let value = attribute.value.as_deref()?;
        let (pt, rest) = value.split_once(' ')?;
        (pt == payload_type).then_some(rest)
    })
}

/// Mode 0 (single NAL unit) is the default when the parameter is absent (RFC 6184).
fn h264_packetization_mode_1(fmtp: &str) -> bool {
    fmtp.split(';').any(|param| {
        let mut kv = param.splitn(2, '=');
        kv.next().map(str::trim) == Some("packetization-mode")
            && kv.next().map(str::trim) == Some("1")
    })
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
