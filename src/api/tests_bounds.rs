//! Bounds at the edge: offers that would make the server probe many addresses or open many
//! media sections, and CORS preflights that must not advertise trickle (PATCH).

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::json;

use super::tests::{app, call, post_json};

#[tokio::test]
async fn whip_offers_with_a_candidate_flood_or_extra_sections_are_refused() {
    let app = app();
    let (_, created) = call(&app, post_json("/api/v1/rooms", json!({}))).await;
    let id = created["room_id"].as_str().unwrap();
    let guest = created["guest_token"].as_str().unwrap();
    let offer = |sdp: String| {
        Request::post(format!("/whip/{id}"))
            .header(header::AUTHORIZATION, format!("Bearer {guest}"))
            .header(header::CONTENT_TYPE, "application/sdp")
            .body(Body::from(sdp))
            .unwrap()
    };
    let mut flood = String::from("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n");
    for i in 0..800 {
        flood.push_str(&format!(
            "a=candidate:{i} 1 udp 1 10.{}.{}.1 5000 typ host\r\n",
            i / 256,
            i % 256
        ));
    }
    let (status, body) = call(&app, offer(flood)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_sdp");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("more than 25 ICE candidates"),
        "{body}"
    );
    let three_cameras = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n".repeat(3);
    let (status, body) = call(&app, offer(three_cameras)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("3 video"),
        "{body}"
    );
}

#[tokio::test]
async fn cors_preflight_allows_whip_but_never_advertises_patch() {
    let app = app();
    let response = tower::ServiceExt::oneshot(
        app,
        Request::builder()
            .method("OPTIONS")
            .uri("/whip/room")
            .header(header::ORIGIN, "https://player.example")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "authorization,content-type",
            )
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let methods = response
        .headers()
        .get(header::ACCESS_CONTROL_ALLOW_METHODS)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        methods.contains("POST") && methods.contains("DELETE"),
        "{methods}"
    );
    assert!(!methods.contains("PATCH"), "{methods}");
}

