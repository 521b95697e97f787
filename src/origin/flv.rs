//! FLV tags as the origin stores and forwards them, and the FLV file framing HTTP-FLV viewers
//! receive. Pure: bytes in, bytes out.
//!
//! An RTMP audio/video message body is exactly an FLV tag body, so the origin keeps the
//! publisher's payloads untouched and only adds the 11-byte tag header for HTTP-FLV.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use rml_rtmp::rml_amf0::Amf0Value;
use rml_rtmp::sessions::StreamMetadata;

/// FLV tag types (the first byte of an FLV tag header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    Audio = 8,
    Video = 9,
    /// `onMetaData` and friends (AMF0).
    Script = 18,
}

/// One media message of a stream: what the publisher sent, with its timestamp in ms.
#[derive(Debug, Clone, PartialEq)]
pub struct Tag {
    pub kind: TagKind,
    pub timestamp: u32,
    pub data: Bytes,
}

/// FLV video codec id of H.264 (AVC).
const CODEC_AVC: u8 = 7;
/// FLV sound format of AAC.
const SOUND_AAC: u8 = 10;

impl Tag {
    pub fn video(timestamp: u32, data: Bytes) -> Self {
        Self {
            kind: TagKind::Video,
            timestamp,
            data,
        }
    }

    pub fn audio(timestamp: u32, data: Bytes) -> Self {
        Self {
            kind: TagKind::Audio,
            timestamp,
            data,
        }
    }

    /// A video frame a decoder can start from (FLV frame type 1).
    pub fn is_video_keyframe(&self) -> bool {
        self.kind == TagKind::Video
            && !self.is_sequence_header()
            && self.data.first().is_some_and(|b| b >> 4 == 1)
    }

    /// The AVC decoder configuration record (SPS/PPS) of an H.264 stream.
    pub fn is_avc_sequence_header(&self) -> bool {
        self.kind == TagKind::Video
            && self.data.len() >= 2
            && self.data[0] & 0x0f == CODEC_AVC
            && self.data[1] == 0
    }

    /// The AudioSpecificConfig of an AAC stream.
    pub fn is_aac_sequence_header(&self) -> bool {
        self.kind == TagKind::Audio
            && self.data.len() >= 2
            && self.data[0] >> 4 == SOUND_AAC
            && self.data[1] == 0
    }

    /// Codec configuration a decoder needs before any frame.
    pub fn is_sequence_header(&self) -> bool {
        self.is_avc_sequence_header() || self.is_aac_sequence_header()
    }
}

/// The 9-byte FLV file header followed by `PreviousTagSize0`.
pub fn file_header(has_audio: bool, has_video: bool) -> [u8; 13] {
    let flags = (u8::from(has_audio) << 2) | u8::from(has_video);
    [b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0]
}

/// Appends `tag` as an FLV tag (header, body, `PreviousTagSize`) with `timestamp` in ms.
pub fn write_tag(out: &mut BytesMut, kind: TagKind, timestamp: u32, data: &[u8]) {
    // The FLV data size field is 24 bits; RTMP messages are bounded by the same limit.
    let size = data.len().min(0x00ff_ffff) as u32;
    out.reserve(11 + size as usize + 4);
    out.put_u8(kind as u8);
    out.put_uint(u64::from(size), 3);
    out.put_uint(u64::from(timestamp & 0x00ff_ffff), 3);
    out.put_u8((timestamp >> 24) as u8);
    out.put_uint(0, 3);
    out.put_slice(&data[..size as usize]);
    out.put_u32(11 + size);
}

/// The `onMetaData` properties of a stream, with the names players expect.
pub fn metadata_properties(meta: &StreamMetadata) -> HashMap<String, Amf0Value> {
    let mut p = HashMap::new();
    let mut number = |name: &str, value: Option<f64>| {
        if let Some(v) = value {
            p.insert(name.to_string(), Amf0Value::Number(v));
        }
    };
    number("width", meta.video_width.map(f64::from));
    number("height", meta.video_height.map(f64::from));
    number("videocodecid", meta.video_codec_id.map(f64::from));
    number("videodatarate", meta.video_bitrate_kbps.map(f64::from));
    number("framerate", meta.video_frame_rate.map(f64::from));
    number("audiocodecid", meta.audio_codec_id.map(f64::from));
    number("audiodatarate", meta.audio_bitrate_kbps.map(f64::from));
    number("audiosamplerate", meta.audio_sample_rate.map(f64::from));
    number("audiochannels", meta.audio_channels.map(f64::from));
    if let Some(stereo) = meta.audio_is_stereo {
        p.insert("stereo".into(), Amf0Value::Boolean(stereo));
    }
    if let Some(encoder) = &meta.encoder {
        p.insert("encoder".into(), Amf0Value::Utf8String(encoder.clone()));
    }
    p
}

/// The body of an FLV script tag carrying `onMetaData`.
pub fn metadata_script(meta: &StreamMetadata) -> Bytes {
    let values = vec![
        Amf0Value::Utf8String("onMetaData".into()),
        Amf0Value::Object(metadata_properties(meta)),
    ];
    // Serializing numbers, booleans, strings and a flat object cannot fail.
    rml_rtmp::rml_amf0::serialize(&values)
        .map(Bytes::from)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_h264_and_aac_tags() {
        let avc_header = Tag::video(0, Bytes::from_static(&[0x17, 0, 0, 0, 0, 1]));
        let keyframe = Tag::video(40, Bytes::from_static(&[0x17, 1, 0, 0, 0, 9]));
        let inter = Tag::video(80, Bytes::from_static(&[0x27, 1, 0, 0, 0, 9]));
        let aac_header = Tag::audio(0, Bytes::from_static(&[0xaf, 0, 0x11, 0x90]));
        let aac_frame = Tag::audio(21, Bytes::from_static(&[0xaf, 1, 0x21]));
        assert!(avc_header.is_sequence_header() && !avc_header.is_video_keyframe());
        assert!(keyframe.is_video_keyframe() && !keyframe.is_sequence_header());
        assert!(!inter.is_video_keyframe() && !inter.is_sequence_header());
        assert!(aac_header.is_aac_sequence_header() && !aac_header.is_video_keyframe());
        assert!(!aac_frame.is_sequence_header());
        assert!(!Tag::video(0, Bytes::new()).is_video_keyframe());
    }

    #[test]
    fn writes_flv_header_and_tags() {
        assert_eq!(&file_header(true, true)[..5], b"FLV\x01\x05");
        let mut out = BytesMut::new();
        write_tag(&mut out, TagKind::Video, 0x0123_4567, &[0xaa, 0xbb]);
        assert_eq!(
            &out[..],
            &[9, 0, 0, 2, 0x23, 0x45, 0x67, 0x01, 0, 0, 0, 0xaa, 0xbb, 0, 0, 0, 13]
        );
    }

    #[test]
    fn metadata_round_trips_through_amf0() {
        let mut meta = StreamMetadata::new();
        meta.video_width = Some(1280);
        meta.video_height = Some(720);
        meta.encoder = Some("costream".into());
        let script = metadata_script(&meta);
        let values = rml_rtmp::rml_amf0::deserialize(&mut &script[..]).unwrap();
        assert_eq!(values[0], Amf0Value::Utf8String("onMetaData".into()));
        let Amf0Value::Object(props) = &values[1] else {
            panic!("{values:?}")
        };
        assert_eq!(props["width"], Amf0Value::Number(1280.0));
        assert_eq!(props["encoder"], Amf0Value::Utf8String("costream".into()));
    }
}
