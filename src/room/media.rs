//! Adapts what ingest reports about a track to what the mixer needs: the one place that knows
//! both crates' codec names.

use costream_ingest::{CodecName, TrackInfo};
use costream_mixer::control::Codec;

use super::state::TrackDesc;

/// The mixer's view of a track, or None for a codec the mixer does not decode.
pub fn track_desc(track: &TrackInfo) -> Option<TrackDesc> {
    let codec = match track.codec {
        CodecName::Vp8 => Codec::Vp8,
        CodecName::H264 => Codec::H264,
        CodecName::Opus => Codec::Opus,
        #[allow(unreachable_patterns)]
        _ => return None,
    };
    Some(TrackDesc {
        track_id: track.track_id.clone(),
        codec,
        payload_type: track.payload_type,
        clock_rate: track.clock_rate,
    })
}
