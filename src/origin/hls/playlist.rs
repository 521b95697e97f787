//! The LL-HLS media playlist (RFC 8216bis) of a [`Window`]. Pure text.
//!
//! Written here rather than with a playlist crate: `m3u8-rs` 6 writes none of the LL-HLS tags
//! (`EXT-X-PART`, `EXT-X-PRELOAD-HINT`, `EXT-X-SERVER-CONTROL`, `EXT-X-PART-INF`), and
//! `hls-playlist` 0.2 cannot express the parts of the segment still being written (a segment
//! there must have a URI and a duration), which is the heart of LL-HLS. The text is a dozen
//! line formats; tests parse it back and hls.js and ffprobe read it in the end-to-end tests.

use std::fmt::Write;

use super::window::Window;

/// URI of a segment, a part, and an init segment, relative to the playlist.
pub fn segment_uri(msn: u64) -> String {
    format!("seg-{msn}.m4s")
}

pub fn part_uri(msn: u64, index: usize) -> String {
    format!("part-{msn}-{index}.m4s")
}

pub fn init_uri(version: u32) -> String {
    format!("init-{version}.mp4")
}

/// What a file name of a stream's HLS directory asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Playlist,
    Init(u32),
    Segment(u64),
    Part(u64, usize),
}

impl Resource {
    pub fn parse(file: &str) -> Option<Self> {
        if file == "index.m3u8" {
            return Some(Self::Playlist);
        }
        if let Some(version) = file
            .strip_prefix("init-")
            .and_then(|f| f.strip_suffix(".mp4"))
        {
            return version.parse().ok().map(Self::Init);
        }
        let name = file.strip_suffix(".m4s")?;
        if let Some(msn) = name.strip_prefix("seg-") {
            return msn.parse().ok().map(Self::Segment);
        }
        let (msn, index) = name.strip_prefix("part-")?.split_once('-')?;
        Some(Self::Part(msn.parse().ok()?, index.parse().ok()?))
    }
}

fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// The media playlist; `part_target_ms` is the packager's part target.
pub fn render(
    window: &Window,
    now: std::time::Instant,
    part_target_ms: u32,
    segments_with_parts: usize,
) -> String {
    let target = window.target_duration_s();
    let part_target = u64::from(part_target_ms);
    let mut out = String::with_capacity(4096);
    let mut line = |text: std::fmt::Arguments| {
        let _ = out.write_fmt(text);
        out.push('\n');
    };
    line(format_args!("#EXTM3U"));
    line(format_args!("#EXT-X-VERSION:9"));
    line(format_args!("#EXT-X-TARGETDURATION:{target}"));
    // HOLD-BACK ≥ 3 target durations and PART-HOLD-BACK ≥ 2 part targets (RFC 8216bis 4.4.3.8);
    // three parts leave room for one part arriving late.
    line(format_args!(
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={},HOLD-BACK={}",
        seconds(3 * part_target),
        seconds(3 * target * 1000)
    ));
    line(format_args!(
        "#EXT-X-PART-INF:PART-TARGET={}",
        seconds(part_target)
    ));
    let listed: Vec<_> = window.listed().collect();
    let first_msn = listed.first().map_or(window.next_part().0, |s| s.msn);
    line(format_args!("#EXT-X-MEDIA-SEQUENCE:{first_msn}"));
    line(format_args!(
        "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
        window.listed_discontinuity_sequence()
    ));
    // Every segment starts on a keyframe, unless the encoder went without one for
    // `max_segment_ms` and a segment was cut anyway: then the tag would be a lie.
    if listed
        .iter()
        .all(|s| s.parts.first().is_none_or(|p| p.independent))
    {
        line(format_args!("#EXT-X-INDEPENDENT-SEGMENTS"));
    }
    let with_parts_from = listed.len().saturating_sub(segments_with_parts + 1);
    let mut current_init = None;
    for (i, segment) in listed.iter().enumerate() {
        // Written before the first listed segment too: the discontinuity sequence counts a
        // discontinuity only once its segment has left the playlist, so players keep the same
        // numbering of timelines from one reload to the next.
        if segment.discontinuity {
            line(format_args!("#EXT-X-DISCONTINUITY"));
        }
        let started =
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(segment.started_at_ms);
        line(format_args!(
            "#EXT-X-PROGRAM-DATE-TIME:{}",
            humantime::format_rfc3339_millis(started)
        ));
        if current_init != Some(segment.init) {
            current_init = Some(segment.init);
            line(format_args!(
                "#EXT-X-MAP:URI=\"{}\"",
                init_uri(segment.init)
            ));
        }
        if i >= with_parts_from || !segment.complete {
            for (index, part) in segment.parts.iter().enumerate() {
                let independent = if part.independent {
                    ",INDEPENDENT=YES"
                } else {
                    ""
                };
                line(format_args!(
                    "#EXT-X-PART:DURATION={},URI=\"{}\"{independent}",
                    seconds(u64::from(part.duration_ms)),
                    part_uri(segment.msn, index)
                ));
            }
        }
        if segment.complete {
            line(format_args!("#EXTINF:{},", seconds(segment.duration_ms())));
            line(format_args!("{}", segment_uri(segment.msn)));
        }
    }
    if window.ended(now) {
        line(format_args!("#EXT-X-ENDLIST"));
    } else {
        let (msn, index) = window.next_part();
        line(format_args!(
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
            part_uri(msn, index)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::origin::hls::packager::PackagedPart;
    use crate::origin::hls::window::WindowLimits;
    use bytes::Bytes;

    fn add(window: &mut Window, ms: u32, independent: bool, ends: bool, init: bool) {
        window.add(
            PackagedPart {
                fragment: Bytes::from_static(b"x"),
                duration_ms: ms,
                independent,
                ends_segment: ends,
                new_init: init.then(|| Bytes::from_static(b"init")),
            },
            1_796_000_000_000,
        );
    }

    #[test]
    fn resources_round_trip_and_junk_is_refused() {
        for resource in [
            Resource::Playlist,
            Resource::Init(3),
            Resource::Segment(12),
            Resource::Part(12, 3),
        ] {
            let file = match resource {
                Resource::Playlist => "index.m3u8".to_string(),
                Resource::Init(v) => init_uri(v),
                Resource::Segment(m) => segment_uri(m),
                Resource::Part(m, i) => part_uri(m, i),
            };
            assert_eq!(Resource::parse(&file), Some(resource), "{file}");
        }
        for junk in [
            "",
            "index.m3u",
            "seg-.m4s",
            "seg--1.m4s",
            "part-1.m4s",
            "part-1-x.m4s",
            "init-1.m4s",
            "../index.m3u8",
            "seg-99999999999999999999999.m4s",
        ] {
            assert_eq!(Resource::parse(junk), None, "{junk}");
        }
    }

    #[test]
    fn a_live_playlist_lists_parts_of_recent_segments_and_hints_the_next() {
        let mut window = Window::new(WindowLimits::default(), 2, 0);
        for segment in 0..5 {
            add(&mut window, 1000, true, false, segment == 0);
            add(&mut window, 1000, false, true, false);
        }
        add(&mut window, 500, true, false, false);
        let text = render(&window, std::time::Instant::now(), 500, 3);
        let expected_head = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n\
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500,HOLD-BACK=6.000\n\
#EXT-X-PART-INF:PART-TARGET=0.500\n#EXT-X-MEDIA-SEQUENCE:0\n\
#EXT-X-DISCONTINUITY-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n\
#EXT-X-PROGRAM-DATE-TIME:2026-11-30T00:53:19.000Z\n\
#EXT-X-MAP:URI=\"init-0.mp4\"\n#EXTINF:2.000,\nseg-0.m4s\n";
        assert!(text.starts_with(expected_head), "{text}");
        assert!(
            !text.contains("part-1-0"),
            "old parts are not listed: {text}"
        );
        assert!(text.contains(
            "#EXT-X-PART:DURATION=1.000,URI=\"part-2-0.m4s\",INDEPENDENT=YES\n\
#EXT-X-PART:DURATION=1.000,URI=\"part-2-1.m4s\"\n#EXTINF:2.000,\nseg-2.m4s\n"
        ));
        assert!(text.ends_with(
            "#EXT-X-PART:DURATION=0.500,URI=\"part-5-0.m4s\",INDEPENDENT=YES\n\
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-5-1.m4s\"\n"
        ));
    }

    #[test]
    fn a_new_init_is_a_discontinuity_with_its_own_map_and_the_end_is_marked() {
        let mut window = Window::new(WindowLimits::default(), 2, 0);
        add(&mut window, 2000, true, true, true);
        add(&mut window, 2000, true, true, true);
        window.end();
        let text = render(&window, std::time::Instant::now(), 500, 3);
        assert!(text.contains(
            "seg-0.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2026-11-30T00:53:18.000Z\n\
#EXT-X-MAP:URI=\"init-1.mp4\"\n"
        ));
        assert!(text.ends_with("seg-1.m4s\n#EXT-X-ENDLIST\n"), "{text}");
        assert!(!text.contains("PRELOAD-HINT"));
        assert!(text.contains("#EXT-X-INDEPENDENT-SEGMENTS"));

        // A segment cut without a keyframe: the segments are no longer all independent.
        let mut window = Window::new(WindowLimits::default(), 2, 0);
        add(&mut window, 2000, true, true, true);
        add(&mut window, 2000, false, true, false);
        let text = render(&window, std::time::Instant::now(), 500, 3);
        assert!(!text.contains("#EXT-X-INDEPENDENT-SEGMENTS"), "{text}");
    }
}
