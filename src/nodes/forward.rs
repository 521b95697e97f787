//! Requests for a room another serve node owns are forwarded to it, whatever they are: the API,
//! WHIP and WHEP, event streams (streamed back as they come) and the built-in origin's files.
//! Proxying rather than redirecting: behind one address the owner's own address is usually not
//! reachable by clients, browsers' `EventSource` and most WHIP clients do not follow a `307` on
//! a `POST`, and a WHIP session's later `DELETE` must reach the same node as its `POST`, which
//! proxying gives for free. A `POST /api/v1/rooms` goes to the least loaded node the same way.
//!
//! A forwarded request carries `x-costream-forwarded` (never forwarded again: no loops) and the
//! client's address in `X-Forwarded-For` (list the serve nodes in `[server] trusted_proxies` so
//! the owner's per-IP limits count clients, not nodes).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::{debug, warn};

use super::{Nodes, Route};
use crate::api::error::ApiError;
use crate::api::AppState;

/// Marks a request one node forwarded to another.
pub const FORWARDED: &str = "x-costream-forwarded";
/// The largest request body forwarded (a room's look carries a logo of up to 256 KiB as a data
/// URI; SDP offers are a few KiB).
const MAX_BODY: usize = 1024 * 1024;

/// Headers that belong to one connection and are not passed on (RFC 9110 §7.6.1).
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
            | "proxy-authorization"
            | "proxy-authenticate"
    )
}

pub async fn forward(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(nodes) = state.nodes.clone() else {
        return next.run(request).await;
    };
    if request.headers().contains_key(FORWARDED) {
        return next.run(request).await;
    }
    let path = request.uri().path();
    let route = if path == "/api/v1/rooms" && request.method() == Method::POST {
        match nodes.placement() {
            Some((node_id, url)) => Route::Owner { node_id, url },
            None => Route::Here,
        }
    } else if let Some(room) = super::record::room_of_path(path) {
        nodes.route(room).await
    } else {
        Route::Here
    };
    match route {
        Route::Here => next.run(request).await,
        Route::Owner { node_id, url } => proxy(&nodes, &node_id, &url, request).await,
        Route::Unavailable(reason) => {
            ApiError::unavailable("room_unavailable", reason, 2).into_response()
        }
    }
}

async fn proxy(nodes: &Nodes, node_id: &str, base: &str, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    let url = format!("{base}{path}");
    let client_ip = parts
        .extensions
        .get::<crate::http_server::ClientIp>()
        .map(|ip| ip.0.to_string());
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(e) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body could not be read whole ({e}); bodies are limited to {MAX_BODY} bytes"),
            )
            .into_response()
        }
    };
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) && name != "x-forwarded-for" {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Some(ip) = client_ip.and_then(|ip| ip.parse().ok()) {
        headers.insert("x-forwarded-for", ip);
    }
    headers.insert(
        FORWARDED,
        nodes
            .node_id()
            .parse()
            .expect("node ids are header-safe (validated)"),
    );
    debug!(to = %node_id, %url, "forwarding to the room's serve node");
    let answer = nodes
        .http
        .request(parts.method.clone(), &url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            warn!(to = %node_id, "cannot forward to the room's serve node: {e}");
            return ApiError::unavailable(
                "room_unavailable",
                format!("the room's serve node {node_id} does not answer; retry shortly (another node adopts its rooms if it is gone)"),
                2,
            )
            .into_response();
        }
    };
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if !hop_by_hop(name) {
            response = response.header(name, value);
        }
    }
    response
        .body(Body::from_stream(answer.bytes_stream()))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_headers_stay_behind() {
        for name in [
            "connection",
            "transfer-encoding",
            "host",
            "content-length",
            "upgrade",
        ] {
            assert!(hop_by_hop(&HeaderName::from_static(name)), "{name}");
        }
        for name in ["authorization", "content-type", "location", "accept"] {
            assert!(!hop_by_hop(&HeaderName::from_static(name)), "{name}");
        }
    }
}
