//! Pure colour decisions: which YUV encoding the program is made in, and what an input's decoded
//! pictures really are. No pipeline here; `pipeline` and `inputs` put these into caps.
//!
//! Why explicit: a GstVideoAggregator (the compositor) without colorimetry in its output caps
//! takes the colorimetry of whichever sink pads have caps when it (re)negotiates, and x264enc
//! writes the colour description of its *first* caps into the H.264 VUI and never updates it
//! (a later caps change with the same size and format keeps the running encoder). The background
//! is 720p without colorimetry (GStreamer defaults HD to BT.709) and a browser's camera is
//! BT.601, so when the first negotiation happened before the first camera's caps arrived, the
//! stream said BT.709 while the composite was later made in BT.601: (0, 136, 0) played as
//! (0, 113, 0) for the whole broadcast. Which came first was a race, decided once per mixer
//! start. With these two decisions the program's colorimetry is fixed before anything runs and
//! every input is converted into it.

use gstreamer_video::{
    VideoColorMatrix, VideoColorPrimaries, VideoColorRange, VideoColorimetry, VideoTransferFunction,
};

use crate::control::Codec;

/// Tallest picture still "standard definition" (576 lines, PAL): broadcasters and GStreamer's
/// own defaults use BT.601 up to here and BT.709 above.
const SD_MAX_HEIGHT: u32 = 576;

/// The YUV encodings the program is made in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramColour {
    /// ITU-R BT.601 (SMPTE 170M primaries), limited range: SD.
    Bt601,
    /// ITU-R BT.709, limited range: HD.
    Bt709,
}

impl ProgramColour {
    /// The colorimetry for caps; x264enc turns it into the VUI colour description
    /// (`colour_primaries`, `transfer_characteristics`, `matrix_coefficients` all 6 for BT.601
    /// as SMPTE 170M, all 1 for BT.709; `video_full_range_flag` 0).
    pub fn colorimetry(self) -> VideoColorimetry {
        match self {
            ProgramColour::Bt601 => bt601(),
            ProgramColour::Bt709 => VideoColorimetry::new(
                VideoColorRange::Range16_235,
                VideoColorMatrix::Bt709,
                VideoTransferFunction::Bt709,
                VideoColorPrimaries::Bt709,
            ),
        }
    }
}

/// The program's encoding for a canvas `height` lines tall: BT.709 for HD (720p, 1080p), BT.601
/// for SD (480p), as broadcasters expect.
pub fn program_colour(height: u32) -> ProgramColour {
    if height > SD_MAX_HEIGHT {
        ProgramColour::Bt709
    } else {
        ProgramColour::Bt601
    }
}

/// BT.601 limited range with SMPTE 170M primaries: what GStreamer calls `bt601`.
fn bt601() -> VideoColorimetry {
    VideoColorimetry::new(
        VideoColorRange::Range16_235,
        VideoColorMatrix::Bt601,
        VideoTransferFunction::Bt601,
        VideoColorPrimaries::Smpte170m,
    )
}

