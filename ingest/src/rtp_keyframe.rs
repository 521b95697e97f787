//! Does this RTP payload start a keyframe? Pure parsing of the VP8 (RFC 7741) and H.264
//! (RFC 6184) payload formats; receivers use it to measure how fast a keyframe arrives.

use crate::codec::CodecName;

/// True if `payload` is the first packet of a VP8 key frame, or an H.264 packet carrying an
/// IDR slice start or a sequence parameter set (sent right before IDRs).
pub fn starts_keyframe(codec: CodecName, payload: &[u8]) -> bool {
    match codec {
        CodecName::Vp8 => vp8_starts_keyframe(payload),
        CodecName::H264 => h264_starts_keyframe(payload),
        _ => false,
    }
}

fn vp8_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let extended = first & 0x80 != 0;
    let start_of_partition = first & 0x10 != 0;
    let partition_id = first & 0x07;
    if !start_of_partition || partition_id != 0 {
        return false;
    }
    let mut at = 1;
    if extended {
        let Some(&x) = payload.get(at) else {
            return false;
        };
        at += 1;
        if x & 0x80 != 0 {
            // PictureID: 7 or 15 bits (M flag).
            let Some(&pid) = payload.get(at) else {
                return false;
            };
            at += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            at += 1; // TID / KEYIDX
        }
    }
    // VP8 payload header: P bit (bit 0) is 0 for key frames.
    payload.get(at).is_some_and(|&b| b & 0x01 == 0)
}

fn h264_starts_keyframe(payload: &[u8]) -> bool {
    const IDR: u8 = 5;
    const SPS: u8 = 7;
    let Some(&header) = payload.first() else {
        return false;
    };
    match header & 0x1f {
        IDR | SPS => true,
        // STAP-A: 16-bit size, then a NAL unit, repeated.
        24 => {
            let mut at = 1;
            while at + 2 < payload.len() {
                let size = usize::from(u16::from_be_bytes([payload[at], payload[at + 1]]));
                let Some(&nal) = payload.get(at + 2) else {
                    return false;
                };
                if matches!(nal & 0x1f, IDR | SPS) {
                    return true;
                }
                at += 2 + size;
            }
            false
        }
        // FU-A: start bit and the fragmented NAL type in the FU header.
        28 => payload
            .get(1)
            .is_some_and(|&fu| fu & 0x80 != 0 && fu & 0x1f == IDR),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_key_and_delta_frames() {
        // S=1, PID=0, no extension; payload header P=0 (key) / P=1 (delta).
        assert!(starts_keyframe(CodecName::Vp8, &[0x10, 0x00, 0x9d]));
        assert!(!starts_keyframe(CodecName::Vp8, &[0x10, 0x01, 0x9d]));
        // Not the start of the partition.
        assert!(!starts_keyframe(CodecName::Vp8, &[0x00, 0x00]));
        // Extended with a 15-bit PictureID, as browsers send.
        assert!(starts_keyframe(
            CodecName::Vp8,
            &[0x90, 0x80, 0x81, 0x23, 0x50]
        ));
        assert!(!starts_keyframe(
            CodecName::Vp8,
            &[0x90, 0x80, 0x81, 0x23, 0x51]
        ));
        assert!(!starts_keyframe(CodecName::Vp8, &[0x90, 0x80]));
        assert!(!starts_keyframe(CodecName::Vp8, &[]));
    }

    #[test]
    fn h264_idr_sps_stap_a_and_fu_a() {
        assert!(starts_keyframe(CodecName::H264, &[0x65, 0x88]));
        assert!(starts_keyframe(CodecName::H264, &[0x67, 0x42]));
        assert!(!starts_keyframe(CodecName::H264, &[0x41, 0x9a]));
        // STAP-A with SPS(2 bytes) + PPS(2 bytes).
        assert!(starts_keyframe(
            CodecName::H264,
            &[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce]
        ));
        assert!(!starts_keyframe(
            CodecName::H264,
            &[0x78, 0x00, 0x02, 0x68, 0xce]
        ));
        // FU-A start of an IDR, a middle fragment, a non-IDR start.
        assert!(starts_keyframe(CodecName::H264, &[0x7c, 0x85, 0x00]));
        assert!(!starts_keyframe(CodecName::H264, &[0x7c, 0x05, 0x00]));
        assert!(!starts_keyframe(CodecName::H264, &[0x7c, 0x81, 0x00]));
        assert!(!starts_keyframe(CodecName::Opus, &[0x65]));
    }
}
