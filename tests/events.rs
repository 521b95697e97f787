//! The room's event stream (`GET /api/v1/rooms/{id}/events`) against a real server with a real
//! WebRTC publisher and mixer: a snapshot on connect, joins, going live with output bitrate and
//! durations that move on their own, the host removing the participant (a `removed` notice and
//! the participant gone), and `ended` when the room ends, after which the stream closes.

mod common;

use std::time::Duration;

use anyhow::Context;
use common::sse::Events;
use common::{Api, Publisher, PublisherOptions, Serve};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn room_events_follow_joins_live_output_removal_and_end() -> anyhow::Result<()> {
    let serve = Serve::start()?;
    let api = Api::new(&serve.base_url);
    let room = api.create_room(json!({"name": "events"})).await?;
    let mut events = Events::open(&api, &room.id, &room.host_token).await?;

    let (name, first) = events
        .next(Duration::from_secs(5))
        .await?
        .context("no first event")?;
    assert_eq!(name, "status");
    assert_eq!(first["participants"], json!([]), "{first}");
    assert_eq!(first["broadcast"], "offline");

    let _publisher = Publisher::start(
        &room.whip_url,
        &room.guest_token,
        PublisherOptions::red_vp8(),
    )?;
    let participant_id = events
        .until(
            "the publisher's tracks",
            Duration::from_secs(10),
            |name, s| {
                let p = &s["participants"][0];
                (name == "status" && p["tracks"].as_array().is_some_and(|t| t.len() == 2))
                    .then(|| p["participant_id"].as_str().unwrap_or_default().to_string())
            },
        )
        .await?;

    let (status, _) = api.go_live(&room).await?;
    assert_eq!(status, 200);
    let first_live = events
        .until(
            "the output live with a bitrate",
            Duration::from_secs(20),
            |_, s| {
                let o = &s["outputs"][0];
                (o["state"] == "live" && o["bitrate_kbps"].as_u64() > Some(0))
                    .then(|| o["live_seconds"].as_f64())
                    .flatten()
            },
        )
        .await?;
    // Nothing else happens in the room: updates keep coming while live so durations move.
    let later = events
        .until("a later periodic update", Duration::from_secs(4), |_, s| {
            s["outputs"][0]["live_seconds"]
                .as_f64()
                .filter(|&t| t >= first_live + 1.0)
        })
        .await?;
    assert!(later > first_live);

    let (status, body) = api
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/rooms/{}/participants/{participant_id}", room.id),
            Some(&room.host_token),
        )
        .await?;
    assert_eq!(status, 204, "{body}");
    let removed = events
        .until(
            "the removed notice",
            Duration::from_secs(5),
            |name, data| (name == "removed").then(|| data.clone()),
        )
        .await?;
    assert_eq!(removed["participant_id"], participant_id.as_str());
    events
        .until("the participant gone", Duration::from_secs(5), |name, s| {
            (name == "status" && s["participants"] == json!([])).then_some(())
        })
        .await?;
    // Removing again: they are gone.
    let (status, _) = api
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/rooms/{}/participants/{participant_id}", room.id),
            Some(&room.host_token),
        )
        .await?;
    assert_eq!(status, 404);

    let (status, _) = api.end_room(&room).await?;
    assert_eq!(status, 204);
    events
        .until("ended", Duration::from_secs(5), |name, _| {
            (name == "ended").then_some(())
        })
        .await?;
    assert!(
        events.next(Duration::from_secs(5)).await?.is_none(),
        "the stream closes after ended"
    );
    Ok(())
}
