//! HTTP-FLV: `GET /live/{room}.flv` answers one endless FLV file: header, metadata, sequence
//! headers, the cached GOP, then live tags as they come. Timestamps start at 0 per viewer.

use std::convert::Infallible;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::flv::{file_header, metadata_script, write_tag, Tag, TagKind};
use super::gop::StartBundle;
use super::hub::{SubscribeRefused, Subscription};
use super::Origin;
use crate::api::error::ApiError;

/// The stream name of a `{room}.flv` path segment.
pub fn stream_of_file(file: &str) -> Option<&str> {
    file.strip_suffix(".flv").filter(|name| !name.is_empty())
}

/// Answers `GET /live/{file}`.
pub fn respond(origin: &Origin, file: &str) -> Result<Response, ApiError> {
    let not_found =
        |message: String| ApiError::new(StatusCode::NOT_FOUND, "stream_not_found", message);
    let name =
        stream_of_file(file).ok_or_else(|| not_found("use /live/<room id>.flv".to_string()))?;
    let subscription = origin
        .hub()
        .subscribe(name)
        .map_err(|refused| match refused {
            SubscribeRefused::UnknownStream => {
                not_found(format!("no stream {name:?} on this server"))
            }
            SubscribeRefused::NotLive => ApiError::new(
                StatusCode::NOT_FOUND,
                "stream_not_live",
                format!("stream {name:?} is not live; go live first, then retry"),
            ),
            SubscribeRefused::TooManyViewers => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_viewers",
                "this stream has too many viewers; try again later",
            ),
        })?;
    tracing::debug!(stream = %name, "origin: HTTP-FLV viewer joined");
    Ok((
        [
            (header::CONTENT_TYPE, "video/x-flv"),
            (header::CACHE_CONTROL, "no-cache, no-store"),
        ],
        Body::from_stream(flv_stream(subscription)),
    )
        .into_response())
}

/// Per-viewer FLV writer: rebases timestamps to start at 0.
#[derive(Debug, Default)]
pub struct FlvWriter {
    base: Option<u32>,
}

impl FlvWriter {
    /// The FLV header and everything of the start bundle, as one chunk.
    pub fn start(&mut self, start: &StartBundle) -> Bytes {
        let mut out = BytesMut::new();
        let has_audio = start.headers.iter().any(|t| t.kind == TagKind::Audio)
            || start
                .metadata
                .as_ref()
                .is_some_and(|m| m.audio_codec_id.is_some());
        let has_video = start.has_video
            || start
                .metadata
                .as_ref()
                .is_some_and(|m| m.video_codec_id.is_some());
        out.extend_from_slice(&file_header(has_audio, has_video));
        if let Some(metadata) = &start.metadata {
            write_tag(&mut out, TagKind::Script, 0, &metadata_script(metadata));
        }
        for tag in start.headers.iter().chain(&start.gop) {
            self.tag(&mut out, tag);
        }
        out.freeze()
    }

    pub fn tag(&mut self, out: &mut BytesMut, tag: &Tag) {
        let timestamp = if tag.kind == TagKind::Script || tag.is_sequence_header() {
            0
        } else {
            let base = *self.base.get_or_insert(tag.timestamp);
            tag.timestamp.saturating_sub(base)
        };
        write_tag(out, tag.kind, timestamp, &tag.data);
    }
}

