//! Durable rooms (issue 15, one node): `kill -9` serve, start it again on the same data
//! directory, and every room is back with the same id, settings, guest list and broadcast,
//! and the tokens handed out before the crash still work. Real processes throughout. On a
//! fleet (`cluster.redis_url`) the records live in Redis instead, stream keys sealed there too.

mod common;

use std::time::Duration;

use anyhow::Context;
use common::{eventually, Api, Publisher, PublisherOptions, Room, Serve};
use costream_testkit::Redis;
use serde_json::{json, Value};

/// A stream key nobody could mistake for anything else: it must never reach the disk.
const STREAM_KEY: &str = "SECRETKEY123";
const PNG_1X1: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";

async fn put(api: &Api, room: &Room, what: &str, body: Value) -> anyhow::Result<()> {
    let response = api
        .http()
        .put(api.url(&format!("/api/v1/rooms/{}/{what}", room.id)))
        .bearer_auth(&room.host_token)
        .json(&body)
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == 200,
        "PUT {what}: {}",
        response.status()
    );
    Ok(())
}

/// A WHIP offer with `token`: only the status (the token is checked before the SDP matters).
async fn whip_status(api: &Api, room_id: &str, token: &str) -> anyhow::Result<u16> {
    let response = api
        .http()
        .post(api.url(&format!("/whip/{room_id}")))
        .bearer_auth(token)
        .header("content-type", "application/sdp")
        .body("v=0\r\n")
        .send()
        .await?;
    Ok(response.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_survive_kill_9_with_their_links_and_settings() -> anyhow::Result<()> {
    let data_dir = common::temp_data_dir();
    let result = scenario(&data_dir).await;
    let _ = std::fs::remove_dir_all(&data_dir);
    result
}

async fn scenario(data_dir: &std::path::Path) -> anyhow::Result<()> {
    let mut serve = Serve::start_with_data_dir(data_dir)?;
    let api = Api::new(&serve.base_url);
    // An open loopback server allows private destinations: this one refuses connections,
    // which is fine (the output retries; the room stays live).
    let room = api
        .create_room(json!({
            "name": "Durable show",
            "outputs": [{"url": format!("rtmp://127.0.0.1:1/live/{STREAM_KEY}")}],
        }))
        .await?;
    put(&api, &room, "layout", json!({"type": "pip"})).await?;
    put(
        &api,
        &room,
        "look",
        json!({"labels": true, "background": "#1e2a38", "title": "Back soon", "logo": PNG_1X1}),
    )
    .await?;
    let (status, _) = api
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/rooms/{}/links/guest", room.id),
            Some(&room.host_token),
        )
        .await?;
    assert_eq!(status, 200, "revoke the guest link");
    let (status, body) = api.go_live(&room).await?;
    assert_eq!(status, 200, "go live: {body}");
    // A recording in progress: it goes on after the restart, in the next part.
    let (status, body) = api
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/rooms/{}/recordings", room.id),
            Some(&room.host_token),
        )
        .await?;
    assert_eq!(status, 201, "record: {body}");
    let session = body["session_id"]
        .as_str()
        .context("session_id")?
        .to_string();
    let session = &session;
    // A second room, offline, with its guest link; a third, ended: it must stay gone.
    let quiet = api.create_room(json!({"name": "Quiet"})).await?;
    let ended = api.create_room(json!({"name": "Ended"})).await?;
    let (status, _) = api.end_room(&ended).await?;
    assert_eq!(status, 204);
    let before = api.status(&room).await?;
    assert_eq!(before["broadcast"], "live", "{before}");

    // Saves are asynchronous: wait until the newest (live) record is on disk. There is no API
    // for that, so read the file until the room's record says live.
    let db = data_dir.join("rooms.redb");
    eventually("the live record on disk", Duration::from_secs(10), || {
        let db = db.clone();
        async move {
            let bytes = std::fs::read(&db)?;
            let text = String::from_utf8_lossy(&bytes);
            let saved = text.contains("\"live\":true") && text.contains("Quiet");
            Ok((saved && text.contains(session.as_str())).then_some(()))
        }
    })
    .await?;

    serve.signal("KILL")?;
    serve.wait_exit(Duration::from_secs(10))?;
    drop(serve);

    let bytes = std::fs::read(&db).context("the room database")?;
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains("Durable show"),
        "the records are in {}",
        db.display()
    );
    assert!(
        !text.contains(STREAM_KEY),
        "the stream key is in the database file in plain text"
    );

    let serve = Serve::start_with_data_dir(data_dir)?;
    let api = Api::new(&serve.base_url);

    // The same room, with the host token handed out before the crash.
    let after = api.status(&room).await?;
    assert_eq!(after["room_id"], room.id.as_str());
    assert_eq!(after["name"], "Durable show");
    assert_eq!(after["layout"]["type"], "pip", "{after}");
    assert_eq!(
        after["look"],
        json!({"labels": true, "background": "#1e2a38", "title": "Back soon", "has_logo": true})
    );
    let outputs = after["outputs"].as_array().context("outputs")?;
    assert_eq!(outputs.len(), 1, "{after}");
    assert_eq!(outputs[0]["output_id"], "out0");
    assert_eq!(outputs[0]["url"], "rtmp://127.0.0.1:1/live/***");
    assert!(!after.to_string().contains(STREAM_KEY));
    assert_eq!(
        after["broadcast"], "live",
        "live again after the restart: {after}"
    );
    // The recording goes on: same session, part 2 (part 1 was the killed serve's mixer's).
    let recording = eventually(
        "the recording going on",
        Duration::from_secs(15),
        || async {
            let rec = api.status(&room).await?["recording"].clone();
            Ok((rec["state"] == "recording").then_some(rec))
        },
    )
    .await?;
    assert_eq!(recording["session_id"], session.as_str(), "{recording}");
    assert_eq!(
        recording["recording_id"],
        format!("{session}-2").as_str(),
        "{recording}"
    );
    let (status, parts) = api
        .send(
            reqwest::Method::GET,
            &format!("/api/v1/rooms/{}/recordings", room.id),
            Some(&room.host_token),
        )
        .await?;
    assert_eq!(status, 200);
    let ids: Vec<&str> = parts
        .as_array()
        .context("parts")?
        .iter()
        .filter_map(|p| p["recording_id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [format!("{session}-1"), format!("{session}-2")],
        "{parts}"
    );

    let (status, links) = api
        .send(
            reqwest::Method::GET,
            &format!("/api/v1/rooms/{}/links", room.id),
            Some(&room.host_token),
        )
        .await?;
    assert_eq!(status, 200);
    assert_eq!(links["guest_link_revoked"], true, "{links}");
    assert!(links.get("guest_url").is_none(), "{links}");
    assert_eq!(
        whip_status(&api, &room.id, &room.guest_token).await?,
        401,
        "the revoked guest link stays revoked"
    );

    // The other rooms: the offline one is back (offline, its guest link still good), the ended
    // one is not.
    let quiet_after = api.status(&quiet).await?;
    assert_eq!(quiet_after["name"], "Quiet");
    assert_eq!(quiet_after["broadcast"], "offline");
    assert_ne!(whip_status(&api, &quiet.id, &quiet.guest_token).await?, 401);
    let (status, _) = api
        .send(
            reqwest::Method::GET,
            &format!("/api/v1/rooms/{}", ended.id),
            Some(&ended.host_token),
        )
        .await?;
    assert_eq!(status, 404, "an ended room does not come back");

    // A WHIP join with the old host token: media flows into the restored room.
    let whip_url = api.url(&format!("/whip/{}", room.id));
    let publisher = Publisher::start(&whip_url, &room.host_token, PublisherOptions::red_vp8())?;
    api.wait_for_tracks(&room, 2).await?;
    publisher.leave()?;
    Ok(())
}

