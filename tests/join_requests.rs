//! Viewers asking to join the co-stream (issue 16 item 1, the API): a real server, a viewer
//! without any token asking and following its request as Server-Sent Events, the host seeing it
//! in its event stream and the room status and accepting it, and the viewer then publishing
//! over WHIP (a real `costream publish`) with the personal token it was handed. Declines, the
//! cool-down, the cap on guests, the switch, secrets and the per-address limit.

mod common;

use std::time::Duration;

use common::sse::Events;
use common::{eventually, Api, Publisher, PublisherOptions, Room, Serve};
use serde_json::{json, Value};

async fn ask(api: &Api, room: &Room, name: &str) -> anyhow::Result<(u16, Value)> {
    let response = api
        .http()
        .post(api.url(&format!("/api/v1/rooms/{}/requests", room.id)))
        .json(&json!({ "name": name }))
        .send()
        .await?;
    Ok((response.status().as_u16(), response.json().await?))
}

async fn host_post(
    api: &Api,
    room: &Room,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut request = api
        .http()
        .post(api.url(&format!("/api/v1/rooms/{}/{path}", room.id)))
        .bearer_auth(&room.host_token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

async fn withdraw(api: &Api, room: &Room, asked: &Value) -> anyhow::Result<()> {
    let path = format!(
        "/api/v1/rooms/{}/requests/{}",
        room.id,
        asked["request_id"].as_str().unwrap_or_default()
    );
    let response = api
        .http()
        .delete(api.url(&path))
        .bearer_auth(asked["secret"].as_str().unwrap_or_default())
        .send()
        .await?;
    anyhow::ensure!(response.status() == 204, "withdraw: {}", response.status());
    Ok(())
}

async fn settings(api: &Api, room: &Room, body: Value) -> anyhow::Result<Value> {
    let response = api
        .http()
        .put(api.url(&format!("/api/v1/rooms/{}/requests", room.id)))
        .bearer_auth(&room.host_token)
        .json(&body)
        .send()
        .await?;
    anyhow::ensure!(response.status() == 200, "settings: {}", response.status());
    Ok(response.json().await?)
}

async fn follow(api: &Api, room: &Room, asked: &Value) -> anyhow::Result<Events> {
    let path = format!(
        "/api/v1/rooms/{}/requests/{}/events",
        room.id,
        asked["request_id"].as_str().unwrap_or_default()
    );
    Events::open_path(api, &path, asked["secret"].as_str().unwrap_or_default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_asks_the_host_accepts_and_the_viewer_publishes_with_its_own_token(
) -> anyhow::Result<()> {
    let serve = Serve::start_with_config("[limits]\njoin_requests_per_minute_per_ip = 600\n")?;
    let api = Api::new(&serve.base_url);
    let room = api.create_room(json!({"name": "apply"})).await?;
    let mut host_events = Events::open(&api, &room.id, &room.host_token).await?;
    let mut guest_events = Events::open(&api, &room.id, &room.guest_token).await?;

    // A viewer asks, with no token at all; the host hears of it at once.
    let (code, asked) = ask(&api, &room, "  Viewer Vee ").await?;
    assert_eq!(code, 201, "{asked}");
    let request_id = asked["request_id"].as_str().unwrap().to_string();
    assert!(asked["secret"].as_str().is_some_and(|s| s.len() >= 24));
    let notice = host_events
        .until("the request", Duration::from_secs(5), |name, data| {
            (name == "join_request").then(|| data.clone())
        })
        .await?;
    assert_eq!(notice["request_id"], request_id.as_str());
    assert_eq!(notice["name"], "Viewer Vee");
    // The room status lists it for the host only; anyone sees whether one may ask.
    let status = api.status(&room).await?;
    assert_eq!(
        status["join_requests"]["pending"][0]["name"], "Viewer Vee",
        "{status}"
    );
    let public: Value = api
        .http()
        .get(api.url(&format!("/api/v1/rooms/{}", room.id)))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        public["join_requests"],
        json!({"enabled": true}),
        "{public}"
    );
    // Guests' event streams never carry viewers' names.
    let leaked = guest_events
        .until("a request notice", Duration::from_secs(2), |name, _| {
            name.starts_with("join_request").then_some(())
        })
        .await;
    assert!(leaked.is_err(), "a guest's stream carried a join request");

    // The viewer follows its request with the secret, and nothing else.
    let wrong = api
        .http()
        .get(api.url(&format!(
            "/api/v1/rooms/{}/requests/{request_id}/events",
            room.id
        )))
        .bearer_auth("not-the-secret")
        .send()
        .await?;
    assert_eq!(wrong.status(), 401);
    let mut viewer = follow(&api, &room, &asked).await?;
    let (name, data) = viewer
        .next(Duration::from_secs(5))
        .await?
        .expect("an event");
    assert_eq!(
        (name.as_str(), data["state"].as_str()),
        ("pending", Some("pending"))
    );

    // The host accepts: the viewer gets its own guest token and joins with it.
    let (code, accepted) =
        host_post(&api, &room, &format!("requests/{request_id}/accept"), None).await?;
    assert_eq!(code, 200, "{accepted}");
    let identity = accepted["identity"].as_str().unwrap().to_string();
    let (name, data) = viewer
        .next(Duration::from_secs(5))
        .await?
        .expect("an event");
    assert_eq!(name, "accepted", "{data}");
    assert_eq!(data["identity"], identity.as_str());
    let token = data["token"].as_str().unwrap().to_string();
    let whip_url = data["whip_url"].as_str().unwrap().to_string();
    assert!(
        viewer.next(Duration::from_secs(5)).await?.is_none(),
        "the stream closes"
    );
    let (code, _) = host_post(&api, &room, &format!("requests/{request_id}/accept"), None).await?;
    assert_eq!(code, 409, "accepting twice");
    assert!(
        withdraw(&api, &room, &asked).await.is_err(),
        "an accepted request cannot be withdrawn"
    );
    let _on_air = Publisher::start(&whip_url, &token, PublisherOptions::red_vp8())?;
    let joined = eventually(
        "the viewer in the room",
        Duration::from_secs(20),
        || async {
            let status = api.status(&room).await?;
            let found = status["participants"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["identity"] == identity.as_str())
                .cloned();
            Ok(found)
        },
    )
    .await?;
    assert_eq!(joined["role"], "guest", "{joined}");

    // Two requests of one address wait at once, not more.
    let (_, first) = ask(&api, &room, "One").await?;
    let (_, second) = ask(&api, &room, "Two").await?;
    let (code, third) = ask(&api, &room, "Three").await?;
    assert_eq!(
        (code, third["error"].as_str()),
        (429, Some("already_waiting")),
        "{third}"
    );
    for asked in [&first, &second] {
        withdraw(&api, &room, asked).await?;
    }

    // A cap of one guest on air: the next accept is refused with the reason.
    settings(&api, &room, json!({"enabled": true, "max_guests": 1})).await?;
    let (code, second) = ask(&api, &room, "Second").await?;
    assert_eq!(code, 201, "{second}");
    let second_id = second["request_id"].as_str().unwrap();
    let (code, refused) =
        host_post(&api, &room, &format!("requests/{second_id}/accept"), None).await?;
    assert_eq!(
        (code, refused["error"].as_str()),
        (409, Some("max_guests_reached")),
        "{refused}"
    );

    // Declined: the viewer is told, and its address waits before asking again.
    let mut second_events = follow(&api, &room, &second).await?;
    second_events.next(Duration::from_secs(5)).await?;
    let (code, _) = host_post(&api, &room, &format!("requests/{second_id}/decline"), None).await?;
    assert_eq!(code, 204);
    let (name, data) = second_events
        .next(Duration::from_secs(5))
        .await?
        .expect("an event");
    assert_eq!(name, "declined", "{data}");
    let (code, cooling) = ask(&api, &room, "Second again").await?;
    assert_eq!(
        (code, cooling["error"].as_str()),
        (429, Some("cooling_down")),
        "{cooling}"
    );

    // Requests off: refused with the reason; unknown requests are 404.
    let view = settings(&api, &room, json!({"enabled": false, "max_guests": null})).await?;
    assert_eq!(view["enabled"], false);
    let (code, off) = ask(&api, &room, "Third").await?;
    assert_eq!(
        (code, off["error"].as_str()),
        (403, Some("requests_off")),
        "{off}"
    );
    let (code, _) = host_post(&api, &room, "requests/rq-nope/decline", None).await?;
    assert_eq!(code, 409);
    // Only the host decides.
    let by_guest = api
        .http()
        .post(api.url(&format!(
            "/api/v1/rooms/{}/requests/{request_id}/accept",
            room.id
        )))
        .bearer_auth(&room.guest_token)
        .send()
        .await?;
    assert_eq!(by_guest.status(), 403);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_requests_is_refused_and_a_viewer_may_withdraw() -> anyhow::Result<()> {
    let serve = Serve::start()?;
    let api = Api::new(&serve.base_url);
    let room = api.create_room(json!({"name": "flood"})).await?;
    let (code, asked) = ask(&api, &room, "Early").await?;
    assert_eq!(code, 201, "{asked}");
    // Withdrawn with its own secret only.
    let path = format!(
        "/api/v1/rooms/{}/requests/{}",
        room.id,
        asked["request_id"].as_str().unwrap()
    );
    let wrong = api
        .http()
        .delete(api.url(&path))
        .bearer_auth("guess")
        .send()
        .await?;
    assert_eq!(wrong.status(), 401);
    let withdrawn = api
        .http()
        .delete(api.url(&path))
        .bearer_auth(asked["secret"].as_str().unwrap())
        .send()
        .await?;
    assert_eq!(withdrawn.status(), 204);
    assert_eq!(
        api.status(&room).await?["join_requests"]["pending"],
        json!([])
    );
    // Bad names are refused before anything is kept.
    let (code, bad) = ask(&api, &room, "   ").await?;
    assert_eq!((code, bad["error"].as_str()), (400, Some("invalid_name")));
    // One address asking over and over is cut off (`limits.join_requests_per_minute_per_ip`).
    let mut limited = None;
    for i in 0..20 {
        let (code, body) = ask(&api, &room, &format!("Flood {i}")).await?;
        if code == 429 {
            limited = Some(body);
            break;
        }
        assert_eq!(code, 201, "{body}");
        withdraw(&api, &room, &body).await?;
    }
    let limited = limited.expect("20 requests a minute from one address went through");
    assert_eq!(limited["error"], "rate_limited", "{limited}");
    Ok(())
}