fn flv_stream(
    subscription: Subscription,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send {
    let Subscription { start, live } = subscription;
    let mut writer = FlvWriter::default();
    let first = writer.start(&start);
    let state = (Some(first), live, writer);
    futures_util::stream::unfold(state, |(first, mut live, mut writer)| async move {
        if let Some(first) = first {
            return Some((Ok(first), (None, live, writer)));
        }
        let chunk = next_chunk(&mut live, &mut writer).await?;
        Some((Ok(chunk), (None, live, writer)))
    })
}

/// The next live tag, plus any already queued behind it, as one chunk (fewer, larger writes).
async fn next_chunk(live: &mut mpsc::Receiver<Tag>, writer: &mut FlvWriter) -> Option<Bytes> {
    let tag = live.recv().await?;
    let mut out = BytesMut::new();
    writer.tag(&mut out, &tag);
    while out.len() < 256 * 1024 {
        match live.try_recv() {
            Ok(tag) => writer.tag(&mut out, &tag),
            Err(_) => break,
        }
    }
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(stream_of_file("abc.flv"), Some("abc"));
        assert_eq!(stream_of_file(".flv"), None);
        assert_eq!(stream_of_file("abc"), None);
        assert_eq!(stream_of_file("abc.mp4"), None);
    }

    #[tokio::test]
    async fn answers_404_until_live_then_an_endless_flv_that_ends_with_the_stream() {
        use crate::origin::hub::HubLimits;
        use http_body_util::BodyExt;

        let origin = Origin::new("127.0.0.1:1935".parse().unwrap(), "", HubLimits::default());
        let err = respond(&origin, "nosuch.flv").unwrap_err();
        assert_eq!(
            (err.status, err.code),
            (StatusCode::NOT_FOUND, "stream_not_found")
        );
        let err = respond(&origin, "room").unwrap_err();
        assert_eq!(err.status, StatusCode::NOT_FOUND);

        let url = origin.register("room");
        let err = respond(&origin, "room.flv").unwrap_err();
        assert_eq!(
            (err.status, err.code),
            (StatusCode::NOT_FOUND, "stream_not_live")
        );

        let key = url.split("key=").nth(1).unwrap();
        let id = origin.hub().start_publish("room", Some(key)).unwrap();
        let hub = origin.hub();
        hub.publish(
            "room",
            id,
            Tag::video(0, Bytes::from_static(&[0x17, 0, 0, 0, 0])),
        )
        .unwrap();
        hub.publish(
            "room",
            id,
            Tag::video(40, Bytes::from_static(&[0x17, 1, 0, 0, 0])),
        )
        .unwrap();
        let response = respond(&origin, "room.flv").unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "video/x-flv");
        let mut body = response.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..3], b"FLV");
        assert_eq!(first.len(), 13 + 20 + 20, "header, AVC config, keyframe");

        hub.publish(
            "room",
            id,
            Tag::video(80, Bytes::from_static(&[0x27, 1, 0, 0, 0])),
        )
        .unwrap();
        let live = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(live.len(), 20);
        assert_eq!(&live[4..7], &[0, 0, 40], "rebased to the keyframe");

        origin.unregister("room");
        assert!(
            body.frame().await.is_none(),
            "the body ends with the stream"
        );
    }

    #[test]
    fn start_chunk_is_a_valid_flv_prefix_with_rebased_timestamps() {
        let start = StartBundle {
            metadata: None,
            headers: vec![Tag::video(0, Bytes::from_static(&[0x17, 0, 0, 0, 0]))],
            gop: vec![
                Tag::video(5000, Bytes::from_static(&[0x17, 1, 0, 0, 0])),
                Tag::audio(5020, Bytes::from_static(&[0xaf, 1])),
            ],
            has_video: true,
        };
        let mut writer = FlvWriter::default();
        let bytes = writer.start(&start);
        assert_eq!(&bytes[..3], b"FLV");
        // header (13) + 3 tags of 11 + body + 4.
        assert_eq!(bytes.len(), 13 + (15 + 5) + (15 + 5) + (15 + 2));
        // The keyframe's timestamp became 0, the audio's 20.
        let second_tag = 13 + 20;
        assert_eq!(&bytes[second_tag + 4..second_tag + 8], &[0, 0, 0, 0]);
        let third_tag = second_tag + 20;
        assert_eq!(&bytes[third_tag + 4..third_tag + 8], &[0, 0, 20, 0]);
    }
}
