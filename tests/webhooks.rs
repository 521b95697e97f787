//! Webhooks against a real `costream serve`: a receiver in the test gets a room's events in
//! order, each signed the way LiveKit signs webhooks (a JWT in `Authorization` whose `sha256`
//! claim is the body's), and the first one again after answering it `500`.

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use common::{eventually, Api, Publisher, PublisherOptions, Serve, BIN};
use serde_json::{json, Value};
use sha2::Digest;

const KEY: &str = "APIhooks";
const SECRET: &str = "hooks-test-secret-0123456789abcdefghij";

/// What the receiver got: (Authorization, body) per request, failed ones included.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A webhook receiver on loopback that answers `500` to its first request, `200` after.
async fn receiver() -> anyhow::Result<(String, Received)> {
    let received: Received = Arc::default();
    let log = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let log = log.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let mut log = log.lock().expect("log");
                log.push((auth, body.to_vec()));
                if log.len() == 1 {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, received))
}

/// Checks the request is signed as LiveKit signs webhooks and returns its body as JSON.
fn verified(auth: &str, body: &[u8]) -> anyhow::Result<Value> {
    #[derive(serde::Deserialize)]
    struct Claims {
        iss: String,
        sha256: String,
    }
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "iss"]);
    let claims = jsonwebtoken::decode::<Claims>(
        auth,
        &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
        &validation,
    )
    .context("the Authorization JWT does not verify with the API secret")?
    .claims;
    anyhow::ensure!(claims.iss == KEY, "iss {}", claims.iss);
    let digest = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body));
    anyhow::ensure!(
        claims.sha256 == digest,
        "sha256 claim does not match the body"
    );
    Ok(serde_json::from_slice(body)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rooms_events_arrive_signed_in_order_and_after_a_500() -> anyhow::Result<()> {
    let (url, received) = receiver().await?;
    let serve = Serve::start_with_config(&format!(
        "[auth]\nkeys = {{ {KEY} = \"{SECRET}\" }}\n[webhooks]\nurls = [\"{url}\"]\n"
    ))?;
    let api = Api::new(&serve.base_url);
    let creator = Command::new(BIN)
        .args(["token", "create", "--room-create", "--ttl", "10m"])
        .env("COSTREAM_API_KEY", KEY)
        .env("COSTREAM_API_SECRET", SECRET)
        .output()?;
    let creator = String::from_utf8(creator.stdout)?.trim().to_string();
    let created: Value = api
        .http()
        .post(api.url("/api/v1/rooms"))
        .bearer_auth(&creator)
        .json(&json!({"name": "hooked"}))
        .send()
        .await?
        .json()
        .await?;
    let room_id = created["room_id"].as_str().context("room_id")?.to_string();
    let host = created["host_token"].as_str().context("host")?.to_string();
    let whip_url = created["whip_url"].as_str().context("whip")?.to_string();

    let publisher = Publisher::start(
        &whip_url,
        created["guest_token"].as_str().unwrap_or_default(),
        PublisherOptions::red_vp8(),
    )?;
    let live = |method: reqwest::Method| {
        let request = api
            .http()
            .request(method, api.url(&format!("/api/v1/rooms/{room_id}/live")))
            .bearer_auth(&host);
        async move { anyhow::Ok(request.send().await?.status()) }
    };
    assert_eq!(live(reqwest::Method::POST).await?, 200);
    let event_names = || -> Vec<String> {
        received
            .lock()
            .expect("log")
            .iter()
            .filter_map(|(_, body)| serde_json::from_slice::<Value>(body).ok())
            .map(|event| event["event"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    eventually("the output live", Duration::from_secs(30), || async {
        Ok(event_names()
            .iter()
            .any(|e| e == "output_updated")
            .then_some(()))
    })
    .await?;
    // On a keyed server the per-room series are an operator's: room ids guard the rooms.
    let scrape = |token: Option<&str>| {
        let mut request = api.http().get(api.url("/metrics"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { anyhow::Ok(request.send().await?.text().await?) }
    };
    let room_label = format!("room=\"{room_id}\"");
    let public = scrape(None).await?;
    assert!(public.contains("costream_rooms_live 1"), "{public}");
    assert!(
        !public.contains(&room_label),
        "room ids in the public scrape"
    );
    assert!(scrape(Some(&creator)).await?.contains(&room_label));
    assert_eq!(live(reqwest::Method::DELETE).await?, 200);
    tokio::task::block_in_place(|| publisher.leave())?;
    let end = api
        .http()
        .delete(api.url(&format!("/api/v1/rooms/{room_id}")))
        .bearer_auth(&host)
        .send()
        .await?;
    assert_eq!(end.status(), 204);
    eventually("room_finished", Duration::from_secs(10), || async {
        Ok(event_names()
            .iter()
            .any(|e| e == "room_finished")
            .then_some(()))
    })
    .await?;

    let log = received.lock().expect("log").clone();
    let events: Vec<Value> = log
        .iter()
        .map(|(auth, body)| verified(auth, body))
        .collect::<anyhow::Result<_>>()?;
    // The first was answered 500 and came again, the same event (same id).
    assert_eq!(events[0]["event"], "room_started");
    assert_eq!(
        events[0]["id"], events[1]["id"],
        "the retry is the same event"
    );
    let delivered = &events[1..];
    for event in delivered {
        assert_eq!(event["room"]["name"], room_id.as_str(), "{event}");
        assert!(event["createdAt"].as_u64() > Some(0), "{event}");
    }
    let names: Vec<&str> = delivered
        .iter()
        .map(|e| e["event"].as_str().unwrap_or_default())
        .collect();
    let position = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .with_context(|| format!("no {name} in {names:?}"))
    };
    let order = [
        "room_started",
        "participant_joined",
        "broadcast_started",
        "output_updated",
        "broadcast_ended",
        "participant_left",
        "room_finished",
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|name| position(name))
        .collect::<anyhow::Result<_>>()?;
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "out of order: {names:?}"
    );
    let joined = &delivered[positions[1]];
    assert_eq!(joined["participant"]["name"], "red", "{joined}");
    assert!(joined["participant"]["identity"]
        .as_str()
        .is_some_and(|id| id.starts_with("guest-")));
    let output = &delivered[positions[3]];
    assert_eq!(output["output"]["output_id"], "origin", "{output}");
    let ids: std::collections::HashSet<&str> =
        delivered.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids.len(), delivered.len(), "every event has its own id");
    Ok(())
}
