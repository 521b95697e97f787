//! Going live through the mixer seam, without processes: the room admits by cost, launches a
//! mixer through its backend (here the fake one) and speaks to it only through the link.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use costream_mixer::control::Command;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::tests::{app_over, call, post_json, with_token};
use crate::config::Config;
use crate::pool::fake::FakeMixers;
use crate::room::{RoomRuntime, Rooms};

async fn room(app: &axum::Router, key: &str) -> (String, String) {
    let body = json!({"outputs": [{"url": format!("rtmp://cdn.example/live/{key}")}]});
    let (status, created) = call(app, post_json("/api/v1/rooms", body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    (
        created["room_id"].as_str().unwrap().to_string(),
        created["host_token"].as_str().unwrap().to_string(),
    )
}

async fn status_of(app: &axum::Router, id: &str, host: &str) -> Value {
    call(app, with_token("GET", &format!("/api/v1/rooms/{id}"), host))
        .await
        .1
}

#[tokio::test]
async fn go_live_launches_through_the_backend_and_admission_refuses_with_retry_after() {
    let config = Config::default();
    // 0.5 cores: one default 720p room (0.47 with its reserved inputs) fits, a second does not.
    let mixers = FakeMixers::new(500);
    let rooms = Arc::new(Rooms::new(
        RoomRuntime {
            pool: Arc::new(mixers.clone()),
            stop_grace: Duration::from_millis(50),
            recordings: None,
        },
        3,
        Arc::new(crate::access::Access::from_config(&config.auth)),
    ));
    let app = app_over(config, rooms);
    let (a, host_a) = room(&app, "KEY_A").await;
    let (b, host_b) = room(&app, "KEY_B").await;

    let live_a = format!("/api/v1/rooms/{a}/live");
    let (status, body) = call(&app, with_token("POST", &live_a, &host_a)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(mixers.launches(), 1);
    // The mixer got Start first, with the room's output (its key included: it must push there).
    let commands = mixers.commands(&a);
    match commands.first() {
        Some(Command::Start { outputs, .. }) => {
            assert_eq!(outputs.len(), 1);
            assert_eq!(outputs[0].url, "rtmp://cdn.example/live/KEY_A");
        }
        other => panic!("first command {other:?}"),
    }
    // Its Ready came back through the link: the room shows the mixer running.
    let mut running = false;
    for _ in 0..100 {
        if status_of(&app, &a, &host_a).await["mixer"]["state"] == "running" {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(running, "{}", status_of(&app, &a, &host_a).await);
    let status = status_of(&app, &a, &host_a).await;
    assert!(
        (status["cost"].as_f64().unwrap() - 0.47).abs() < 0.01,
        "{status}"
    );

    // The second room does not fit: 503 over_capacity with Retry-After; the first is untouched.
    let live_b = format!("/api/v1/rooms/{b}/live");
    let response = app
        .clone()
        .oneshot(with_token("POST", &live_b, &host_b))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    assert_eq!(mixers.launches(), 1);
    assert!(mixers.commands(&b).is_empty());

    // Stopping A shuts its mixer down and frees the capacity: B goes live.
    let (status, _) = call(&app, with_token("DELETE", &live_a, &host_a)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mixers.commands(&a).last(), Some(&Command::Shutdown));
    let (status, body) = call(&app, with_token("POST", &live_b, &host_b)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(mixers.launches(), 2);
}
