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
            .contains("800 ICE candidates"),
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
