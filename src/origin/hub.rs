//! The origin's streams: which may be published (with which key), who publishes each now, the
//! GOP cache, and fan-out to viewers. No sockets: publishers push tags in, viewers get a
//! [`Subscription`]. Each viewer has a bounded queue; a viewer whose queue is full misses
//! tags until the next keyframe (so it stays decodable), and the drops are counted. The
//! publisher never waits for a viewer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rml_rtmp::sessions::StreamMetadata;
use tokio::sync::mpsc;

use super::flv::{metadata_script, Tag, TagKind};
use super::gop::{CacheLimits, GopCache, StartBundle};
use super::hls::packager::{PackagedPart, Packager};
use super::hls::{HlsSettings, HlsStream};
use super::key::PublishKey;

/// Identifies one publishing connection, so a replaced publisher's late tags are refused.
pub type PublisherId = u64;

#[derive(Debug, Clone, Copy)]
pub struct HubLimits {
    pub cache: CacheLimits,
    /// Tags queued per viewer before it starts missing some.
    pub viewer_queue: usize,
    /// Most viewers of one stream.
    pub max_viewers: usize,
    /// HLS packaging of every stream (viewers of HLS are not counted above: they hold no
    /// queue, only requests).
    pub hls: HlsSettings,
}

impl Default for HubLimits {
    fn default() -> Self {
        Self {
            cache: CacheLimits::default(),
            // ~8 s of 30 fps video + AAC: a player's read stall of a few seconds costs nothing.
            viewer_queue: 512,
            max_viewers: 1000,
            hls: HlsSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PublishRefused {
    #[error("no such stream is registered")]
    UnknownStream,
    #[error("wrong or missing publish key")]
    BadKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeRefused {
    #[error("no such stream")]
    UnknownStream,
    #[error("the stream is not live")]
    NotLive,
    #[error("the stream has too many viewers")]
    TooManyViewers,
}

/// The publisher was replaced or the stream unregistered: stop sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no longer the publisher of this stream")]
pub struct NotPublisher;

/// What a new viewer gets: the start bundle, then live tags.
#[derive(Debug)]
pub struct Subscription {
    pub start: StartBundle,
    /// Ends (returns `None`) when the stream is unregistered.
    pub live: mpsc::Receiver<Tag>,
}

/// Counters of one stream, for the API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StreamStats {
    /// A publisher is connected.
    pub live: bool,
    pub viewers: usize,
    /// Tags not delivered to some viewer because its queue was full.
    pub dropped_tags: u64,
    /// Times the GOP cache overflowed its bounds.
    pub gop_overflows: u64,
}

struct Viewer {
    queue: mpsc::Sender<Tag>,
    /// Skip everything until a video keyframe (after a drop, or when joining without a GOP).
    waiting_for_keyframe: bool,
    /// Stream time (ms) of the first tag this viewer's full queue refused, while it stays full.
    stalled_since: Option<u32>,
}

/// A viewer whose queue stays full for this much stream time has stopped reading (a stalled
/// HTTP-FLV or RTMP player): it is dropped, so it holds no connection, queue or task forever.
const STALLED_VIEWER_MS: u32 = 5_000;

struct Stream {
    key: PublishKey,
    publisher: Option<PublisherId>,
    cache: GopCache,
    viewers: Vec<Viewer>,
    dropped_tags: u64,
    /// Added to the publisher's timestamps, so a viewer that stays through a republish (an
    /// output reconnecting, stop and go live again) sees time go on instead of jumping back.
    timestamp_offset: u32,
    /// The next media tag sets `timestamp_offset` (a new publisher starts its clock anew).
    rebase_next: bool,
    /// Latest timestamp handed out, after the offset (none before the first publisher).
    last_timestamp: Option<u32>,
    hls: Option<HlsPackaging>,
}

/// A stream's HLS: the packager runs under the hub's lock, in publish order; the window is
/// shared with HTTP requests.
struct HlsPackaging {
    packager: Packager,
    stream: Arc<HlsStream>,
}

impl HlsPackaging {
    fn store(&self, part: Option<PackagedPart>) {
        if let Some(part) = part {
            self.stream.add(part);
        }
    }

    fn push(&mut self, tag: &Tag) {
        let part = self.packager.push(tag);
        self.store(part);
    }

    /// The publisher left: the segment so far is complete, a player gets everything sent.
    fn publisher_left(&mut self) {
        let last = self.packager.flush();
        self.store(last);
        self.stream.publisher_left();
    }

    /// A publisher came (or took over): what the last one left open is finished first.
    fn publisher_joined(&mut self) {
        let last = self.packager.restart();
        self.store(last);
        self.stream.publisher_joined();
    }
}

impl Drop for HlsPackaging {
    fn drop(&mut self) {
        // Unregistered (or replaced): the playlist ends, and blocked requests answer now.
        let last = self.packager.flush();
        self.store(last);
        self.stream.end();
    }
}

fn authorize(stream: &Stream, key: Option<&str>) -> Result<(), PublishRefused> {
    if key.is_some_and(|k| stream.key.matches(k)) {
        Ok(())
    } else {
        Err(PublishRefused::BadKey)
    }
}

pub struct Hub {
    streams: Mutex<HashMap<String, Stream>>,
    limits: HubLimits,
    next_publisher: std::sync::atomic::AtomicU64,
}

impl Hub {
    pub fn new(limits: HubLimits) -> Self {
        Self {
            streams: Mutex::new(HashMap::new()),
            limits,
            next_publisher: 1.into(),
        }
    }

    fn streams(&self) -> std::sync::MutexGuard<'_, HashMap<String, Stream>> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Allows `name` to be published with `key` (replacing an earlier registration).
    pub fn register(&self, name: &str, key: PublishKey) {
        let stream = Stream {
            key,
            publisher: None,
            cache: GopCache::new(self.limits.cache),
            viewers: Vec::new(),
            dropped_tags: 0,
            timestamp_offset: 0,
            rebase_next: false,
            last_timestamp: None,
            hls: self.limits.hls.enabled.then(|| HlsPackaging {
                packager: Packager::new(self.limits.hls.packager),
                stream: Arc::new(HlsStream::new(self.limits.hls)),
            }),
        };
        self.streams().insert(name.to_string(), stream);
    }

    /// Forgets `name`: its publisher is refused from now on and its viewers' streams end.
    pub fn unregister(&self, name: &str) -> bool {
        self.streams().remove(name).is_some()
    }

    pub fn unregister_all(&self) {
        self.streams().clear();
    }

    /// Whether `key` may publish `name`, without taking the stream.
    pub fn check_publish_key(&self, name: &str, key: Option<&str>) -> Result<(), PublishRefused> {
        let streams = self.streams();
        let stream = streams.get(name).ok_or(PublishRefused::UnknownStream)?;
        authorize(stream, key)
    }

    /// A publisher with the right key takes the stream over (an output reconnecting must not
    /// be locked out by its own half-dead previous connection).
    pub fn start_publish(
        &self,
        name: &str,
        key: Option<&str>,
    ) -> Result<PublisherId, PublishRefused> {
        let mut streams = self.streams();
        let stream = streams.get_mut(name).ok_or(PublishRefused::UnknownStream)?;
        authorize(stream, key)?;
        let id = self
            .next_publisher
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        stream.publisher = Some(id);
        stream.cache.reset();
        stream.rebase_next = true;
        if let Some(hls) = stream.hls.as_mut() {
            hls.publisher_joined();
        }
        for viewer in &mut stream.viewers {
            // The new publisher's first frames may refer to nothing the viewer has.
            viewer.waiting_for_keyframe = true;
        }
        Ok(id)
    }

    pub fn stop_publish(&self, name: &str, id: PublisherId) {
        if let Some(stream) = self.streams().get_mut(name) {
            if stream.publisher == Some(id) {
                stream.publisher = None;
                stream.cache.reset();
                if let Some(hls) = stream.hls.as_mut() {
                    hls.publisher_left();
                }
            }
        }
    }

    pub fn set_metadata(
        &self,
        name: &str,
        id: PublisherId,
        metadata: StreamMetadata,
    ) -> Result<(), NotPublisher> {
        let script = Tag {
            kind: TagKind::Script,
            timestamp: 0,
            data: metadata_script(&metadata),
        };
        let mut streams = self.streams();
        let stream = current(&mut streams, name, id)?;
        if let Some(hls) = stream.hls.as_mut() {
            let dimension = |v: Option<u32>| v.and_then(|v| u16::try_from(v).ok()).unwrap_or(0);
            hls.packager.set_dimensions(
                dimension(metadata.video_width),
                dimension(metadata.video_height),
            );
        }
        stream.cache.set_metadata(metadata);
        stream.fan_out(&script);
        Ok(())
    }

    /// A tag from the publisher: cache it and offer it to every viewer without waiting.
    pub fn publish(&self, name: &str, id: PublisherId, mut tag: Tag) -> Result<(), NotPublisher> {
        let mut streams = self.streams();
        let stream = current(&mut streams, name, id)?;
        if !tag.is_sequence_header() {
            if stream.rebase_next {
                stream.rebase_next = false;
                stream.timestamp_offset = match stream.last_timestamp {
                    Some(last) => last.wrapping_add(1).wrapping_sub(tag.timestamp),
                    None => 0,
                };
            }
            tag.timestamp = tag.timestamp.wrapping_add(stream.timestamp_offset);
            stream.last_timestamp = Some(tag.timestamp);
        }
        stream.cache.push(&tag);
        stream.fan_out(&tag);
        if let Some(hls) = stream.hls.as_mut() {
            hls.push(&tag);
        }
        Ok(())
    }

    /// The HLS side of a registered stream (none when HLS is off).
    pub fn hls(&self, name: &str) -> Option<Arc<HlsStream>> {
        let streams = self.streams();
        Some(streams.get(name)?.hls.as_ref()?.stream.clone())
    }

    pub fn subscribe(&self, name: &str) -> Result<Subscription, SubscribeRefused> {
        let mut streams = self.streams();
        let stream = streams
            .get_mut(name)
            .ok_or(SubscribeRefused::UnknownStream)?;
        if stream.publisher.is_none() {
            return Err(SubscribeRefused::NotLive);
        }
        stream.viewers.retain(|v| !v.queue.is_closed());
        if stream.viewers.len() >= self.limits.max_viewers {
            return Err(SubscribeRefused::TooManyViewers);
        }
        // Under the lock: the bundle and the first live tag join without a gap or a repeat.
        let start = stream.cache.start_bundle();
        let (queue, live) = mpsc::channel(self.limits.viewer_queue.max(1));
        stream.viewers.push(Viewer {
            queue,
            waiting_for_keyframe: start.gop.is_empty() && start.has_video,
            stalled_since: None,
        });
        Ok(Subscription { start, live })
    }

    pub fn stats(&self, name: &str) -> Option<StreamStats> {
        let mut streams = self.streams();
        let stream = streams.get_mut(name)?;
        stream.viewers.retain(|v| !v.queue.is_closed());
        Some(StreamStats {
            live: stream.publisher.is_some(),
            viewers: stream.viewers.len(),
            dropped_tags: stream.dropped_tags,
            gop_overflows: stream.cache.overflows(),
        })
    }
}

fn current<'a>(
    streams: &'a mut HashMap<String, Stream>,
    name: &str,
    id: PublisherId,
) -> Result<&'a mut Stream, NotPublisher> {
    streams
        .get_mut(name)
        .filter(|s| s.publisher == Some(id))
        .ok_or(NotPublisher)
}

impl Stream {
    fn fan_out(&mut self, tag: &Tag) {
        let mut dropped = 0;
        // Stream time comes from media tags (metadata and sequence headers carry 0).
        let media = !(tag.kind == TagKind::Script || tag.is_sequence_header());
        self.viewers.retain_mut(|viewer| {
            if media {
                if viewer.queue.capacity() == 0 {
                    let since = *viewer.stalled_since.get_or_insert(tag.timestamp);
                    // Signed: a tag a little earlier than `since` (audio/video interleaving, a
                    // republish's rebase) is no stall at all, not four billion ms of one.
                    let stalled_ms = tag.timestamp.wrapping_sub(since) as i32;
                    if stalled_ms >= STALLED_VIEWER_MS as i32 {
                        // Dropping the sender ends the viewer's stream (its connection closes).
                        return false;
                    }
                } else {
                    viewer.stalled_since = None;
                }
            }
            if viewer.waiting_for_keyframe {
                // Codec configuration and metadata always pass: the keyframe needs them.
                let passes = tag.is_video_keyframe()
                    || tag.is_sequence_header()
                    || tag.kind == TagKind::Script;
                if !passes {
                    dropped += 1;
                    return true;
                }
            }
            match viewer.queue.try_send(tag.clone()) {
                Ok(()) => {
                    if tag.is_video_keyframe() {
                        viewer.waiting_for_keyframe = false;
                    }
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    dropped += 1;
                    viewer.waiting_for_keyframe = true;
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        self.dropped_tags += dropped;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn key_frame(ts: u32) -> Tag {
        Tag::video(ts, Bytes::from_static(&[0x17, 1, 0, 0, 0]))
    }
    fn inter(ts: u32) -> Tag {
        Tag::video(ts, Bytes::from_static(&[0x27, 1, 0, 0, 0]))
    }

    fn hub(queue: usize) -> (Hub, PublishKey) {
        let hub = Hub::new(HubLimits {
            viewer_queue: queue,
            ..HubLimits::default()
        });
        let key = PublishKey::generate();
        hub.register("room", key.clone());
        (hub, key)
    }

    #[test]
    fn only_registered_streams_with_the_right_key_publish() {
        let (hub, key) = hub(8);
        assert_eq!(
            hub.start_publish("other", Some(key.expose())),
            Err(PublishRefused::UnknownStream)
        );
        assert_eq!(hub.start_publish("room", None), Err(PublishRefused::BadKey));
        assert_eq!(
            hub.start_publish("room", Some("wrong")),
            Err(PublishRefused::BadKey)
        );
        assert_eq!(
            hub.subscribe("room").unwrap_err(),
            SubscribeRefused::NotLive
        );
        let first = hub.start_publish("room", Some(key.expose())).unwrap();
        let second = hub.start_publish("room", Some(key.expose())).unwrap();
        assert_eq!(hub.publish("room", first, key_frame(0)), Err(NotPublisher));
        assert_eq!(hub.publish("room", second, key_frame(0)), Ok(()));
        assert!(hub.unregister("room"));
        assert_eq!(hub.publish("room", second, key_frame(1)), Err(NotPublisher));
        assert_eq!(
            hub.subscribe("room").unwrap_err(),
            SubscribeRefused::UnknownStream
        );
    }

    #[test]
    fn a_late_viewer_starts_with_the_cached_gop_then_live_tags() {
        let (hub, key) = hub(8);
        let id = hub.start_publish("room", Some(key.expose())).unwrap();
        hub.publish("room", id, inter(0)).unwrap();
        hub.publish("room", id, key_frame(33)).unwrap();
        hub.publish("room", id, inter(66)).unwrap();
        let mut sub = hub.subscribe("room").unwrap();
        assert_eq!(sub.start.gop, vec![key_frame(33), inter(66)]);
        hub.publish("room", id, inter(99)).unwrap();
        assert_eq!(sub.live.try_recv().unwrap(), inter(99));
        assert!(sub.live.try_recv().is_err());
        hub.unregister("room");
        assert!(sub
            .live
            .try_recv()
            .is_err_and(|e| e == mpsc::error::TryRecvError::Disconnected));
    }

    #[test]
    fn a_viewer_that_stops_reading_is_dropped_after_five_seconds_of_stream() {
        let (hub, key) = hub(2);
        let id = hub.start_publish("room", Some(key.expose())).unwrap();
        hub.publish("room", id, key_frame(0)).unwrap();
        let stalled = hub.subscribe("room").unwrap();
        let mut reading = hub.subscribe("room").unwrap();
        // 40 ms frames; the stalled viewer's queue (2) is full from the third on.
        for n in 1..=140u32 {
            let tag = if n % 50 == 0 {
                key_frame(n * 40)
            } else {
                inter(n * 40)
            };
            hub.publish("room", id, tag).unwrap();
            while reading.live.try_recv().is_ok() {}
            let viewers = hub.stats("room").unwrap().viewers;
            if n * 40 < 120 + STALLED_VIEWER_MS {
                assert_eq!(viewers, 2, "dropped early, at {} ms", n * 40);
            }
        }
        assert_eq!(
            hub.stats("room").unwrap().viewers,
            1,
            "the stalled viewer is still there"
        );
        drop(stalled);
    }

    #[test]
    fn a_slow_viewer_misses_tags_until_a_keyframe_and_never_blocks_others() {
        let (hub, key) = hub(2);
        let id = hub.start_publish("room", Some(key.expose())).unwrap();
        hub.publish("room", id, key_frame(0)).unwrap();
        let mut slow = hub.subscribe("room").unwrap();
        let mut fast = hub.subscribe("room").unwrap();
        for ts in 1..=4 {
            hub.publish("room", id, inter(ts)).unwrap();
            assert_eq!(fast.live.try_recv().unwrap(), inter(ts));
        }
        // slow got 1 and 2, then missed 3 and 4; it waits for a keyframe, not an inter frame.
        assert_eq!(hub.stats("room").unwrap().dropped_tags, 2);
        assert_eq!(slow.live.try_recv().unwrap(), inter(1));
        assert_eq!(slow.live.try_recv().unwrap(), inter(2));
        for tag in [inter(5), key_frame(6), inter(7)] {
            hub.publish("room", id, tag.clone()).unwrap();
            assert_eq!(fast.live.try_recv().unwrap(), tag);
        }
        assert_eq!(slow.live.try_recv().unwrap(), key_frame(6));
        assert_eq!(slow.live.try_recv().unwrap(), inter(7));
        assert_eq!(hub.stats("room").unwrap().dropped_tags, 3);
        assert_eq!(hub.stats("room").unwrap().viewers, 2);
        drop(fast);
        assert_eq!(hub.stats("room").unwrap().viewers, 1);
    }

    #[test]
    fn a_viewer_staying_through_a_republish_sees_time_go_on() {
        let (hub, key) = hub(8);
        let first = hub.start_publish("room", Some(key.expose())).unwrap();
        hub.publish("room", first, key_frame(1000)).unwrap();
        let mut sub = hub.subscribe("room").unwrap();
        hub.publish("room", first, inter(5000)).unwrap();
        assert_eq!(sub.live.try_recv().unwrap().timestamp, 5000);
        hub.stop_publish("room", first);
        assert_eq!(
            hub.subscribe("room").unwrap_err(),
            SubscribeRefused::NotLive
        );
        let second = hub.start_publish("room", Some(key.expose())).unwrap();
        hub.publish("room", second, inter(0)).unwrap(); // not decodable for the viewer
        hub.publish("room", second, key_frame(40)).unwrap();
        let tag = sub.live.try_recv().unwrap();
        assert!(tag.is_video_keyframe());
        assert_eq!(tag.timestamp, 5041);
    }

    #[test]
    fn a_viewer_without_a_cached_gop_waits_for_a_keyframe() {
        let (hub, key) = hub(8);
        let id = hub.start_publish("room", Some(key.expose())).unwrap();
        hub.publish("room", id, inter(0)).unwrap();
        let mut sub = hub.subscribe("room").unwrap();
        assert!(sub.start.gop.is_empty());
        hub.publish("room", id, inter(1)).unwrap();
        hub.publish("room", id, key_frame(2)).unwrap();
        assert_eq!(sub.live.try_recv().unwrap(), key_frame(2));
    }
}
