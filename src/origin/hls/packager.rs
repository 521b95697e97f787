//! FLV tags → LL-HLS partial segments. Pure: the hub feeds every tag of a stream in order and
//! gets back finished parts, each one fMP4 fragment.
//!
//! - A part is closed before the video frame that would take it past the part target, so no
//!   part is longer than the target while frames come at a steady rate.
//! - A video keyframe always closes the part and the segment: segments are cut on the
//!   encoder's keyframes (every 2 s from the mixer) and every segment starts independent.
//! - A segment without a keyframe for `max_segment_ms` is cut anyway, to bound memory and keep
//!   the target duration honest; its successor is then marked not independent.
//! - Video time is FLV time on a 90 kHz clock. Audio time counts AAC frames (1024 samples),
//!   resynchronised to FLV time when the two drift apart by more than 100 ms (a gap in the
//!   publisher's audio).
//! - A new publisher or new codec configuration ends the segment; the next part carries the
//!   new init segment, so the playlist marks a discontinuity there.

use bytes::Bytes;

use super::fmp4::{
    fragment, init_segment, AudioConfig, Sample, TrackRun, VideoConfig, AAC_FRAME_SAMPLES,
    AUDIO_TRACK, VIDEO_TIMESCALE, VIDEO_TRACK,
};
use crate::origin::flv::{Tag, TagKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackagerSettings {
    /// Longest part (`EXT-X-PART-INF:PART-TARGET`).
    pub part_target_ms: u32,
    /// A segment is cut here even without a keyframe; with one more frame it must still round
    /// to at most the playlist's target duration (2 s), which must never change.
    pub max_segment_ms: u32,
}

impl Default for PackagerSettings {
    fn default() -> Self {
        Self {
            part_target_ms: 500,
            max_segment_ms: 2_300,
        }
    }
}

/// One finished partial segment.
#[derive(Debug, Clone, PartialEq)]
pub struct PackagedPart {
    /// `moof` + `mdat`.
    pub fragment: Bytes,
    pub duration_ms: u32,
    /// Starts with a keyframe: a player may begin here.
    pub independent: bool,
    /// The last part of its segment.
    pub ends_segment: bool,
    /// Set on the first part after a new publisher or codec configuration: the init segment
    /// this part and the following ones need.
    pub new_init: Option<Bytes>,
}

/// Extends 32-bit FLV millisecond timestamps to 64 bits (they wrap after 49.7 days, and may
/// step back a little between audio and video).
#[derive(Debug, Default, Clone, Copy)]
struct Unwrapper {
    last: Option<(u32, i64)>,
}

impl Unwrapper {
    fn extend(&mut self, ts: u32) -> i64 {
        let extended = match self.last {
            None => i64::from(ts),
            Some((raw, extended)) => extended + i64::from(ts.wrapping_sub(raw) as i32),
        };
        self.last = Some((ts, extended));
        extended
    }
}

/// Most AAC frames in one part: 6 s at 48 kHz, beyond any part the video closes in time.
const MAX_AUDIO_FRAMES_PER_PART: usize = 288;
/// Most video frames in one part (10 s at 30 fps): timestamps that stop advancing must not
/// grow a part without bound.
const MAX_VIDEO_FRAMES_PER_PART: usize = 300;
/// A step of the video clock backwards, or forwards by more than this, is a new timeline.
const MAX_VIDEO_STEP_MS: i64 = 5_000;

/// A video frame waiting for the next one, which gives its duration.
#[derive(Debug, Clone)]
struct PendingFrame {
    dts_ms: i64,
    composition_ms: i32,
    sync: bool,
    data: Bytes,
}

#[derive(Debug, Default)]
struct OpenPart {
    start_ms: i64,
    independent: bool,
    video: Vec<Sample>,
    video_base: u64,
    audio: Vec<Sample>,
    audio_base: u64,
}

pub struct Packager {
    settings: PackagerSettings,
    video: Option<VideoConfig>,
    audio: Option<AudioConfig>,
    width: u16,
    height: u16,
    /// The next part begins a new init segment (new publisher or configuration).
    init_changed: bool,
    clock: Unwrapper,
    pending: Option<PendingFrame>,
    last_video_interval_ms: i64,
    part: Option<OpenPart>,
    /// Start of the open segment; `None` between segments.
    segment_start_ms: Option<i64>,
    /// Nothing decodable yet since the last restart or new configuration.
    awaiting_keyframe: bool,
    /// Decode time of the next AAC frame, in samples.
    audio_next: Option<u64>,
    fragments: u32,
}

impl Packager {
    pub fn new(settings: PackagerSettings) -> Self {
        Self {
            settings,
            video: None,
            audio: None,
            width: 0,
            height: 0,
            init_changed: true,
            clock: Unwrapper::default(),
            pending: None,
            last_video_interval_ms: 33,
            part: None,
            segment_start_ms: None,
            awaiting_keyframe: true,
            audio_next: None,
            fragments: 0,
        }
    }

    pub fn settings(&self) -> PackagerSettings {
        self.settings
    }

    /// Picture size from the publisher's metadata (the init segment's track header).
    pub fn set_dimensions(&mut self, width: u16, height: u16) {
        self.width = width;
        self.height = height;
    }

    /// A new publisher: whatever is open is finished, and what follows is a discontinuity.
    pub fn restart(&mut self) -> Option<PackagedPart> {
        let last = self.flush();
        self.video = None;
        self.audio = None;
        self.init_changed = true;
        self.awaiting_keyframe = true;
        self.clock = Unwrapper::default();
        self.audio_next = None;
        last
    }

    /// Finishes the open part as the end of its segment (the publisher left).
    pub fn flush(&mut self) -> Option<PackagedPart> {
        if let Some(frame) = self.pending.take() {
            let duration = self.last_video_interval_ms.max(1);
            if let Some(part) = self.part.as_mut() {
                part.video.push(video_sample(frame, duration));
            }
        }
        let end = self.part.as_ref().map(|part| {
            part.start_ms
                + part
                    .video
                    .iter()
                    .map(|s| i64::from(s.duration) * 1000 / i64::from(VIDEO_TIMESCALE))
                    .sum::<i64>()
        })?;
        self.close_part(end, true)
    }

    /// Takes one tag (after the hub's timestamp rebase); returns the part it finished, if any.
    pub fn push(&mut self, tag: &Tag) -> Option<PackagedPart> {
        match tag.kind {
            TagKind::Script => None,
            TagKind::Video if tag.is_avc_sequence_header() => {
                let config = tag
                    .data
                    .get(5..)
                    .and_then(|r| VideoConfig::from_record(r, self.width, self.height).ok());
                self.configure(config, None)
            }
            TagKind::Audio if tag.is_aac_sequence_header() => {
                let config = tag
                    .data
                    .get(2..)
                    .and_then(|a| AudioConfig::from_asc(a).ok());
                self.configure(None, config)
            }
            TagKind::Video => self.push_video(tag),
            TagKind::Audio => {
                self.push_audio(tag);
                None
            }
        }
    }

    fn configure(
        &mut self,
        video: Option<VideoConfig>,
        audio: Option<AudioConfig>,
    ) -> Option<PackagedPart> {
        let video_changed = video.is_some() && video != self.video;
        let audio_changed = audio.is_some() && audio != self.audio;
        if !video_changed && !audio_changed {
            return None;
        }
        let last = self.flush();
        if video_changed {
            self.video = video;
        }
        if audio_changed {
            self.audio = audio;
            self.audio_next = None;
        }
        self.init_changed = true;
        // A new configuration is only decodable from its first keyframe on.
        self.awaiting_keyframe = true;
        last
    }

    fn push_video(&mut self, tag: &Tag) -> Option<PackagedPart> {
        // [frame type | codec] [AVC packet type] [composition time, SI24] NAL units…
        let data = &tag.data;
        if self.video.is_none() || data.len() <= 5 || data[1] != 1 {
            return None;
        }
        let composition_ms = (i32::from_be_bytes([0, data[2], data[3], data[4]]) << 8) >> 8;
        let frame = PendingFrame {
            dts_ms: self.clock.extend(tag.timestamp),
            composition_ms,
            sync: tag.is_video_keyframe(),
            data: data.slice(5..),
        };
        let mut finished = None;
        let jumped = self.pending.as_ref().is_some_and(|previous| {
            let step = frame.dts_ms - previous.dts_ms;
            !(0..=MAX_VIDEO_STEP_MS).contains(&step)
        });
        if jumped {
            // The publisher's clock jumped: end the segment here and start a new timeline
            // (after a discontinuity) from the next keyframe, rather than write decode times
            // that go backwards or a part that spans the gap.
            finished = self.flush();
            self.init_changed = true;
            self.awaiting_keyframe = true;
            self.audio_next = None;
        }
        if let Some(previous) = self.pending.take() {
            let interval = (frame.dts_ms - previous.dts_ms).max(1);
            self.last_video_interval_ms = interval;
            if let Some(part) = self.part.as_mut() {
                part.video.push(video_sample(previous, interval));
            }
            finished = self.maybe_close_before(&frame, interval);
        }
        if self.part.is_none() {
            if self.awaiting_keyframe && !frame.sync {
                return finished;
            }
            self.awaiting_keyframe = false;
            self.open_part(&frame);
        }
        self.pending = Some(frame);
        finished
    }

    fn maybe_close_before(&mut self, frame: &PendingFrame, interval: i64) -> Option<PackagedPart> {
        let part = self.part.as_ref()?;
        let in_part = frame.dts_ms - part.start_ms;
        let in_segment = frame.dts_ms - self.segment_start_ms.unwrap_or(part.start_ms);
        let part_full = part.video.len() >= MAX_VIDEO_FRAMES_PER_PART;
        if frame.sync || part_full || in_segment >= i64::from(self.settings.max_segment_ms) {
            self.close_part(frame.dts_ms, true)
        } else if in_part + interval > i64::from(self.settings.part_target_ms) {
            self.close_part(frame.dts_ms, false)
        } else {
            None
        }
    }

    fn open_part(&mut self, frame: &PendingFrame) {
        self.segment_start_ms.get_or_insert(frame.dts_ms);
        let video_base = u64::try_from(frame.dts_ms)
            .unwrap_or(0)
            .saturating_mul(u64::from(VIDEO_TIMESCALE / 1000));
        self.part = Some(OpenPart {
            start_ms: frame.dts_ms,
            independent: frame.sync,
            video_base,
            ..OpenPart::default()
        });
    }

    fn push_audio(&mut self, tag: &Tag) {
        let (Some(config), Some(part)) = (self.audio.as_ref(), self.part.as_mut()) else {
            // Audio before the first keyframe has nothing to go with.
            return;
        };
        let Some(frame) = tag.data.get(2..).filter(|_| tag.data.get(1) == Some(&1)) else {
            return;
        };
        let rate = u64::from(config.sample_rate);
        let ts = u64::try_from(self.clock.extend(tag.timestamp)).unwrap_or(0);
        let at_ts = u64::try_from(u128::from(ts) * u128::from(rate) / 1000).unwrap_or(u64::MAX);
        let decode_time = match self.audio_next {
            // More than 100 ms apart: resynchronise to the publisher's clock.
            Some(next) if next.abs_diff(at_ts) <= rate / 10 => next,
            _ => at_ts,
        };
        if part.audio.len() >= MAX_AUDIO_FRAMES_PER_PART {
            // Parts are closed by video frames; audio alone (a stalled picture) must not grow
            // one without bound. It resumes with the next part.
            self.audio_next = None;
            return;
        }
        if part.audio.is_empty() {
            part.audio_base = decode_time;
        } else if decode_time
            != part
                .audio_base
                .saturating_add(part.audio.len() as u64 * u64::from(AAC_FRAME_SAMPLES))
        {
            // A resync inside a part: a run has one base, so it starts in the next part.
            self.audio_next = None;
            return;
        }
        part.audio.push(Sample {
            data: tag.data.slice(2..2 + frame.len()),
            duration: AAC_FRAME_SAMPLES,
            composition_offset: 0,
            sync: true,
        });
        self.audio_next = Some(decode_time.saturating_add(u64::from(AAC_FRAME_SAMPLES)));
    }

    fn close_part(&mut self, end_ms: i64, ends_segment: bool) -> Option<PackagedPart> {
        let part = self.part.take()?;
        if ends_segment {
            self.segment_start_ms = None;
        }
        if part.video.is_empty() && part.audio.is_empty() {
            return None;
        }
        self.fragments = self.fragments.wrapping_add(1);
        let fragment = fragment(
            self.fragments,
            &[
                TrackRun {
                    track_id: VIDEO_TRACK,
                    base_decode_time: part.video_base,
                    samples: part.video,
                },
                TrackRun {
                    track_id: AUDIO_TRACK,
                    base_decode_time: part.audio_base,
                    samples: part.audio,
                },
            ],
        );
        let new_init = std::mem::take(&mut self.init_changed)
            .then(|| init_segment(self.video.as_ref(), self.audio.as_ref()));
        Some(PackagedPart {
            fragment,
            duration_ms: u32::try_from(end_ms - part.start_ms).unwrap_or(0),
            independent: part.independent,
            ends_segment,
            new_init,
        })
    }
}

fn video_sample(frame: PendingFrame, duration_ms: i64) -> Sample {
    let ticks_per_ms = i64::from(VIDEO_TIMESCALE / 1000);
    Sample {
        data: frame.data,
        duration: u32::try_from(duration_ms.saturating_mul(ticks_per_ms)).unwrap_or(u32::MAX),
        composition_offset: frame.composition_ms.saturating_mul(ticks_per_ms as i32),
        sync: frame.sync,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::origin::hls::fmp4::tests::{ASC, RECORD};
    use mp4_atom::{Any, Decode};

    fn avc_header() -> Tag {
        let mut data = vec![0x17, 0, 0, 0, 0];
        data.extend_from_slice(RECORD);
        Tag::video(0, Bytes::from(data))
    }

    fn aac_header() -> Tag {
        let mut data = vec![0xaf, 0];
        data.extend_from_slice(ASC);
        Tag::audio(0, Bytes::from(data))
    }

    fn frame(ts: u32, key: bool) -> Tag {
        let first = if key { 0x17 } else { 0x27 };
        Tag::video(ts, Bytes::from(vec![first, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]))
    }

    fn aac(ts: u32) -> Tag {
        Tag::audio(ts, Bytes::from_static(&[0xaf, 1, 0x21, 0x10]))
    }

    /// `seconds` of 30 fps video with a keyframe every 2 s and 48 kHz AAC, from `start_ms`.
    fn stream(start_ms: u32, seconds: u32) -> Vec<Tag> {
        let mut tags = Vec::new();
        let frames = seconds * 30;
        let mut audio_n = 0u32;
        for n in 0..frames {
            let ts = start_ms + n * 1000 / 30;
            while start_ms + audio_n * 64 / 3 <= ts {
                tags.push(aac(start_ms + audio_n * 64 / 3));
                audio_n += 1;
            }
            tags.push(frame(ts, n % 60 == 0));
        }
        tags
    }

    fn run(packager: &mut Packager, tags: &[Tag]) -> Vec<PackagedPart> {
        tags.iter().filter_map(|t| packager.push(t)).collect()
    }

    fn decode_times(part: &PackagedPart) -> Vec<(u32, u64, usize)> {
        let Any::Moof(moof) = Any::decode(&mut &part.fragment[..]).unwrap() else {
            panic!("a part starts with a moof")
        };
        moof.traf
            .iter()
            .map(|t| {
                (
                    t.tfhd.track_id,
                    t.tfdt.as_ref().unwrap().base_media_decode_time,
                    t.trun[0].samples.len(),
                )
            })
            .collect()
    }

    #[test]
    fn parts_stay_under_the_target_and_segments_start_on_keyframes() {
        let mut packager = Packager::new(PackagerSettings::default());
        packager.set_dimensions(1280, 720);
        let mut tags = vec![avc_header(), aac_header()];
        tags.extend(stream(1000, 6));
        let parts = run(&mut packager, &tags);
        assert!(
            parts[0].new_init.is_some(),
            "the first part carries the init"
        );
        assert!(parts[1..].iter().all(|p| p.new_init.is_none()));
        for part in &parts {
            assert!(part.duration_ms <= 500, "{}", part.duration_ms);
        }
        let segments: Vec<Vec<&PackagedPart>> = parts
            .split_inclusive(|p| p.ends_segment)
            .map(|s| s.iter().collect())
            .collect();
        // Two finished segments; the third waits for the keyframe at 7 s.
        assert_eq!(
            segments
                .iter()
                .filter(|s| s.last().unwrap().ends_segment)
                .count(),
            2
        );
        for segment in &segments[..2] {
            assert!(segment[0].independent);
            assert!(segment[1..].iter().all(|p| !p.independent));
            let ms: u32 = segment.iter().map(|p| p.duration_ms).sum();
            assert!((1990..=2010).contains(&ms), "segment of {ms} ms");
        }
    }

    #[test]
    fn decode_times_run_on_without_gaps_in_both_tracks() {
        let mut packager = Packager::new(PackagerSettings::default());
        let mut tags = vec![avc_header(), aac_header()];
        tags.extend(stream(0, 5));
        let parts = run(&mut packager, &tags);
        let mut next_video = None;
        let mut next_audio = None;
        for part in &parts {
            for (track, base, samples) in decode_times(part) {
                if track == VIDEO_TRACK {
                    if let Some(next) = next_video {
                        // FLV's whole milliseconds: a frame is 33 or 34 ms.
                        assert!(base.abs_diff(next) <= 90, "video {base} after {next}");
                    }
                    next_video = Some(base + u64::from(part.duration_ms) * 90);
                    assert!(samples > 0);
                } else {
                    if let Some(next) = next_audio {
                        assert_eq!(base, next, "audio must be gapless");
                    }
                    next_audio = Some(base + samples as u64 * 1024);
                }
            }
        }
        assert!(next_audio.unwrap() > 4 * 48_000, "audio went along");
    }

    #[test]
    fn nothing_is_cut_before_the_first_keyframe_or_without_configuration() {
        let mut packager = Packager::new(PackagerSettings::default());
        assert!(
            run(&mut packager, &stream(0, 3)).is_empty(),
            "no configuration"
        );
        let mut packager = Packager::new(PackagerSettings::default());
        let mut tags = vec![avc_header(), aac_header()];
        // Starts 1 s into a GOP: the first part begins at the keyframe at 2 s.
        tags.extend(stream(0, 5).into_iter().filter(|t| t.timestamp >= 1000));
        let parts = run(&mut packager, &tags);
        let (_, first_video, _) = decode_times(&parts[0])[0];
        assert_eq!(first_video, 2000 * 90);
        assert!(parts[0].independent);
    }

    #[test]
    fn a_new_publisher_ends_the_segment_and_brings_a_new_init() {
        let mut packager = Packager::new(PackagerSettings::default());
        let mut tags = vec![avc_header(), aac_header()];
        tags.extend(stream(0, 3));
        let before = run(&mut packager, &tags);
        let last = packager.restart().expect("the open part is finished");
        assert!(last.ends_segment);
        let mut tags = vec![avc_header(), aac_header()];
        tags.extend(stream(3000, 3));
        let after = run(&mut packager, &tags);
        assert!(after[0].new_init.is_some() && after[0].independent);
        assert!(before.len() > 4 && after.len() > 4);
    }

    #[test]
    fn a_segment_without_keyframes_is_cut_at_the_maximum() {
        let settings = PackagerSettings {
            part_target_ms: 500,
            max_segment_ms: 3000,
        };
        let mut packager = Packager::new(settings);
        let mut tags = vec![avc_header()];
        tags.extend((0..300u32).map(|n| frame(n * 40, n == 0)));
        let parts = run(&mut packager, &tags);
        let ends: Vec<usize> = (0..parts.len())
            .filter(|&i| parts[i].ends_segment)
            .collect();
        assert!(ends.len() >= 3, "{ends:?}");
        assert!(!parts[ends[0] + 1].independent, "cut without a keyframe");
        let first: u32 = parts[..=ends[0]].iter().map(|p| p.duration_ms).sum();
        assert!((2900..=3100).contains(&first), "{first}");
    }

    #[test]
    fn audio_without_video_does_not_grow_a_part_without_bound() {
        let mut packager = Packager::new(PackagerSettings::default());
        let mut tags = vec![avc_header(), aac_header(), frame(0, true)];
        tags.extend((0..5_000u32).map(|n| aac(n * 64 / 3)));
        assert!(run(&mut packager, &tags).is_empty());
        let part = packager.flush().expect("the open part");
        let audio = decode_times(&part)
            .into_iter()
            .find(|(track, _, _)| *track == AUDIO_TRACK)
            .map(|(_, _, samples)| samples);
        assert_eq!(audio, Some(MAX_AUDIO_FRAMES_PER_PART));
    }

    #[test]
    fn a_clock_jump_ends_the_segment_and_starts_a_new_timeline() {
        let mut packager = Packager::new(PackagerSettings::default());
        let mut tags = vec![avc_header(), aac_header()];
        tags.extend(stream(0, 3));
        let before = run(&mut packager, &tags);
        let after = run(&mut packager, &stream(100_000, 3));
        let first_after = after
            .iter()
            .position(|p| p.new_init.is_some())
            .expect("new init");
        assert!(
            after[..first_after].iter().any(|p| p.ends_segment),
            "the jump ended it"
        );
        assert!(after[first_after].independent);
        let (_, base, _) = decode_times(&after[first_after])[0];
        assert_eq!(base, 100_000 * 90);
        assert!(before.iter().all(|p| p.duration_ms <= 500));
        assert!(
            after.iter().all(|p| p.duration_ms <= 500),
            "no part spans the gap"
        );
    }

    #[test]
    fn frames_whose_time_stands_still_do_not_grow_a_part_without_bound() {
        let mut packager = Packager::new(PackagerSettings::default());
        let mut tags = vec![avc_header(), frame(0, true)];
        tags.extend((0..1000).map(|_| frame(40, false)));
        let parts = run(&mut packager, &tags);
        assert!(parts.len() >= 3, "{}", parts.len());
        for part in &parts {
            let (_, _, samples) = decode_times(part)[0];
            assert!(samples <= MAX_VIDEO_FRAMES_PER_PART, "{samples}");
        }
    }

    #[test]
    fn hostile_payloads_are_skipped_without_panics() {
        let mut packager = Packager::new(PackagerSettings::default());
        let junk = [
            Tag::video(0, Bytes::from_static(&[0x17, 0])),
            Tag::video(0, Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 2])),
            Tag::audio(0, Bytes::from_static(&[0xaf, 0])),
            Tag::audio(0, Bytes::from_static(&[0xaf, 0, 0xff, 0xff])),
            Tag::video(5, Bytes::from_static(&[0x17])),
            Tag::audio(5, Bytes::from_static(&[0xaf])),
            Tag::video(
                u32::MAX,
                Bytes::from_static(&[0x17, 1, 0xff, 0xff, 0xff, 9]),
            ),
        ];
        assert!(run(&mut packager, &junk).is_empty());
        let mut tags = vec![avc_header(), aac_header()];
        tags.extend(junk.iter().cloned());
        tags.extend(stream(0, 3));
        assert!(!run(&mut packager, &tags).is_empty());
    }
}
