//! What a new viewer needs to start at once: the stream's metadata, its codec configuration
//! (AVC and AAC sequence headers) and every tag since the last video keyframe. Pure and bounded.

use rml_rtmp::sessions::StreamMetadata;

use super::flv::{Tag, TagKind};

/// Bounds of one stream's GOP cache. A publisher whose keyframes are too far apart overflows
/// it; the cache then empties until the next keyframe and late viewers wait for that one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    pub max_tags: usize,
    pub max_bytes: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        // 2 s GOPs at 30 fps + AAC are ~160 tags and < 1 MB at 2.5 Mbit/s; leave room for
        // 10 s GOPs at high bitrates.
        Self {
            max_tags: 4096,
            max_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Everything a viewer is sent before live tags, in this order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StartBundle {
    pub metadata: Option<StreamMetadata>,
    /// AVC then AAC sequence header, the ones known.
    pub headers: Vec<Tag>,
    /// From a video keyframe on; empty when no keyframe is cached.
    pub gop: Vec<Tag>,
    /// True when the stream carries video, so a viewer without a GOP must wait for a keyframe.
    pub has_video: bool,
}

#[derive(Debug, Default)]
pub struct GopCache {
    limits: CacheLimits,
    metadata: Option<StreamMetadata>,
    video_header: Option<Tag>,
    audio_header: Option<Tag>,
    gop: Vec<Tag>,
    gop_bytes: usize,
    has_video: bool,
    /// Times the cache overflowed its limits and was emptied.
    overflows: u64,
}

impl GopCache {
    pub fn new(limits: CacheLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    pub fn set_metadata(&mut self, metadata: StreamMetadata) {
        self.metadata = Some(metadata);
    }

    /// Records a tag of the live stream.
    pub fn push(&mut self, tag: &Tag) {
        if tag.kind == TagKind::Video {
            self.has_video = true;
        }
        if tag.is_avc_sequence_header() {
            self.video_header = Some(tag.clone());
            // Frames before a new codec configuration may not decode with it.
            self.clear_gop();
            return;
        }
        if tag.is_aac_sequence_header() {
            self.audio_header = Some(tag.clone());
            return;
        }
        if tag.kind == TagKind::Script {
            return;
        }
        if tag.is_video_keyframe() {
            self.clear_gop();
        } else if self.gop.is_empty() {
            // Nothing decodable to attach this to yet.
            return;
        }
        if self.gop.len() + 1 > self.limits.max_tags
            || self.gop_bytes + tag.data.len() > self.limits.max_bytes
        {
            self.overflows += 1;
            self.clear_gop();
            return;
        }
        self.gop_bytes += tag.data.len();
        self.gop.push(tag.clone());
    }

    /// Forgets everything (the publisher left or was replaced).
    pub fn reset(&mut self) {
        *self = Self::new(self.limits);
    }

    pub fn start_bundle(&self) -> StartBundle {
        StartBundle {
            metadata: self.metadata.clone(),
            headers: self
                .video_header
                .iter()
                .chain(self.audio_header.iter())
                .cloned()
                .collect(),
            gop: self.gop.clone(),
            has_video: self.has_video,
        }
    }

    pub fn overflows(&self) -> u64 {
        self.overflows
    }

    fn clear_gop(&mut self) {
        self.gop.clear();
        self.gop_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn key(ts: u32) -> Tag {
        Tag::video(ts, Bytes::from_static(&[0x17, 1, 0, 0, 0, 0xaa]))
    }
    fn inter(ts: u32) -> Tag {
        Tag::video(ts, Bytes::from_static(&[0x27, 1, 0, 0, 0, 0xbb]))
    }
    fn audio(ts: u32) -> Tag {
        Tag::audio(ts, Bytes::from_static(&[0xaf, 1, 0xcc]))
    }
    fn avc_header() -> Tag {
        Tag::video(0, Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 2]))
    }
    fn aac_header() -> Tag {
        Tag::audio(0, Bytes::from_static(&[0xaf, 0, 0x11, 0x90]))
    }

    #[test]
    fn gop_starts_at_the_last_keyframe() {
        let mut cache = GopCache::new(CacheLimits::default());
        for tag in [aac_header(), avc_header(), audio(0), inter(10), key(33)] {
            cache.push(&tag);
        }
        cache.push(&audio(40));
        cache.push(&inter(66));
        let bundle = cache.start_bundle();
        assert_eq!(bundle.headers, vec![avc_header(), aac_header()]);
        assert_eq!(bundle.gop, vec![key(33), audio(40), inter(66)]);
        assert!(bundle.has_video);

        cache.push(&key(2000));
        cache.push(&audio(2010));
        assert_eq!(cache.start_bundle().gop, vec![key(2000), audio(2010)]);
    }

    #[test]
    fn nothing_is_cached_before_the_first_keyframe() {
        let mut cache = GopCache::new(CacheLimits::default());
        cache.push(&avc_header());
        cache.push(&inter(1));
        cache.push(&audio(2));
        assert!(cache.start_bundle().gop.is_empty());
    }

    #[test]
    fn overflowing_the_bounds_empties_the_gop_until_the_next_keyframe() {
        let mut cache = GopCache::new(CacheLimits {
            max_tags: 3,
            max_bytes: 1 << 20,
        });
        cache.push(&key(0));
        cache.push(&inter(1));
        cache.push(&inter(2));
        cache.push(&inter(3)); // a 4th tag overflows
        assert!(cache.start_bundle().gop.is_empty());
        assert_eq!(cache.overflows(), 1);
        cache.push(&inter(4));
        assert!(cache.start_bundle().gop.is_empty());
        cache.push(&key(5));
        assert_eq!(cache.start_bundle().gop, vec![key(5)]);

        let mut by_bytes = GopCache::new(CacheLimits {
            max_tags: 100,
            max_bytes: 10,
        });
        by_bytes.push(&key(0));
        by_bytes.push(&inter(1));
        assert!(by_bytes.start_bundle().gop.is_empty());
    }

    #[test]
    fn a_new_avc_configuration_drops_the_old_gop() {
        let mut cache = GopCache::new(CacheLimits::default());
        cache.push(&avc_header());
        cache.push(&key(0));
        cache.push(&avc_header());
        assert!(cache.start_bundle().gop.is_empty());
        cache.reset();
        assert_eq!(cache.start_bundle(), StartBundle::default());
    }
}