/// A preflight from `origin` for `method` on `path`; the allowed origin it got, if any.
async fn preflight(app: axum::Router, path: &str, origin: &str) -> Option<String> {
    let response = tower::ServiceExt::oneshot(
        app,
        Request::builder()
            .method("OPTIONS")
            .uri(path)
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "authorization,content-type",
            )
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    response
        .headers()
        .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[tokio::test]
async fn the_api_answers_only_configured_origins_while_whip_whep_and_flv_answer_any() {
    let evil = "https://evil.example";
    // Default: no origin may drive the API from a web page; WHIP/WHEP/HTTP-FLV stay open.
    let app = app();
    assert_eq!(preflight(app.clone(), "/api/v1/rooms", evil).await, None);
    assert_eq!(
        preflight(app.clone(), "/api/v1/rooms/r/events", evil).await,
        None
    );
    for open in ["/whip/r", "/whep/r/p", "/live/r.flv"] {
        assert_eq!(
            preflight(app.clone(), open, evil).await.as_deref(),
            Some("*"),
            "{open}"
        );
    }
    // A configured studio origin may; others still may not.
    let mut config = crate::config::Config::default();
    config.server.cors_origins = vec!["https://studio.example".into()];
    let app = super::tests::app_with(config);
    assert_eq!(
        preflight(app.clone(), "/api/v1/rooms", "https://studio.example")
            .await
            .as_deref(),
        Some("https://studio.example")
    );
    assert_eq!(preflight(app, "/api/v1/rooms", evil).await, None);
}

#[test]
fn cors_origins_must_be_origins() {
    let mut config = crate::config::Config::default();
    config.server.cors_origins = vec!["https://studio.example/path".into()];
    assert!(config.validate().is_err());
    config.server.cors_origins = vec!["https://studio.example:8443".into()];
    assert!(config.validate().is_ok());
}

mod destinations {
    use std::collections::BTreeMap;

    use axum::body::Body;
    use axum::http::{header, Request, StatusCode};
    use axum::Router;
    use serde_json::{json, Value};

    use super::super::tests::{app, app_with, call, post_json};
    use crate::access::{unix_now, Access, Claims};
    use crate::config::{ApiSecret, AuthConfig, Config, OutputsConfig};

    const KEY: &str = "APIout";
    const SECRET: &str = "outputs-test-secret-0123456789abcdefgh";

    fn keyed(outputs: OutputsConfig) -> (Router, String) {
        let auth = AuthConfig {
            keys: BTreeMap::from([(KEY.to_string(), ApiSecret::new(SECRET))]),
            ..AuthConfig::default()
        };
        let creator = Access::from_config(&auth)
            .mint(&Claims::room_creator(KEY, "ops", unix_now(), 600))
            .unwrap();
        let app = app_with(Config {
            auth,
            outputs,
            ..Config::default()
        });
        (app, creator)
    }

    async fn create(app: &Router, token: Option<&str>, url: &str) -> (StatusCode, Value) {
        let mut request = post_json("/api/v1/rooms", json!({"outputs": [{"url": url}]}));
        if let Some(token) = token {
            request.headers_mut().insert(
                header::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            );
        }
        call(app, request).await
    }

    #[tokio::test]
    async fn a_keyed_server_refuses_internal_destinations_by_address_and_by_name() {
        let (app, creator) = keyed(OutputsConfig::default());
        for (url, class) in [
            ("rtmp://127.0.0.1:6379/live/k", "loopback"),
            ("rtmp://169.254.169.254/live/k", "link-local"),
            ("rtmp://10.0.0.1/live/k", "private"),
            ("rtmp://[::1]/live/k", "loopback"),
            // A name that resolves to loopback.
            ("rtmp://localhost/live/k", "loopback"),
        ] {
            let (status, body) = create(&app, Some(&creator), url).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
            assert_eq!(body["error"], "invalid_output", "{url}");
            let message = body["message"].as_str().unwrap();
            assert!(
                message.contains("outputs[0].url") && message.contains(class),
                "{url}: {message}"
            );
            assert!(
                !message.contains("/live/k"),
                "the stream key is never repeated: {message}"
            );
        }
        // Hosts spelled so that GStreamer would decode them differently, and names that do not
        // resolve (they could resolve to anything later), are refused too.
        for url in [
            "rtmp://127%2E0%2E0%2E1/live/k",
            "rtmp://does-not-exist.invalid/live/k",
        ] {
            let (status, body) = create(&app, Some(&creator), url).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
        }
        // Public destinations (documentation range: not routed, never connected here) pass.
        let (status, body) = create(&app, Some(&creator), "rtmp://203.0.113.9/live/k").await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        // Adding an output later is checked the same way.
        let host = body["host_token"].as_str().unwrap();
        let id = body["room_id"].as_str().unwrap();
        let add = Request::post(format!("/api/v1/rooms/{id}/outputs"))
            .header(header::AUTHORIZATION, format!("Bearer {host}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                json!({"url": "rtmp://192.168.1.10/app/key"}).to_string(),
            ))
            .unwrap();
        let (status, body) = call(&app, add).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("private"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn private_destinations_by_configuration_or_on_the_loopback_demo() {
        let (allowed, creator) = keyed(OutputsConfig {
            allow_private: Some(true),
            ..OutputsConfig::default()
        });
        let (status, body) = create(&allowed, Some(&creator), "rtmp://127.0.0.1/live/k").await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (listed, creator) = keyed(OutputsConfig {
            allow: vec!["localhost".into()],
            allow_private: None,
        });
        let (status, body) = create(&listed, Some(&creator), "rtmp://localhost/live/k").await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, _) = create(&listed, Some(&creator), "rtmp://127.0.0.1/live/k").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "only the listed name");
        // The one-command demo: open, on loopback.
        let (status, body) = create(&app(), None, "rtmp://127.0.0.1:1936/live/k").await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    #[tokio::test]
    async fn the_public_status_shows_no_output_or_mixer_details() {
        let app = app();
        let (_, created) = create(&app, None, "rtmp://127.0.0.1:1936/live/k").await;
        let id = created["room_id"].as_str().unwrap();
        let get = |token: Option<&str>| {
            let mut request = Request::get(format!("/api/v1/rooms/{id}"));
            if let Some(token) = token {
                request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
            }
            request.body(Body::empty()).unwrap()
        };
        let (_, public) = call(&app, get(None)).await;
        assert_eq!(
            public["outputs"][0],
            json!({"output_id": "out0", "state": "idle"})
        );
        assert_eq!(public["mixer"], json!({"state": "none"}), "{public}");
        let (_, host) = call(&app, get(created["host_token"].as_str())).await;
        assert!(host["outputs"][0].get("url").is_some(), "{host}");
        assert!(host["mixer"].get("restarts").is_some(), "{host}");
    }
}

mod lifetime {
    use std::time::{Duration, Instant};

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use serde_json::json;

    use super::super::tests::{app_over, call, post_json, test_rooms};
    use crate::config::{Config, RoomsConfig};

    #[tokio::test]
    async fn unused_rooms_close_and_the_status_shows_when() {
        let config = Config {
            rooms: RoomsConfig {
                empty_timeout_secs: 60,
                departure_timeout_secs: 30,
            },
            ..Config::default()
        };
        let rooms = test_rooms(&config);
        let app = app_over(config, rooms.clone());
        // max_rooms is 3 here: a flood fills it...
        for _ in 0..3 {
            let (status, body) = call(&app, post_json("/api/v1/rooms", json!({}))).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
        let (status, _) = call(&app, post_json("/api/v1/rooms", json!({}))).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let id = rooms.sweep(Instant::now());
        assert!(id.is_empty(), "nothing expired yet: {id:?}");
        let (_, created) = call(&app, post_json("/api/v1/rooms", json!({}))).await;
        assert!(created.get("room_id").is_none(), "still full");

        // ...the status counts down...
        let any = rooms.sweep(Instant::now() + Duration::from_secs(30));
        assert!(any.is_empty());
        // ...and a minute later nobody joined: all three are closed and there is room again.
        let closed = rooms.sweep(Instant::now() + Duration::from_secs(61));
        assert_eq!(closed.len(), 3, "{closed:?}");
        let (status, created) = call(&app, post_json("/api/v1/rooms", json!({}))).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let id = created["room_id"].as_str().unwrap();
        let (_, room) = call(
            &app,
            Request::get(format!("/api/v1/rooms/{id}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(room["lifetime"]["empty_timeout_secs"], 60, "{room}");
        assert_eq!(room["lifetime"]["departure_timeout_secs"], 30, "{room}");
        let left = room["lifetime"]["closes_in_secs"].as_f64().unwrap();
        assert!(left > 50.0 && left <= 60.0, "{room}");
    }
}
