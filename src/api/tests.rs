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

pub(super) fn app() -> Router {
    app_with(Config::default())
}

/// The router over `config` (e.g. with API keys).
pub(super) fn app_with(config: Config) -> Router {
    let rooms = test_rooms(&config);
    app_over(config, rooms)
}

/// The rooms of a test server over `config`: mixers from a fake backend (real admission by cost
/// over 1.8 cores, no processes), three rooms at most.
pub(super) fn test_rooms(config: &Config) -> Arc<Rooms> {
    Arc::new(
        Rooms::new(
            RoomRuntime {
                pool: Arc::new(crate::pool::fake::FakeMixers::new(1800)),
                stop_grace: Duration::from_millis(100),
                recordings: None,
            },
            3,
            Arc::new(crate::access::Access::from_config(&config.auth)),
        )
        .with_lifetime(config.rooms.lifetime()),
    )
}

/// The router over `config` and these `rooms`.
pub(super) fn app_over(config: Config, rooms: Arc<Rooms>) -> Router {
    let ingest = IngestEngine::new(IngestConfig {
        udp_ports: None,
        public_ips: vec![],
        include_loopback: true,
        ..Default::default()
    })
    .expect("ingest engine");
    router(AppState {
        config: Arc::new(config),
        rooms,
        ingest,
        origin: None,
        shutdown: tokio_util::sync::CancellationToken::new(),
        nodes: None,
    })
}

pub(super) async fn call(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, body)
}

pub(super) fn post_json(path: &str, body: Value) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

