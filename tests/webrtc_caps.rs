//! WebRTC capacity bounds on a real serve: peer connections per server (WHIP sessions and WHEP
//! subscriptions together) and WHEP subscriptions per room are capped with `503` +
//! `Retry-After` and a JSON error, and a place comes back when a connection ends.

mod common;

use std::time::Duration;

use common::{eventually, participant_id, Api, Publisher, PublisherOptions, Serve};
use costream_ingest::{IngestError, WhepSubscriber};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_connections_and_subscriptions_are_capped_with_503() -> anyhow::Result<()> {
    let serve = Serve::start_with_config(
        "[limits]\nmax_peer_connections = 3\nmax_subscriptions_per_room = 1\n",
    )?;
    let api = Api::new(&serve.base_url);
    let room = api.create_room(json!({"name": "caps"})).await?;
    let red = Publisher::start(
        &room.whip_url,
        &room.guest_token,
        PublisherOptions::red_vp8(),
    )?;
    api.wait_for_tracks(&room, 2).await?;
    let status = api.status(&room).await?;
    let red_id = participant_id(&status, "red").expect("red joined");
    let whep = format!("{}/whep/{}/{red_id}", serve.base_url, room.id);

    // One subscription per room: the second is refused by the room.
    let first = WhepSubscriber::connect(&whep, &room.guest_token).await?;
    match WhepSubscriber::connect(&whep, &room.guest_token).await {
        Err(IngestError::Http { status: 503, body }) => {
            assert!(body.contains("too_many_subscriptions"), "{body}")
        }
        other => anyhow::bail!("second subscription in the room: {other:?}"),
    }

    // Three peer connections per server: red + the subscription + one more publisher; a fourth
    // publisher is refused at once (not left to hang).
    let blue = Publisher::start(
        &room.whip_url,
        &room.guest_token,
        PublisherOptions {
            color: "blue",
            tone_hz: 660,
            codec: "vp8",
            name: "blue",
        },
    )?;
    let blue_id = eventually("blue in the room", Duration::from_secs(10), || async {
        Ok(participant_id(&api.status(&room).await?, "blue"))
    })
    .await?;
    let blue_whep = format!("{}/whep/{}/{blue_id}", serve.base_url, room.id);
    match WhepSubscriber::connect(&blue_whep, &room.guest_token).await {
        Err(IngestError::Http { status: 503, body }) => {
            assert!(body.contains("at_capacity"), "{body}")
        }
        other => anyhow::bail!("a fourth peer connection: {other:?}"),
    }

    // A connection that ends gives its place back.
    first.leave().await?;
    blue.leave()?;
    let again = eventually("a place freed", Duration::from_secs(10), || async {
        Ok(WhepSubscriber::connect(&whep, &room.guest_token).await.ok())
    })
    .await?;
    again.leave().await?;
    red.leave()?;
    Ok(())
}
