//! `GET /live/{room}/{file}`: the playlist (with blocking reload), init segments, segments and
//! parts of a stream's HLS window.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::playlist::{render, Resource};
use super::window::{Awaited, Readiness};
use super::HlsStream;
use crate::api::error::ApiError;
use crate::origin::Origin;

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
const MEDIA_TYPE: &str = "video/mp4";
/// Segments and parts never change once written; the window keeps them about 14 s.
const MEDIA_CACHE: &str = "public, max-age=10";

fn not_found(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, code, message)
}

/// The blocking-reload parameters of a playlist request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlockingQuery {
    pub awaited: Option<Awaited>,
}

impl BlockingQuery {
    /// Parses `_HLS_msn` / `_HLS_part` (other parameters, such as `_HLS_skip`, are ignored).
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let bad = |message: &str| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_hls_query",
                message.to_string(),
            )
        };
        let mut msn = None;
        let mut part = None;
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match key.as_ref() {
                "_HLS_msn" => {
                    msn = Some(value.parse::<u64>().map_err(|_| {
                        bad("_HLS_msn must be a media sequence number (a whole number)")
                    })?)
                }
                "_HLS_part" => {
                    part = Some(
                        value
                            .parse::<usize>()
                            .map_err(|_| bad("_HLS_part must be a part index (a whole number)"))?,
                    )
                }
                _ => {}
            }
        }
        match (msn, part) {
            (None, Some(_)) => Err(bad("_HLS_part needs _HLS_msn")),
            (None, None) => Ok(Self::default()),
            (Some(msn), part) => Ok(Self {
                awaited: Some(Awaited { msn, part }),
            }),
        }
    }
}

/// Answers `GET /live/{room}/{file}?{query}`.
pub async fn respond(
    origin: &Origin,
    room: &str,
    file: &str,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let resource = Resource::parse(file).ok_or_else(|| {
        not_found(
            "not_found",
            format!("no HLS file {file:?}; the playlist is /live/{room}/index.m3u8"),
        )
    })?;
    let stream = origin.hub().hls(room).ok_or_else(|| {
        not_found(
            "stream_not_found",
            format!("no stream {room:?} on this server (or HLS is off: origin.hls = false)"),
        )
    })?;
    match resource {
        Resource::Playlist => playlist(&stream, room, BlockingQuery::parse(query)?).await,
        Resource::Init(version) => {
            let init = stream.window().init(version).cloned();
            init.map(|bytes| media(bytes, "no-cache"))
                .ok_or_else(|| gone(room, file))
        }
        Resource::Segment(msn) => {
            // A segment is its parts one after another; they are sent as they are stored.
            let (size, chunks) = {
                let window = stream.window();
                let segment = window
                    .segment(msn)
                    .filter(|s| s.complete)
                    .ok_or_else(|| gone(room, file))?;
                let chunks: Vec<Result<Bytes, std::convert::Infallible>> =
                    segment.parts.iter().map(|p| Ok(p.bytes.clone())).collect();
                (segment.size(), chunks)
            };
            Ok((
                [
                    (header::CONTENT_TYPE, MEDIA_TYPE.to_string()),
                    (header::CACHE_CONTROL, MEDIA_CACHE.to_string()),
                    (header::CONTENT_LENGTH, size.to_string()),
                ],
                Body::from_stream(futures_util::stream::iter(chunks)),
            )
                .into_response())
        }
        Resource::Part(msn, index) => part(&stream, room, file, msn, index).await,
    }
}

async fn playlist(
    stream: &Arc<HlsStream>,
    room: &str,
    query: BlockingQuery,
) -> Result<Response, ApiError> {
    let stopped = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "stream_not_live",
            format!("stream {room:?} is not live; it plays here again when the host goes live"),
        )
    };
    if stream.window().away_for_good(Instant::now()) {
        return Err(stopped());
    }
    if let Some(awaited) = query.awaited {
        let readiness = stream.window().readiness(awaited, Instant::now());
        match readiness {
            Readiness::TooFarAhead => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "hls_msn_too_far_ahead",
                    format!(
                        "_HLS_msn={} is more than two segments past the live edge",
                        awaited.msn
                    ),
                ))
            }
            Readiness::Ready => {}
            Readiness::NotYet => {
                let limit = stream.block_limit();
                let ready = stream
                    .wait_for(limit, |w| {
                        w.readiness(awaited, Instant::now()) != Readiness::NotYet
                    })
                    .await;
                if !ready {
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "hls_not_ready",
                        "the stream produced nothing new in three target durations; retry",
                    ));
                }
            }
        }
    }
    let settings = stream.settings();
    if stream.window().away_for_good(Instant::now()) {
        return Err(stopped());
    }
    let text = render(
        &stream.window(),
        Instant::now(),
        settings.packager.part_target_ms,
        settings.window.segments_with_parts,
    );
    Ok((
        [
            (header::CONTENT_TYPE, PLAYLIST_TYPE),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        text,
    )
        .into_response())
}

async fn part(
    stream: &Arc<HlsStream>,
    room: &str,
    file: &str,
    msn: u64,
    index: usize,
) -> Result<Response, ApiError> {
    let found = stream.window().part(msn, index).map(|p| p.bytes.clone());
    if let Some(bytes) = found {
        return Ok(media(bytes, MEDIA_CACHE));
    }
    // The hinted next part is answered as soon as it is written (EXT-X-PRELOAD-HINT).
    if !stream.window().part_is_next(msn, index, Instant::now()) {
        return Err(gone(room, file));
    }
    let limit = stream.block_limit();
    stream
        .wait_for(limit, |w| {
            w.part(msn, index).is_some() || w.ended(Instant::now())
        })
        .await;
    let found = stream.window().part(msn, index).map(|p| p.bytes.clone());
    found
        .map(|bytes| media(bytes, MEDIA_CACHE))
        .ok_or_else(|| gone(room, file))
}

fn gone(room: &str, file: &str) -> ApiError {
    not_found(
        "hls_file_not_found",
        format!(
            "{file} is not in the live window of {room:?} (too old, or not written yet); \
             reload the playlist"
        ),
    )
}

fn media(bytes: Bytes, cache: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, MEDIA_TYPE.to_string()),
            (header::CACHE_CONTROL, cache.to_string()),
        ],
        bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_parameters_parse_or_are_refused() {
        assert_eq!(
            BlockingQuery::parse(None).unwrap(),
            BlockingQuery::default()
        );
        assert_eq!(
            BlockingQuery::parse(Some("_HLS_msn=5&_HLS_part=2&_HLS_skip=YES"))
                .unwrap()
                .awaited,
            Some(Awaited {
                msn: 5,
                part: Some(2)
            })
        );
        assert_eq!(
            BlockingQuery::parse(Some("_HLS_msn=5")).unwrap().awaited,
            Some(Awaited { msn: 5, part: None })
        );
        for bad in [
            "_HLS_part=1",
            "_HLS_msn=-1",
            "_HLS_msn=x",
            "_HLS_msn=1&_HLS_part=1.5",
        ] {
            let err = BlockingQuery::parse(Some(bad)).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
