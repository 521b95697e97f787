//! The SFU return path through the real server: two `costream publish` participants (red VP8,
//! blue H.264) and Rust WHEP subscribers (`costream_ingest::WhepSubscriber`) over real WebRTC.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, participant_id, Api, Publisher, PublisherOptions, Serve};
use costream_ingest::{IngestError, ReceivedStats, WhepSubscriber};
use serde_json::{json, Value};

fn subscribers(status: &Value, participant: &str) -> Option<u64> {
    status["participants"]
        .as_array()?
        .iter()
        .find(|p| p["participant_id"] == participant)
        .and_then(|p| p["subscribers"].as_u64())
}

/// UDP sockets the process holds (each is one local port).
fn udp_sockets(pid: u32) -> anyhow::Result<usize> {
    let mut inodes = std::collections::HashSet::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            if let Some(inode) = line.split_whitespace().nth(9) {
                inodes.insert(format!("socket:[{inode}]"));
            }
        }
    }
    let mut count = 0;
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let target = std::fs::read_link(fd?.path()).unwrap_or_default();
        if inodes.contains(target.to_string_lossy().as_ref()) {
            count += 1;
        }
    }
    Ok(count)
}

async fn wait_for_media(subscriber: &WhepSubscriber, what: &str) -> anyhow::Result<ReceivedStats> {
    eventually(what, Duration::from_secs(10), || async {
        let stats = subscriber.stats();
        let enough =
            stats.audio.packets >= 25 && stats.video.packets >= 25 && stats.video.keyframes >= 1;
        Ok(enough.then_some(stats))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_one_participants_media_keyframes_on_request_and_lose_it_when_it_leaves(
) -> anyhow::Result<()> {
    let serve = Serve::start()?;
    let api = Api::new(&serve.base_url);
    let room = api.create_room(json!({"name": "sfu"})).await?;
    let red = Publisher::start(
        &room.whip_url,
        &room.guest_token,
        PublisherOptions::red_vp8(),
    )?;
    let blue = Publisher::start(
        &room.whip_url,
        &room.guest_token,
        PublisherOptions {
            color: "blue",
            tone_hz: 880,
            codec: "h264",
            name: "blue",
        },
    )?;
    let status = api.status(&room).await?;
    let red_id = participant_id(&status, "red").expect("red in the room");
    let blue_id = participant_id(&status, "blue").expect("blue in the room");
    assert_eq!(subscribers(&status, &red_id), Some(0), "{status}");
    let whep = |participant: &str| format!("{}/whep/{}/{participant}", serve.base_url, room.id);

    // Wrong token and unknown participant are refused before any WebRTC.
    match WhepSubscriber::connect(&whep(&red_id), "bogus").await {
        Err(IngestError::Http { status: 401, .. }) => {}
        other => anyhow::bail!("bad token: {other:?}"),
    }
    match WhepSubscriber::connect(&whep("nobody"), &room.guest_token).await {
        Err(IngestError::Http { status: 404, body }) => {
            assert!(body.contains("participant_not_found"), "{body}")
        }
        other => anyhow::bail!("unknown participant: {other:?}"),
    }

    // A guest subscribes to red, the host to blue.
    let udp_before = udp_sockets(serve.pid())?;
    let red_sub = WhepSubscriber::connect(&whep(&red_id), &room.guest_token).await?;
    let udp_per_subscription = udp_sockets(serve.pid())?.saturating_sub(udp_before);
    let blue_sub = WhepSubscriber::connect(&whep(&blue_id), &room.host_token).await?;
    let red_stats = wait_for_media(&red_sub, "red's audio and video at its subscriber").await?;
    let blue_stats = wait_for_media(&blue_sub, "blue's audio and video at its subscriber").await?;
    assert_eq!(
        red_stats.video.mime_type.as_deref(),
        Some("video/VP8"),
        "{red_stats:?}"
    );
    assert_eq!(
        blue_stats.video.mime_type.as_deref(),
        Some("video/H264"),
        "{blue_stats:?}"
    );
    assert_eq!(
        red_stats.audio.mime_type.as_deref(),
        Some("audio/opus"),
        "{red_stats:?}"
    );
    assert_ne!(red_stats.video.ssrc, blue_stats.video.ssrc);
    let first_keyframe = |s: &ReceivedStats, sub: &WhepSubscriber| {
        s.video
            .first_keyframe_at
            .map(|t| t.saturating_duration_since(sub.connected_at()))
            .unwrap_or_default()
    };
    let red_first = first_keyframe(&red_stats, &red_sub);
    println!(
        "MEASURE whep_connect_ms={} first_keyframe_after_connect_ms red={} blue={} udp_sockets_per_subscription={udp_per_subscription}",
        red_sub.connect_time().as_millis(),
        red_first.as_millis(),
        first_keyframe(&blue_stats, &blue_sub).as_millis(),
    );
    // The publishers' own keyframe interval is 2 s; the PLI sent on connect beats it.
    assert!(red_first < Duration::from_millis(1500), "{red_first:?}");
    let status = api.status(&room).await?;
    assert_eq!(subscribers(&status, &red_id), Some(1), "{status}");
    assert_eq!(subscribers(&status, &blue_id), Some(1), "{status}");

    // PLIs from the subscriber reach the publisher: asking every 250 ms for 3 s yields far more
    // keyframes than the publisher's 2 s interval would (the server throttles to one per 500 ms).
    let before = red_sub.stats().video.keyframes;
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(3) {
        red_sub.request_keyframe().await?;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let keyframes = red_sub.stats().video.keyframes - before;
    println!("MEASURE keyframes_in_3s_with_pli_every_250ms={keyframes}");
    assert!(keyframes >= 4, "only {keyframes} keyframes in 3 s of PLIs");

    // Guests share one token, so it alone cannot end someone's session: blue's guest token
    // cannot remove red without red's session key (red's own leave below uses it and succeeds).
    let red_session = format!("/whip/{}/{red_id}", room.id);
    for path in [red_session.clone(), format!("{red_session}?key=guessed")] {
        let (code, body) = api
            .send(reqwest::Method::DELETE, &path, Some(&room.guest_token))
            .await?;
        assert_eq!(code, 403, "{path}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or("")
                .contains("own session"),
            "{body}"
        );
    }
    let status = api.status(&room).await?;
    assert!(
        participant_id(&status, "red").is_some(),
        "red was removed: {status}"
    );

    // Red leaves: its subscription is closed by the server (DELETE finds nothing), red's
    // media stops, the status forgets it; blue's subscriber is unaffected.
    red.leave()?;
    eventually(
        "red gone from the status",
        Duration::from_secs(5),
        || async {
            let status = api.status(&room).await?;
            Ok(participant_id(&status, "red").is_none().then_some(()))
        },
    )
    .await?;
    let frozen = red_sub.stats().video.packets;
    let blue_before = blue_sub.stats().video.packets;
    eventually("blue still flowing", Duration::from_secs(5), || async {
        Ok((blue_sub.stats().video.packets > blue_before + 20).then_some(()))
    })
    .await?;
    assert!(
        red_sub.stats().video.packets <= frozen + 5,
        "red still flows after leaving"
    );
    match red_sub.leave().await {
        Err(IngestError::Http { status: 404, .. }) => {}
        other => anyhow::bail!("red's subscription should be gone: {other:?}"),
    }
    let status = api.status(&room).await?;
    assert_eq!(subscribers(&status, &blue_id), Some(1), "{status}");

    // A subscriber that vanishes without DELETE is cleaned up (connection closed or ICE
    // consent failure, whichever the server sees first).
    let vanishing = WhepSubscriber::connect(&whep(&blue_id), &room.guest_token).await?;
    assert_eq!(subscribers(&api.status(&room).await?, &blue_id), Some(2));
    let gone = Instant::now();
    drop(vanishing);
    eventually(
        "the vanished subscriber removed",
        Duration::from_secs(8),
        || async {
            Ok((subscribers(&api.status(&room).await?, &blue_id) == Some(1)).then_some(()))
        },
    )
    .await?;
    println!(
        "MEASURE vanished_subscriber_removed_ms={}",
        gone.elapsed().as_millis()
    );

    blue_sub.leave().await?;
    let status = api.status(&room).await?;
    assert_eq!(subscribers(&status, &blue_id), Some(0), "{status}");
    blue.leave()?;
    Ok(())
}
