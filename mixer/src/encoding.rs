//! Pure encoding choices: output presets and the H.264 level a canvas needs.
//!
//! CDNs (YouTube, Twitch, most packagers) accept High profile at the *smallest* level that
//! covers the stream; a level that is too low is a standards violation some ingest servers
//! reject, one that is needlessly high makes some players refuse the stream on weaker hardware.
//! So the level is derived from size, frame rate and bitrate, not fixed.

use crate::control::VideoSpec;

/// The H.264 profile every room is encoded with: High is what CDNs recommend (8x8 transform,
/// CABAC), and every player that plays H.264 live streams decodes it.
pub const H264_PROFILE: &str = "high";

/// A named output format. `480p` is 854x480 (16:9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    P480p30,
    P480p60,
    P720p30,
    P720p60,
    P1080p30,
    P1080p60,
}

impl Preset {
    pub const ALL: [Preset; 6] = [
        Preset::P480p30,
        Preset::P480p60,
        Preset::P720p30,
        Preset::P720p60,
        Preset::P1080p30,
        Preset::P1080p60,
    ];

    /// The API name, e.g. `720p30`.
    pub fn name(self) -> &'static str {
        match self {
            Preset::P480p30 => "480p30",
            Preset::P480p60 => "480p60",
            Preset::P720p30 => "720p30",
            Preset::P720p60 => "720p60",
            Preset::P1080p30 => "1080p30",
            Preset::P1080p60 => "1080p60",
        }
    }

    /// Parses an API name; the error lists the valid ones.
    pub fn parse(name: &str) -> Result<Preset, String> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Preset::ALL.iter().map(|p| p.name()).collect();
                format!("unknown preset {name:?}; use one of {}", names.join(", "))
            })
    }

    /// Size, rate and a default bitrate. Bitrates follow the middle of the common CDN
    /// recommendations (YouTube's live encoder table): 60 fps gets about 1.5x the 30 fps rate.
    pub fn video(self) -> VideoSpec {
        let (width, height, fps, bitrate_kbps) = match self {
            Preset::P480p30 => (854, 480, 30, 1500),
            Preset::P480p60 => (854, 480, 60, 2500),
            Preset::P720p30 => (1280, 720, 30, 3000),
            Preset::P720p60 => (1280, 720, 60, 4500),
            Preset::P1080p30 => (1920, 1080, 30, 4500),
            Preset::P1080p60 => (1920, 1080, 60, 6000),
        };
        VideoSpec {
            width,
            height,
            fps,
            bitrate_kbps,
        }
    }
}

/// One row of ITU-T H.264 Table A-1: level name, max macroblocks per second, max frame size in
/// macroblocks, max video bitrate (kbit/s, Baseline/Main; High allows 1.25x).
const LEVELS: &[(&str, u64, u64, u64)] = &[
    ("3", 40_500, 1_620, 10_000),
    ("3.1", 108_000, 3_600, 14_000),
    ("3.2", 216_000, 5_120, 20_000),
    ("4", 245_760, 8_192, 20_000),
    ("4.1", 245_760, 8_192, 50_000),
    ("4.2", 522_240, 8_704, 50_000),
    ("5", 589_824, 22_080, 135_000),
    ("5.1", 983_040, 36_864, 240_000),
    ("5.2", 2_073_600, 36_864, 240_000),
];

/// The smallest High-profile level (as the caps string, e.g. "3.1") that covers `video`:
/// frame size, macroblock rate and bitrate all within the level's limits. Streams smaller than
/// level 3 still get 3 (every player supports it); anything beyond 5.2 gets 5.2.
pub fn h264_level(video: &VideoSpec) -> &'static str {
    let mbs = |px: u32| u64::from(px.div_ceil(16));
    let frame_mbs = mbs(video.width) * mbs(video.height);
    let mb_rate = frame_mbs * u64::from(video.fps);
    let kbps = u64::from(video.bitrate_kbps);
    LEVELS
        .iter()
        .find(|(_, max_rate, max_fs, max_br)| {
            frame_mbs <= *max_fs && mb_rate <= *max_rate && kbps * 4 <= max_br * 5
        })
        .map_or("5.2", |(name, ..)| name)
}

