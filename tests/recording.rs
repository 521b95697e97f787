//! Recording the program through serve, with real processes: a room created with
//! `record: true` records from going live; its mixer is `kill -9`ed mid-way and the recording
//! goes on in a second part; the host stops it while the broadcast goes on, and records again
//! at once on the same mixer. Every part is listed, downloads as MP4 (ranges too) and decodes
//! from start to end with `ffmpeg -v error` silent: the killed mixer's part included. Then the API's refusals: a second recording, a
//! guest, an unknown part, recording while offline.

mod common;

use std::time::Duration;

use common::{eventually, Api, Publisher, PublisherOptions, Room};
use costream_testkit::{decode_errors, duration_s, probe_stream, Nginx};
use reqwest::Method;
use serde_json::{json, Value};

async fn recording_status(api: &Api, room: &Room) -> anyhow::Result<Value> {
    Ok(api.status(room).await?["recording"].clone())
}

/// Waits until the room records into a part other than `not`; returns that part's id.
async fn recording_part(api: &Api, room: &Room, not: Option<&str>) -> anyhow::Result<String> {
    eventually("a part being recorded", Duration::from_secs(15), || async {
        let rec = recording_status(api, room).await?;
        let id = rec["recording_id"].as_str().map(str::to_string);
        Ok(id.filter(|id| rec["state"] == "recording" && Some(id.as_str()) != not))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_survives_a_killed_mixer_and_every_part_plays() -> anyhow::Result<()> {
    let nginx = Nginx::start()?;
    let serve = common::Serve::start()?;
    let api = Api::new(&serve.base_url);
    let room = api
        .create_room(json!({"outputs": [{"url": nginx.rtmp_url("rec")}], "record": true}))
        .await?;
    let host = Some(room.host_token.as_str());
    let recordings = format!("/api/v1/rooms/{}/recordings", room.id);
    let guest = Publisher::start(
        &room.whip_url,
        &room.guest_token,
        PublisherOptions::red_vp8(),
    )?;
    api.wait_for_tracks(&room, 2).await?;

    // Offline: nothing to record yet.
    let (code, body) = api.send(Method::POST, &recordings, host).await?;
    assert_eq!(
        (code, body["error"].as_str()),
        (409, Some("not_live")),
        "{body}"
    );

    let (code, body) = api.go_live(&room).await?;
    assert_eq!(code, 200, "{body}");
    let first = recording_part(&api, &room, None).await?;
    let session = recording_status(&api, &room).await?["session_id"].clone();
    let (code, body) = api.send(Method::POST, &recordings, host).await?;
    assert_eq!(
        (code, body["error"].as_str()),
        (409, Some("already_recording")),
        "{body}"
    );
    let (code, _) = api
        .send(Method::POST, &recordings, Some(&room.guest_token))
        .await?;
    assert_eq!(code, 403, "a guest cannot record");
    tokio::time::sleep(Duration::from_secs(4)).await;

    // The mixer dies mid-recording: the next one records part 2 of the same recording.
    let status = api.status(&room).await?;
    let pid = status["mixer"]["pid"].as_u64().expect("mixer pid");
    common::signal(pid as u32, "KILL")?;
    let second = recording_part(&api, &room, Some(&first)).await?;
    assert_eq!(recording_status(&api, &room).await?["session_id"], session);
    tokio::time::sleep(Duration::from_secs(4)).await;

    // Stopped by the host: the broadcast goes on.
    let (code, body) = api
        .send(Method::DELETE, &format!("{recordings}/active"), host)
        .await?;
    assert_eq!(code, 204, "{body}");
    let status = api.status(&room).await?;
    assert!(status.get("recording").is_none(), "{status}");
    assert_eq!(status["broadcast"], "live", "{status}");
    let (code, body) = api
        .send(Method::DELETE, &format!("{recordings}/active"), host)
        .await?;
    assert_eq!((code, body["error"].as_str()), (404, Some("not_recording")));

    // Recording again at once, on the same mixer, while the stopped part may still be closing:
    // a new recording, and the stopped part is left to finish cleanly.
    let (code, body) = api.send(Method::POST, &recordings, host).await?;
    assert_eq!(code, 201, "{body}");
    assert_ne!(body["session_id"], session, "a new recording");
    let third = recording_part(&api, &room, Some(&second)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (code, body) = api
        .send(Method::DELETE, &format!("{recordings}/active"), host)
        .await?;
    assert_eq!(code, 204, "{body}");

    let list = eventually("every part finished", Duration::from_secs(10), || async {
        let (code, list) = api.send(Method::GET, &recordings, host).await?;
        anyhow::ensure!(code == 200, "list: {code} {list}");
        let parts = list.as_array().cloned().unwrap_or_default();
        let done = parts.len() == 3 && parts.iter().all(|p| p["state"] != "recording");
        Ok(done.then_some(parts))
    })
    .await?;
    println!("recordings: {}", serde_json::to_string_pretty(&list)?);
    assert_eq!(list[0]["recording_id"], first.as_str());
    assert_eq!(list[0]["state"], "interrupted");
    assert_eq!(list[1]["recording_id"], second.as_str());
    assert_eq!(list[1]["state"], "complete");
    assert_eq!(list[2]["recording_id"], third.as_str());
    assert_eq!(list[2]["state"], "complete");
    for part in &list {
        assert!(part["duration_s"].as_f64().unwrap() > 2.0, "{part}");
    }
    assert_eq!(list[0]["session_id"], session);
    assert_eq!(list[1]["session_id"], session);

    let dir = common::temp_data_dir();
    std::fs::create_dir_all(&dir)?;
    for part in &list {
        let id = part["recording_id"].as_str().unwrap();
        let response = api
            .http()
            .get(api.url(&format!("{recordings}/{id}")))
            .bearer_auth(&room.host_token)
            .send()
            .await?;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "video/mp4");
        let bytes = response.bytes().await?;
        assert_eq!(bytes.len() as u64, part["size_bytes"].as_u64().unwrap());
        let file = dir.join(format!("{id}.mp4"));
        std::fs::write(&file, &bytes)?;
        let info = probe_stream(file.to_str().unwrap())?;
        assert_eq!(
            (info.video_codec.as_str(), info.audio_codec.as_str()),
            ("h264", "aac")
        );
        let errors = decode_errors(&file);
        assert!(
            errors.trim().is_empty(),
            "{id} decodes with errors:\n{errors}"
        );
        let seconds = duration_s(&file);
        println!(
            "MEASURE recording_part_{}_s={seconds:.2} bytes={}",
            part["part"],
            bytes.len()
        );
        assert!(seconds > 2.0, "{id}: {seconds} s");
    }

    // A download link works without the token, for that part only, and cannot be forged.
    let (code, body) = api
        .send(Method::POST, &format!("{recordings}/{second}/link"), host)
        .await?;
    assert_eq!(code, 200, "{body}");
    let url = body["url"].as_str().expect("a link").to_string();
    assert!(!url.contains(&room.host_token));
    let linked = api.http().get(api.url(&url)).send().await?;
    assert_eq!(linked.status(), 200);
    assert_eq!(
        linked.bytes().await?.len() as u64,
        list[1]["size_bytes"].as_u64().unwrap()
    );
    let other_part = url.replace(&second, &third);
    let forged = url.replace("ticket=", "ticket=1");
    for bad in [other_part, forged] {
        let (code, body) = api.send(Method::GET, &bad, None).await?;
        assert_eq!(code, 401, "{bad}: {body}");
    }
    let (code, _) = api
        .send(
            Method::POST,
            &format!("{recordings}/{second}/link"),
            Some(&room.guest_token),
        )
        .await?;
    assert_eq!(code, 403, "a guest gets no link");

    // A player seeks with ranges.
    let ranged = api
        .http()
        .get(api.url(&format!("{recordings}/{first}")))
        .bearer_auth(&room.host_token)
        .header("range", "bytes=0-99")
        .send()
        .await?;
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.bytes().await?.len(), 100);

    // Deleting: the file goes, an unknown or hostile id is not found, a guest may not.
    let part = |id: &str| format!("{recordings}/{id}");
    let (code, _) = api
        .send(Method::DELETE, &part(&first), Some(&room.guest_token))
        .await?;
    assert_eq!(code, 403);
    let (code, body) = api.send(Method::DELETE, &part(&first), host).await?;
    assert_eq!(code, 204, "{body}");
    for missing in [first.as_str(), "rec-nothing-1", "..%2Fstore.key"] {
        let (code, body) = api.send(Method::GET, &part(missing), host).await?;
        assert_eq!(code, 404, "{missing}: {body}");
    }
    let (_, list) = api.send(Method::GET, &recordings, host).await?;
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    let on_disk = serve.data_dir.join("recordings").join(&room.id);
    assert!(!on_disk.join(format!("{first}.mp4")).exists());

    guest.leave()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