pub(super) fn with_token(method: &str, path: &str, token: &str) -> Request<Body> {
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
    // Output URLs (even redacted) only for the host.
    assert!(room["outputs"][0].get("url").is_none(), "{room}");
    let (_, room) = call(
        &app,
        with_token("GET", &format!("/api/v1/rooms/{id}"), guest),
    )
    .await;
    assert!(room["outputs"][0].get("url").is_none(), "{room}");
    let (_, room) = call(
        &app,
        with_token("GET", &format!("/api/v1/rooms/{id}"), host),
    )
    .await;
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

/// A room with one external output: `(id, host token, guest token)`.
async fn room_with_output(app: &Router) -> (String, String, String) {
    let (status, created) = call(
        app,
        post_json(
            "/api/v1/rooms",
            json!({"name": "show", "outputs": [{"url": "rtmp://cdn.example/live/SECRET"}]}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let field = |name: &str| created[name].as_str().unwrap().to_string();
    (field("room_id"), field("host_token"), field("guest_token"))
}

#[tokio::test]
async fn removing_a_participant_is_host_only_and_names_unknown_ones() {
    let app = app();
    let (id, host, guest) = room_with_output(&app).await;
    let path = format!("/api/v1/rooms/{id}/participants/nobody");
    let (status, _) = call(&app, Request::delete(&path).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = call(&app, with_token("DELETE", &path, &guest)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = call(&app, with_token("DELETE", &path, &host)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"], "participant_not_found");
    let (status, body) = call(
        &app,
        with_token("DELETE", "/api/v1/rooms/nope/participants/x", &host),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"], "room_not_found");
}

#[tokio::test]
async fn links_carry_tokens_in_the_fragment_and_are_host_only() {
    let app = app();
    let (id, host, guest) = room_with_output(&app).await;
    let path = format!("/api/v1/rooms/{id}/links");
    let (status, _) = call(&app, with_token("GET", &path, &guest)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, links) = call(&app, with_token("GET", &path, &host)).await;
    assert_eq!(status, StatusCode::OK, "{links}");
    assert_eq!(
        links["guest_url"],
        format!("http://127.0.0.1:8080/join/{id}#token={guest}")
    );
    assert_eq!(
        links["host_url"],
        format!("http://127.0.0.1:8080/host/{id}#token={host}")
    );
    assert_eq!(
        links["watch_url"],
        format!("http://127.0.0.1:8080/watch/{id}")
    );
}

/// Reads a response body until `needle` shows up (or the deadline passes).
async fn read_until(body: &mut Body, needle: &str) -> String {
    use http_body_util::BodyExt;
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !text.contains(needle) {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} within 5 s; got {text:?}"));
        match frame {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    text.push_str(&String::from_utf8_lossy(&data));
                }
            }
            _ => panic!("stream ended before {needle:?}; got {text:?}"),
        }
    }
    text
}

#[tokio::test]
async fn events_stream_the_status_by_role_and_end_with_the_room() {
    let app = app();
    let (id, host, guest) = room_with_output(&app).await;
    let path = format!("/api/v1/rooms/{id}/events");

    let (status, _) = call(&app, Request::get(&path).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(&app, with_token("GET", "/api/v1/rooms/nope/events", &host)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let response = app
        .clone()
        .oneshot(with_token("GET", &path, &guest))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut guest_body = response.into_body();
    let first = read_until(&mut guest_body, "\n\n").await;
    assert!(first.starts_with("event: status\n"), "{first}");
    assert!(first.contains(r#""state":"idle""#), "{first}");
    assert!(!first.contains("cdn.example"), "{first}");
    assert!(!first.contains(r#""url""#), "{first}");

    let response = app
        .clone()
        .oneshot(with_token("GET", &path, &host))
        .await
        .unwrap();
    let mut host_body = response.into_body();
    let first = read_until(&mut host_body, "\n\n").await;
    assert!(
        first.contains(r#""url":"rtmp://cdn.example/live/***""#),
        "{first}"
    );
    assert!(first.contains(r#""bitrate_kbps":0"#), "{first}");
    assert!(!first.contains("SECRET"), "{first}");

    let (status, _) = call(
        &app,
        with_token("DELETE", &format!("/api/v1/rooms/{id}"), &host),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    read_until(&mut guest_body, "event: ended").await;
    read_until(&mut host_body, "event: ended").await;
}

#[tokio::test]
async fn pages_and_assets_are_served_from_the_binary() {
    let app = app();
    for path in ["/", "/host/r1", "/join/r1", "/watch/r1"] {
        let response = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers();
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
    }
    for (path, content_type) in [
        ("/assets/js/host.js", "text/javascript; charset=utf-8"),
        ("/assets/app.css", "text/css; charset=utf-8"),
        ("/assets/vendor/mpegts.js", "text/javascript; charset=utf-8"),
    ] {
        let response = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.headers()[header::CONTENT_TYPE], content_type);
    }
    for path in [
        "/assets/nope.js",
        "/assets/host.html",
        "/assets/../Cargo.toml",
    ] {
        let (status, body) = call(&app, Request::get(path).body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
}

fn put_layout(room: &str, token: &str, body: &str) -> Request<Body> {
    Request::put(format!("/api/v1/rooms/{room}/layout"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn layout_is_host_only_validated_and_shown_in_status() {
    let app = app();
    let (_, created) = call(&app, post_json("/api/v1/rooms", json!({}))).await;
    let id = created["room_id"].as_str().unwrap();
    let host = created["host_token"].as_str().unwrap();
    let guest = created["guest_token"].as_str().unwrap();

    let (status, body) = call(&app, put_layout(id, guest, r#"{"type":"pip"}"#)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = call(&app, put_layout(id, host, r#"{"type":"mosaic"}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_json");
    let (status, body) = call(&app, put_layout(id, host, "")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("speaker"),
        "{body}"
    );
    let (status, body) = call(
        &app,
        put_layout(id, host, r#"{"type":"speaker","pin":"nobody"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_layout");
    assert!(
        body["message"].as_str().unwrap().contains("layout.pin"),
        "{body}"
    );

    let (status, body) = call(&app, put_layout(id, host, r#"{"type":"pip"}"#)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["layout"], json!({"type": "pip"}));
    let (_, body) = call(
        &app,
        with_token("GET", &format!("/api/v1/rooms/{id}"), host),
    )
    .await;
    assert_eq!(body["layout"], json!({"type": "pip"}));
}

#[tokio::test]
async fn participant_audio_is_host_only_and_needs_a_participant() {
    let app = app();
    let (_, created) = call(&app, post_json("/api/v1/rooms", json!({}))).await;
    let id = created["room_id"].as_str().unwrap();
    let host = created["host_token"].as_str().unwrap();
    let guest = created["guest_token"].as_str().unwrap();
    let put = |token: &str, body: &str| {
        Request::put(format!("/api/v1/rooms/{id}/participants/nobody/audio"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let (status, body) = call(&app, put(guest, r#"{"muted":true}"#)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = call(&app, put(host, r#"{"volume":2}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("volume"),
        "{body}"
    );
    let (status, body) = call(&app, put(host, r#"{"muted":true}"#)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"], "participant_not_found");
}

#[tokio::test]
async fn whep_checks_room_token_content_type_size_and_participant() {
    let app = app();
    let (_, created) = call(&app, post_json("/api/v1/rooms", json!({}))).await;
    let id = created["room_id"].as_str().unwrap();
    let guest = created["guest_token"].as_str().unwrap();
    let offer = |path: String, token: &str, content_type: &str, body: String| {
        Request::post(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap()
    };
    let sdp = "v=0\r\n".to_string();
    let cases = [
        (
            "/whep/nope/p1".to_string(),
            guest,
            "application/sdp",
            sdp.clone(),
            StatusCode::NOT_FOUND,
            "room_not_found",
        ),
        (
            format!("/whep/{id}/p1"),
            "bogus",
            "application/sdp",
            sdp.clone(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            format!("/whep/{id}/p1"),
            guest,
            "text/plain",
            sdp.clone(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            format!("/whep/{id}/p1"),
            guest,
            "application/sdp",
            "x".repeat(100_000),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            format!("/whep/{id}/p1"),
            guest,
            "application/sdp",
            sdp.clone(),
            StatusCode::NOT_FOUND,
            "participant_not_found",
        ),
    ];
    for (path, token, content_type, body, want, code) in cases {
        let (status, body) = call(&app, offer(path.clone(), token, content_type, body)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (want, Some(code)),
            "{path}: {body}"
        );
    }
    let host = created["host_token"].as_str().unwrap();
    let (status, body) = call(
        &app,
        with_token("DELETE", &format!("/whep/{id}/p1/s1"), host),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("subscription_not_found"))
    );
    let (status, _) = call(
        &app,
        with_token("PATCH", &format!("/whep/{id}/p1/s1"), host),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = call(
        &app,
        Request::builder()
            .method("OPTIONS")
            .uri(format!("/whep/{id}/p1"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(status.is_success(), "OPTIONS as for WHIP: {status}");
}

#[tokio::test]
async fn presets_set_size_rate_and_bitrate_and_video_fields_override_them() {
    let app = app();
    let (status, created) = call(
        &app,
        post_json("/api/v1/rooms", json!({"preset": "1080p60"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["room_id"].as_str().unwrap();
    let (_, room) = call(&app, with_token("GET", &format!("/api/v1/rooms/{id}"), "")).await;
    assert_eq!(
        room["video"],
        json!({"width": 1920, "height": 1080, "fps": 60, "bitrate_kbps": 6000})
    );

    let (_, created) = call(
        &app,
        post_json(
            "/api/v1/rooms",
            json!({"preset": "480p30", "video": {"bitrate_kbps": 900}}),
        ),
    )
    .await;
    let id = created["room_id"].as_str().unwrap();
    let (_, room) = call(&app, with_token("GET", &format!("/api/v1/rooms/{id}"), "")).await;
    assert_eq!(
        room["video"],
        json!({"width": 854, "height": 480, "fps": 30, "bitrate_kbps": 900})
    );

    let (status, body) = call(&app, post_json("/api/v1/rooms", json!({"preset": "4k"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_preset");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with("preset:") && message.contains("720p30"),
        "{body}"
    );
}

fn post_output(room: &str, token: &str, body: &str) -> Request<Body> {
    Request::post(format!("/api/v1/rooms/{room}/outputs"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn outputs_are_added_and_removed_by_the_host_with_keys_redacted() {
    let app = app();
    let (_, created) = call(
        &app,
        post_json(
            "/api/v1/rooms",
            json!({"outputs": [{"url": "rtmp://a.example/live/first_key"}]}),
        ),
    )
    .await;
    let id = created["room_id"].as_str().unwrap();
    let host = created["host_token"].as_str().unwrap();
    let guest = created["guest_token"].as_str().unwrap();
    let url = r#"{"url": "rtmp://b.example/app/sk_live_secret"}"#;

    let (status, body) = call(&app, post_output(id, guest, url)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = call(&app, post_output(id, "", url)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = call(&app, post_output("nope", host, url)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    for (bad, needle) in [
        (r#"{"url": "http://b.example/app/key"}"#, "rtmp://"),
        (r#"{"url": "rtmp://b.example/app"}"#, "stream key"),
        (r#"{"url": "garbage sk_live_secret"}"#, "not a URL"),
    ] {
        let (status, body) = call(&app, post_output(id, host, bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["error"], "invalid_output");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.starts_with("url:") && message.contains(needle),
            "{body}"
        );
        assert!(!message.contains("sk_live_secret"), "{body}");
    }
    let (status, body) = call(&app, post_output(id, host, "")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = call(&app, post_output(id, host, r#"{"uri": "x"}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Offline: stored for the next go-live, answered with its id and state.
    let (status, body) = call(&app, post_output(id, host, url)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["output_id"], "out1");
    assert_eq!(body["state"], "idle");
    assert!(!body.to_string().contains("sk_live_secret"), "{body}");
    let (status, body) = call(&app, post_output(id, host, url)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "duplicate_output");

    let (_, room) = call(
        &app,
        with_token("GET", &format!("/api/v1/rooms/{id}"), host),
    )
    .await;
    let ids: Vec<_> = room["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["output_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["out0", "out1"]);
    assert!(!room.to_string().contains("sk_live_secret"), "{room}");

    let path = format!("/api/v1/rooms/{id}/outputs/out1");
    let (status, _) = call(&app, with_token("DELETE", &path, guest)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = call(&app, with_token("DELETE", &path, host)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = call(&app, with_token("DELETE", &path, host)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"], "output_not_found");
}

#[tokio::test]
async fn the_output_limit_counts_outputs_from_create_and_added_ones() {
    let app = app();
    let max = Config::default().limits.max_outputs_per_room;
    let outputs: Vec<Value> = (0..max)
        .map(|i| json!({"url": format!("rtmp://a.example/live/k{i}")}))
        .collect();
    let (status, created) = call(
        &app,
        post_json("/api/v1/rooms", json!({"outputs": outputs})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["room_id"].as_str().unwrap();
    let host = created["host_token"].as_str().unwrap();
    let (status, body) = call(
        &app,
        post_output(id, host, r#"{"url": "rtmp://a.example/live/one_more"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "too_many_outputs");
    assert!(
        body["message"].as_str().unwrap().contains(&max.to_string()),
        "{body}"
    );
}

fn put_look(room: &str, token: Option<&str>, body: String) -> Request<Body> {
    let mut request = Request::put(format!("/api/v1/rooms/{room}/look"))
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    request.body(Body::from(body)).unwrap()
}

/// A 1x1 PNG as a data URI.
const PNG_1X1: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";

#[tokio::test]
async fn look_is_host_only_validated_and_shown_in_status() {
    let app = app();
    let (_, created) = call(&app, post_json("/api/v1/rooms", json!({"name": "Demo"}))).await;
    let id = created["room_id"].as_str().unwrap();
    let host = created["host_token"].as_str().unwrap();
    let guest = created["guest_token"].as_str().unwrap();
    let branded = json!({"labels": true, "background": "#808000", "logo": PNG_1X1}).to_string();

    // The default look, before anyone set one.
    let (_, body) = call(
        &app,
        Request::get(format!("/api/v1/rooms/{id}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        body["look"],
        json!({"labels": false, "background": "#000000", "title": "", "has_logo": false})
    );

    let (status, body) = call(&app, put_look(id, None, branded.clone())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = call(&app, put_look(id, Some(guest), branded.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "forbidden");
    let (status, body) = call(&app, put_look("nosuchroom", Some(host), branded.clone())).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Each refusal is a 400 whose message names what to fix.
    let huge_logo = format!("{PNG_1X1}{}", "A".repeat(300 * 1024));
    let refusals = [
        (
            json!({"background": "olive"}),
            "invalid_look",
            "look.background",
        ),
        (
            json!({"background": "#80800"}),
            "invalid_look",
            "look.background",
        ),
        (
            json!({"logo": "https://example.com/logo.png"}),
            "invalid_look",
            "inline PNG",
        ),
        (
            json!({"logo": "data:image/png;base64,R0lGODlhAQABAAAAACw="}),
            "invalid_look",
            "not a PNG",
        ),
        (json!({"logo": huge_logo}), "invalid_look", "at most"),
        (json!({"lables": true}), "invalid_json", "lables"),
        (json!({"labels": "yes"}), "invalid_json", "`labels`"),
    ];
    for (request, error, hint) in refusals {
        let (status, body) = call(&app, put_look(id, Some(host), request.to_string())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"], error, "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(hint), "{message:?} lacks {hint:?}");
    }
    // Far past any logo: refused before it is read.
    let giant = json!({"logo": format!("{PNG_1X1}{}", "A".repeat(2 << 20))}).to_string();
    let (status, body) = call(&app, put_look(id, Some(host), giant)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"], "body_too_large");

    // Nothing refused changed the look; the good one shows (the logo as has_logo, not bytes).
    let (status, body) = call(&app, put_look(id, Some(host), branded)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let want = json!({"labels": true, "background": "#808000", "title": "", "has_logo": true});
    assert_eq!(body["look"], want);
    let (_, body) = call(
        &app,
        Request::get(format!("/api/v1/rooms/{id}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(body["look"], want);
    assert!(!body.to_string().contains("iVBOR"), "logo bytes in {body}");

    // The body is the whole look: `{}` is back to the defaults.
    let (status, body) = call(&app, put_look(id, Some(host), "{}".into())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["look"]["has_logo"], false);
    assert_eq!(body["look"]["background"], "#000000");
}

#[tokio::test]
async fn a_room_can_be_created_with_its_look() {
    let app = app();
    let (status, body) = call(
        &app,
        post_json("/api/v1/rooms", json!({"look": {"background": "#12345"}})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_look");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("look.background"));

    let (status, created) = call(
        &app,
        post_json(
            "/api/v1/rooms",
            json!({"labels": true, "look": {"background": "#1e2a38", "title": "Show"}}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["room_id"].as_str().unwrap();
    let (_, body) = call(
        &app,
        Request::get(format!("/api/v1/rooms/{id}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        body["look"],
        json!({"labels": true, "background": "#1e2a38", "title": "Show", "has_logo": false})
    );
}