/// Pixels per second one x264 thread (veryfast) encodes with room to spare on a server core:
/// 1280x720 at 30 fps took 11-14 ms a frame on one thread here.
const ONE_THREAD_PIXEL_RATE: u64 = 1280 * 720 * 30;

/// x264 threads for `video`: one up to 720p30, automatic (sliced threads, one per core and a
/// half) above. Why: a server runs several rooms at once, and a single encoder thread costs
/// the least CPU per room (2 slices measured 4 % more CPU for the whole mixer, more with
/// several rooms competing); its longer encode (about +6 ms) is hidden, because the muxer
/// holds every video frame ~45 ms for the matching AAC audio anyway. Bigger or faster outputs
/// would not keep up on one thread.
pub fn x264_threads(video: &VideoSpec) -> u32 {
    let rate = u64::from(video.width) * u64::from(video.height) * u64::from(video.fps);
    if rate <= ONE_THREAD_PIXEL_RATE {
        1
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_encoder_thread_up_to_720p30_automatic_above() {
        assert_eq!(x264_threads(&Preset::P480p30.video()), 1);
        assert_eq!(x264_threads(&Preset::P480p60.video()), 1);
        assert_eq!(x264_threads(&Preset::P720p30.video()), 1);
        assert_eq!(x264_threads(&Preset::P720p60.video()), 0);
        assert_eq!(x264_threads(&Preset::P1080p30.video()), 0);
    }

    fn level_of(p: Preset) -> &'static str {
        h264_level(&p.video())
    }

    #[test]
    fn presets_get_the_levels_cdns_expect() {
        assert_eq!(level_of(Preset::P480p30), "3.1");
        assert_eq!(level_of(Preset::P480p60), "3.1");
        assert_eq!(level_of(Preset::P720p30), "3.1");
        assert_eq!(level_of(Preset::P720p60), "3.2");
        assert_eq!(level_of(Preset::P1080p30), "4");
        assert_eq!(level_of(Preset::P1080p60), "4.2");
    }

    #[test]
    fn bitrate_and_tiny_or_huge_canvases_move_the_level() {
        let v = |width, height, fps, bitrate_kbps| VideoSpec {
            width,
            height,
            fps,
            bitrate_kbps,
        };
        // 720p30 at 20 Mbit/s is over 3.1's 17.5 Mbit/s (High) but within 3.2's 25.
        assert_eq!(h264_level(&v(1280, 720, 30, 20_000)), "3.2");
        // 1080p30 above 25 Mbit/s needs 4.1.
        assert_eq!(h264_level(&v(1920, 1080, 30, 30_000)), "4.1");
        assert_eq!(h264_level(&v(320, 180, 15, 300)), "3");
        assert_eq!(h264_level(&v(3840, 2160, 30, 20_000)), "5.1");
        assert_eq!(h264_level(&v(3840, 2160, 60, 20_000)), "5.2");
    }

    #[test]
    fn every_level_covers_its_stream() {
        for width in (160..=3840).step_by(158) {
            for height in (90..=2160).step_by(94) {
                for fps in [1, 15, 24, 25, 30, 50, 60] {
                    let video = VideoSpec {
                        width: width & !1,
                        height: height & !1,
                        fps,
                        bitrate_kbps: 6000,
                    };
                    let level = h264_level(&video);
                    let (_, rate, fs, _) = LEVELS.iter().find(|l| l.0 == level).unwrap();
                    let frame = u64::from(video.width.div_ceil(16) * video.height.div_ceil(16));
                    assert!(frame <= *fs, "{video:?} -> {level}");
                    assert!(frame * u64::from(fps) <= *rate, "{video:?} -> {level}");
                }
            }
        }
    }

    #[test]
    fn preset_names_round_trip_and_unknown_lists_the_valid_ones() {
        for p in Preset::ALL {
            assert_eq!(Preset::parse(p.name()), Ok(p));
            assert!(p.video().bitrate_kbps > 0);
        }
        let err = Preset::parse("4k").unwrap_err();
        assert!(err.contains("4k") && err.contains("1080p60"), "{err}");
    }
}
