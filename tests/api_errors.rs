//! Bad input gets a clear JSON error and breaks nothing: against a real `costream serve`.

mod common;

use std::time::Duration;

use common::{eventually, Api, Publisher, PublisherOptions, Serve};
use reqwest::Method;
use serde_json::{json, Value};

async fn post_sdp(
    api: &Api,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> anyhow::Result<(u16, Value)> {
    let mut request = api
        .http()
        .post(api.url(path))
        .header("content-type", "application/sdp")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

fn assert_error(code: u16, body: &Value, expected_code: u16, error: &str) {
    assert_eq!(code, expected_code, "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| m.len() > 10),
        "message a person can act on: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_actionable_errors_and_the_server_keeps_working() -> anyhow::Result<()> {
    let mut serve = Serve::start_capturing_log()?;
    let api = Api::new(&serve.base_url);
    let room = api
        .create_room(json!({"outputs": [{"url": "rtmp://127.0.0.1:1/live/never"}]}))
        .await?;
    let whip = format!("/whip/{}", room.id);
    let live = format!("/api/v1/rooms/{}/live", room.id);

    // Unknown room.
    let (code, body) = api.send(Method::GET, "/api/v1/rooms/nope", None).await?;
    assert_error(code, &body, 404, "room_not_found");
    let (code, body) = post_sdp(
        &api,
        "/whip/nope",
        Some(&room.guest_token),
        b"v=0\r\n".to_vec(),
    )
    .await?;
    assert_error(code, &body, 404, "room_not_found");

    // Missing, wrong and insufficient tokens.
    let (code, body) = post_sdp(&api, &whip, None, b"v=0\r\n".to_vec()).await?;
    assert_error(code, &body, 401, "unauthorized");
    let (code, body) = post_sdp(&api, &whip, Some("not-a-token"), b"v=0\r\n".to_vec()).await?;
    assert_error(code, &body, 401, "unauthorized");
    let (code, body) = api.send(Method::POST, &live, Some("wrong")).await?;
    assert_error(code, &body, 401, "unauthorized");
    let (code, body) = api
        .send(Method::POST, &live, Some(&room.guest_token))
        .await?;
    assert_error(code, &body, 403, "forbidden");
    let (code, body) = api
        .send(
            Method::DELETE,
            &format!("/api/v1/rooms/{}", room.id),
            Some(&room.guest_token),
        )
        .await?;
    assert_error(code, &body, 403, "forbidden");

    // Malformed SDP of several kinds.
    for garbage in [
        b"".to_vec(),
        b"hello".to_vec(),
        b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x41],
    ] {
        let (code, body) = post_sdp(&api, &whip, Some(&room.guest_token), garbage).await?;
        assert_eq!(code, 400, "{body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }

    // Oversized bodies.
    let (code, body) = post_sdp(&api, &whip, Some(&room.guest_token), vec![b'a'; 200_000]).await?;
    assert_error(code, &body, 413, "body_too_large");
    let response = api
        .http()
        .post(api.url("/api/v1/rooms"))
        .header("content-type", "application/json")
        .body(format!("{{\"name\": \"{}\"}}", "x".repeat(200_000)))
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 413);

    // Malformed JSON and invalid room settings name what is wrong.
    let response = api
        .http()
        .post(api.url("/api/v1/rooms"))
        .header("content-type", "application/json")
        .body("{\"outputs\": [")
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await?;
    assert_eq!(body["error"], "invalid_json", "{body}");
    for (bad, needle) in [
        (
            json!({"outputs": [{"url": "http://x/live/k"}]}),
            "outputs[0].url",
        ),
        (json!({"video": {"width": 1281}}), "width"),
        (json!({"colour": "red"}), "colour"),
    ] {
        let response = api
            .http()
            .post(api.url("/api/v1/rooms"))
            .json(&bad)
            .send()
            .await?;
        assert_eq!(response.status().as_u16(), 400, "{bad}");
        let body: Value = response.json().await?;
        assert!(
            body["message"].as_str().is_some_and(|m| m.contains(needle)),
            "{body}"
        );
    }

    // An unreachable RTMP server: the output fails with a reason, the room stays usable.
    let (code, body) = api
        .send(Method::POST, &live, Some(&room.host_token))
        .await?;
    assert_eq!(code, 200, "{body}");
    let failed = eventually("output failed", Duration::from_secs(15), || async {
        let status = api.status(&room).await?;
        Ok((status["outputs"][0]["state"] == "failed").then_some(status))
    })
    .await?;
    let reason = failed["outputs"][0]["reason"].as_str().unwrap_or("");
    assert!(!reason.is_empty(), "{failed}");
    assert!(
        !failed.to_string().contains("never"),
        "stream key leaked: {failed}"
    );

    // ...a publisher can still join, the host can stop, and other rooms are unaffected.
    let publisher = Publisher::start(
        &api.url(&whip),
        &room.guest_token,
        PublisherOptions {
            color: "green",
            tone_hz: 300,
            codec: "vp8",
            name: "g",
        },
    )?;
    let (code, body) = api
        .send(Method::DELETE, &live, Some(&room.host_token))
        .await?;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["broadcast"], "offline", "{body}");
    let other = api.create_room(json!({})).await?;
    assert_eq!(api.status(&other).await?["broadcast"], "offline");
    publisher.leave()?;
    let status = api.status(&room).await?;
    assert_eq!(
        status["participants"].as_array().map(Vec::len),
        Some(0),
        "{status}"
    );

    // WHIP DELETE of an unknown session and trickle PATCH.
    let (code, body) = api
        .send(
            Method::DELETE,
            &format!("{whip}/nobody"),
            Some(&room.guest_token),
        )
        .await?;
    assert_error(code, &body, 404, "participant_not_found");
    let (code, _) = api
        .send(
            Method::PATCH,
            &format!("{whip}/nobody"),
            Some(&room.guest_token),
        )
        .await?;
    assert_eq!(code, 405);

    // A room created without outputs pushes to the built-in origin, so it can go live (with the
    // origin disabled it is refused with 409 `no_outputs`: see `src/api/tests.rs`).
    let (code, body) = api
        .send(
            Method::POST,
            &format!("/api/v1/rooms/{}/live", other.id),
            Some(&other.host_token),
        )
        .await?;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["outputs"][0]["origin"], true, "{body}");

    // A clean shutdown on SIGTERM. SIGTERM drains: serve waits for live rooms to end (see
    // tests/pool.rs), so end the live one first.
    let (code, _) = api
        .send(
            Method::DELETE,
            &format!("/api/v1/rooms/{}", other.id),
            Some(&other.host_token),
        )
        .await?;
    assert_eq!(code, 204);
    let status = serve.terminate()?;
    assert!(status.success(), "{status}");

    // Secrets never reach the logs (serve's and the mixer's, at debug level).
    let log = serve.log()?;
    assert!(log.contains("room created"), "log was captured");
    for secret in [
        room.host_token.as_str(),
        room.guest_token.as_str(),
        other.host_token.as_str(),
        "live/never",
    ] {
        assert!(!log.contains(secret), "secret {secret:?} in the log");
    }
    Ok(())
}