/// What an input's decoded pictures are, given the colorimetry its decoder reported
/// (`None`: it reported none).
///
/// VP8 cannot signal anything but BT.601 (RFC 6386 9.2: `color_space` 0 is BT.601, 1 is
/// reserved; the bit next to it is `clamping_type`, which libavcodec reads as a range flag), so
/// a VP8 input is always BT.601 limited. H.264 says what it is in the VUI when the encoder
/// wrote one: each field the decoder reports is kept, each it leaves unknown is BT.601's (what
/// browsers and WebRTC encoders produce). Never the decoder's size-based guess: GStreamer calls
/// an unlabelled 720p picture BT.709, which a browser's camera is not.
pub fn input_colorimetry(codec: Codec, reported: Option<VideoColorimetry>) -> VideoColorimetry {
    let fallback = bt601();
    let reported = match (codec, reported) {
        (Codec::H264, Some(reported)) => reported,
        _ => return fallback,
    };
    let range = match reported.range() {
        VideoColorRange::Unknown => fallback.range(),
        known => known,
    };
    let matrix = match reported.matrix() {
        VideoColorMatrix::Unknown => fallback.matrix(),
        known => known,
    };
    let transfer = match reported.transfer() {
        VideoTransferFunction::Unknown => fallback.transfer(),
        known => known,
    };
    let primaries = match reported.primaries() {
        VideoColorPrimaries::Unknown => fallback.primaries(),
        known => known,
    };
    VideoColorimetry::new(range, matrix, transfer, primaries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn colorimetry(
        range: VideoColorRange,
        matrix: VideoColorMatrix,
        transfer: VideoTransferFunction,
        primaries: VideoColorPrimaries,
    ) -> VideoColorimetry {
        VideoColorimetry::new(range, matrix, transfer, primaries)
    }

    #[test]
    fn presets_480p_are_sd_and_720p_1080p_are_hd() {
        assert_eq!(program_colour(480), ProgramColour::Bt601);
        assert_eq!(program_colour(576), ProgramColour::Bt601);
        assert_eq!(program_colour(720), ProgramColour::Bt709);
        assert_eq!(program_colour(1080), ProgramColour::Bt709);
        assert_eq!(program_colour(180), ProgramColour::Bt601);
    }

    #[test]
    fn program_colorimetry_is_complete_and_limited_range() {
        for colour in [ProgramColour::Bt601, ProgramColour::Bt709] {
            let c = colour.colorimetry();
            assert_eq!(c.range(), VideoColorRange::Range16_235, "{colour:?}");
            assert_ne!(c.matrix(), VideoColorMatrix::Unknown, "{colour:?}");
            assert_ne!(c.transfer(), VideoTransferFunction::Unknown, "{colour:?}");
            assert_ne!(c.primaries(), VideoColorPrimaries::Unknown, "{colour:?}");
        }
        assert_eq!(
            ProgramColour::Bt709.colorimetry().matrix(),
            VideoColorMatrix::Bt709
        );
        assert_eq!(
            ProgramColour::Bt601.colorimetry().matrix(),
            VideoColorMatrix::Bt601
        );
    }

    #[test]
    fn vp8_is_always_bt601_limited_whatever_the_decoder_says() {
        let full_709 = colorimetry(
            VideoColorRange::Range0_255,
            VideoColorMatrix::Bt709,
            VideoTransferFunction::Bt709,
            VideoColorPrimaries::Bt709,
        );
        assert_eq!(input_colorimetry(Codec::Vp8, Some(full_709)), bt601());
        assert_eq!(input_colorimetry(Codec::Vp8, None), bt601());
    }

    #[test]
    fn h264_keeps_what_its_vui_says() {
        let hd = ProgramColour::Bt709.colorimetry();
        assert_eq!(input_colorimetry(Codec::H264, Some(hd)), hd);
        let full_709 = colorimetry(
            VideoColorRange::Range0_255,
            VideoColorMatrix::Bt709,
            VideoTransferFunction::Bt709,
            VideoColorPrimaries::Bt709,
        );
        assert_eq!(input_colorimetry(Codec::H264, Some(full_709)), full_709);
    }

    #[test]
    fn h264_without_a_colour_description_is_bt601_limited() {
        assert_eq!(input_colorimetry(Codec::H264, None), bt601());
        let unknown = colorimetry(
            VideoColorRange::Unknown,
            VideoColorMatrix::Unknown,
            VideoTransferFunction::Unknown,
            VideoColorPrimaries::Unknown,
        );
        assert_eq!(input_colorimetry(Codec::H264, Some(unknown)), bt601());
        // A full-range flag without a colour description: BT.601 matrix at full range.
        let full_only = colorimetry(
            VideoColorRange::Range0_255,
            VideoColorMatrix::Unknown,
            VideoTransferFunction::Unknown,
            VideoColorPrimaries::Unknown,
        );
        let got = input_colorimetry(Codec::H264, Some(full_only));
        assert_eq!(got.range(), VideoColorRange::Range0_255);
        assert_eq!(got.matrix(), VideoColorMatrix::Bt601);
        assert_eq!(got.primaries(), VideoColorPrimaries::Smpte170m);
    }
}
