//! The router without sockets: requests in, responses out (`tower::ServiceExt::oneshot`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::http::{header, Request, StatusCode};
use axum::Router;
use costream_ingest::{IngestConfig, IngestEngine};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{router, AppState};
use crate::config::Config;
use crate::room::{RoomRuntime, Rooms};

fn app() -> Router {
    let config = Config::default();
    let rooms = Arc::new(Rooms::new(
        RoomRuntime {
            // Never spawned in these tests: no test here goes live with outputs.
            mixer_binary: "/nonexistent/costream".into(),
            stop_grace: Duration::from_millis(100),
        },
        3,
    ));
    let ingest = IngestEngine::new(IngestConfig {
        udp_ports: None,
        public_ips: vec![],
        include_loopback: true,
    })
    .expect("ingest engine");
    router(AppState {
        config: Arc::new(config),
        rooms,
        ingest,
        origin: None,
        shutdown: tokio_util::sync::CancellationToken::new(),
    })
}

async fn call(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, body)
}

fn post_json(path: &str, body: Value) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn with_token(method: &str, path: &str, token: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn create_room_answers_ids_tokens_and_links() {
    let app = app();
    let (status, created) = call(
        &app,
        post_json(
            "/api/v1/rooms",
            json!({"name": "show", "outputs": [{"url": "rtmp://cdn.example/live/SECRET"}],
                   "video": {"width": 1920, "height": 1080}}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["room_id"].as_str().unwrap();
    let host = created["host_token"].as_str().unwrap();
    let guest = created["guest_token"].as_str().unwrap();
    assert_ne!(host, guest);
    assert_eq!(
        created["watch_url"],
        format!("http://127.0.0.1:8080/watch/{id}")
    );
    assert!(created["guest_url"].as_str().unwrap().contains(guest));
    assert!(!created["guest_url"].as_str().unwrap().contains(host));
    assert_eq!(
        created["whip_url"],
        format!("http://127.0.0.1:8080/whip/{id}")
    );

    let (status, room) = call(
        &app,
        Request::get(format!("/api/v1/rooms/{id}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(room["name"], "show");
    assert_eq!(room["video"]["width"], 1920);
    assert_eq!(room["video"]["fps"], 30);
    assert_eq!(room["broadcast"], "offline");
    assert_eq!(room["outputs"][0]["state"], "idle");
    assert_eq!(room["outputs"][0]["url"], "rtmp://cdn.example/live/***");
}

#[tokio::test]
async fn an_empty_body_creates_a_room_with_defaults() {
    let app = app();
    let (status, created) = call(
        &app,
        Request::post("/api/v1/rooms").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
}

#[tokio::test]
async fn host_only_endpoints_check_the_token() {
    let app = app();
    let (_, created) = call(&app, post_json("/api/v1/rooms", json!({}))).await;
    let id = created["room_id"].as_str().unwrap();
    let live = format!("/api/v1/rooms/{id}/live");

    let (status, body) = call(&app, Request::post(&live).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = call(&app, with_token("POST", &live, "bogus")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let guest = created["guest_token"].as_str().unwrap();
    let (status, body) = call(&app, with_token("POST", &live, guest)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let host = created["host_token"].as_str().unwrap();
    let (status, body) = call(&app, with_token("POST", &live, host)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "no_outputs");

    let (status, _) = call(
        &app,
        with_token("DELETE", &format!("/api/v1/rooms/{id}"), host),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = call(
        &app,
        Request::get(format!("/api/v1/rooms/{id}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn whip_rejects_wrong_content_type_and_garbage_sdp() {
    let app = app();
    let (_, created) = call(&app, post_json("/api/v1/rooms", json!({}))).await;
    let id = created["room_id"].as_str().unwrap();
    let guest = created["guest_token"].as_str().unwrap();
    let offer = |content_type: &str, body: &'static str| {
        Request::post(format!("/whip/{id}"))
            .header(header::AUTHORIZATION, format!("Bearer {guest}"))
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap()
    };
    let (status, body) = call(&app, offer("text/plain", "v=0")).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    let (status, body) = call(&app, offer("application/sdp", "this is not sdp")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_sdp");
}

#[tokio::test]
async fn limits_and_unknown_paths() {
    let app = app();
    for _ in 0..3 {
        let (status, _) = call(&app, post_json("/api/v1/rooms", json!({}))).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, body) = call(&app, post_json("/api/v1/rooms", json!({}))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "too_many_rooms");

    let (status, body) = call(
        &app,
        Request::get("/api/v2/whatever")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");

    let big = "x".repeat(100_000);
    let (status, body) = call(&app, post_json("/api/v1/rooms", json!({ "name": big }))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
}
