//! The room's event stream (`GET /api/v1/rooms/{id}/events`) against a real server with a real
//! WebRTC publisher and mixer: a snapshot on connect, joins, going live with output bitrate and
//! durations that move on their own, the host removing the participant (a `removed` notice and
//! the participant gone), and `ended` when the room ends, after which the stream closes.

mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use common::{Api, Publisher, PublisherOptions, Serve};
use serde_json::{json, Value};

/// Reads Server-Sent Events off a streaming response.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn open(api: &Api, room_id: &str, token: &str) -> anyhow::Result<Self> {
        let response = api
            .http()
            .get(api.url(&format!("/api/v1/rooms/{room_id}/events")))
            .bearer_auth(token)
            // The client's overall timeout would cut a long stream; each read has its own below.
            .timeout(Duration::from_secs(120))
            .send()
            .await?;
        if response.status() != 200 {
            bail!("events: {}", response.status());
        }
        Ok(Self {
            response,
            buffer: String::new(),
        })
    }

    /// The next event as (name, data); None when the stream ended.
    async fn next(&mut self, timeout: Duration) -> anyhow::Result<Option<(String, Value)>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = "message".to_string();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if data.is_empty() {
                    continue; // keep-alive comment
                }
                return Ok(Some((name, serde_json::from_str(&data)?)));
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .context("no event in time")??;
            match chunk {
                Some(bytes) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                None => return Ok(None),
            }
        }
    }

    /// Skips events until `pick` returns Some for one.
    async fn until<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pick: impl FnMut(&str, &Value) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some((name, data)) = self
                .next(left)
                .await
                .with_context(|| format!("waiting for {what}"))?
            else {
                bail!("the stream ended while waiting for {what}");
            };
            if let Some(found) = pick(&name, &data) {
                return Ok(found);
            }
        }
    }
}

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