/// `costream serve` on `data_dir` that is expected to stop at startup; its stderr.
fn refused_start(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let output = std::process::Command::new(common::BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--origin-rtmp-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()?;
    anyhow::ensure!(!output.status.success(), "serve started on {data_dir:?}");
    Ok(String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_or_busy_data_dir_stops_serve_naming_it() -> anyhow::Result<()> {
    let base = common::temp_data_dir();
    std::fs::create_dir_all(&base)?;
    let file = base.join("not-a-dir");
    std::fs::write(&file, "x")?;
    let message = refused_start(&file.join("data"))?;
    assert!(message.contains(&file.display().to_string()), "{message}");

    // One data directory belongs to one serve.
    let dir = base.join("shared");
    let _first = Serve::start_with_data_dir(&dir)?;
    let message = refused_start(&dir)?;
    assert!(message.contains(&dir.display().to_string()), "{message}");
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}

/// A fleet's serve keeps its rooms in Redis: after `kill -9` a new serve on the same Redis has
/// them back (same id, name, output, tokens), Redis never holds a stream key in the clear, and
/// a Redis that restarts empty gets every room written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_fleet_rooms_survive_kill_9_in_redis_with_stream_keys_sealed() -> anyhow::Result<()> {
    let mut redis = Redis::start()?;
    let data_dir = common::temp_data_dir();
    let config = format!("[cluster]\nredis_url = \"{}\"\n", redis.url());
    let result = async {
        let mut serve = Serve::start_with_config_and_data_dir(&config, &data_dir)?;
        let api = Api::new(&serve.base_url);
        let room = api
            .create_room(json!({
                "name": "Fleet show",
                "outputs": [{"url": format!("rtmp://127.0.0.1:1/live/{STREAM_KEY}")}],
            }))
            .await?;
        put(&api, &room, "layout", json!({"type": "pip"})).await?;
        let stored = eventually("the record in Redis", Duration::from_secs(10), || async {
            let all = redis.command("HGETALL costream:rooms")?;
            Ok((all.contains(&room.id) && all.contains("pip")).then_some(all))
        })
        .await?;
        assert!(stored.contains("Fleet show"), "{stored}");
        assert!(
            !stored.contains(STREAM_KEY),
            "a stream key in Redis: {stored}"
        );
        assert!(
            !data_dir.join("rooms.redb").exists(),
            "on a fleet the records are not in the data directory"
        );

        // Redis restarts empty (the fleet runs it without persistence): serve writes its
        // rooms again by itself.
        redis.restart()?;
        eventually(
            "the record back in Redis",
            Duration::from_secs(15),
            || async {
                let all = redis.command("HGETALL costream:rooms").unwrap_or_default();
                Ok(all.contains(&room.id).then_some(()))
            },
        )
        .await?;

        serve.signal("KILL")?;
        serve.wait_exit(Duration::from_secs(10))?;
        let serve = Serve::start_with_config_and_data_dir(&config, &data_dir)?;
        let api = Api::new(&serve.base_url);
        let status = api.status(&room).await?;
        assert_eq!(status["name"], "Fleet show", "{status}");
        assert_eq!(status["layout"]["type"], "pip", "{status}");
        let url = status["outputs"][0]["url"].as_str().unwrap_or("");
        assert!(
            url.starts_with("rtmp://127.0.0.1:1/live/") && !url.contains(STREAM_KEY),
            "the output is back, shown redacted: {url}"
        );
        // The host token from before the crash still works; ending the room forgets it.
        let (code, _) = api.end_room(&room).await?;
        assert_eq!(code, 204);
        eventually(
            "the record gone from Redis",
            Duration::from_secs(10),
            || async {
                let all = redis.command("HGETALL costream:rooms")?;
                Ok((!all.contains(&room.id)).then_some(()))
            },
        )
        .await?;
        anyhow::Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&data_dir);
    result
}
