//! Reading request bodies with a size limit and turning bad ones into actionable errors
//! (axum's own rejections are plain text; ours are the JSON error shape).

use axum::body::{to_bytes, Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use std::time::Duration;

use super::error::ApiError;

pub async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body is larger than {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        discard(body).await;
        return Err(too_large());
    }
    let read = tokio::time::timeout(BODY_READ_TIME, to_bytes(body, limit))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {} s",
                    BODY_READ_TIME.as_secs()
                ),
            )
        })?;
    read.map_err(|e| {
        let is_limit = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        if is_limit {
            too_large()
        } else {
            ApiError::bad_request("unreadable_body", format!("cannot read request body: {e}"))
        }
    })
}

/// A whole request body (an SDP offer, JSON, a logo) must arrive within this long: a client
/// dripping a body byte by byte holds a connection for no longer.
const BODY_READ_TIME: Duration = Duration::from_secs(30);

/// How much of a refused body is still read (and thrown away) before answering.
const DISCARD_CAP: usize = 4 << 20;
/// How long a refused body may take to arrive before the answer goes out anyway.
const DISCARD_TIME: Duration = Duration::from_secs(2);

/// Reads and throws away a refused body (bounded in size and time), so a client that is still
/// sending it reads our 413 instead of a connection reset halfway through its upload.
async fn discard(body: Body) {
    let mut chunks = body.into_data_stream();
    let mut seen = 0usize;
    let _ = tokio::time::timeout(DISCARD_TIME, async {
        while let Some(Ok(chunk)) = chunks.next().await {
            seen += chunk.len();
            if seen > DISCARD_CAP {
                break;
            }
        }
    })
    .await;
}

/// Parses an optional JSON body: empty means `T::default()`.
pub fn parse_json_or_default<T: DeserializeOwned + Default>(
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.is_empty() && !content_type.starts_with("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send JSON with Content-Type: application/json (got {content_type:?})"),
        ));
    }
    // serde_json alone says "expected a boolean at line 1 column 15"; the path says which
    // field, which is what a person fixing the request needs.
    let mut json = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        let message = if path == "." || path.is_empty() {
            format!("invalid JSON body: {}", e.inner())
        } else {
            format!("invalid JSON body at `{path}`: {}", e.inner())
        };
        ApiError::bad_request("invalid_json", message)
    })?;
    json.end()
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid JSON body: {e}")))?;
    Ok(value)
}
