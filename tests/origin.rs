//! The built-in origin end to end, all real: `costream serve` with its origin on a free port,
//! a `costream publish` WebRTC publisher, a mixer pushing RTMP to the origin, and ffprobe /
//! ffmpeg pulling the mix back as HTTP-FLV, RTMP and LL-HLS. Also: a publish with a wrong key is
//! refused, unknown streams are 404, ending the room ends the viewers' streams, and the publish
//! key never reaches the log or the API.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use common::{eventually, participants_in_mix, Api, Publisher, PublisherOptions, Serve};
use costream_testkit::{grab_frame_rgb, probe_stream};
use serde_json::json;

fn assert_h264_720p_aac(what: &str, url: &str) -> anyhow::Result<()> {
    let info = probe_stream(url).with_context(|| format!("ffprobe {what}"))?;
    assert_eq!(info.video_codec, "h264", "{what}: {info:?}");
    assert_eq!((info.width, info.height), (1280, 720), "{what}: {info:?}");
    assert_eq!(info.audio_codec, "aac", "{what}: {info:?}");
    Ok(())
}

/// Publishes a test pattern with ffmpeg (20 s when accepted); returns ffmpeg's stderr if it
/// gave up with a failure within `timeout`, `None` if it was still publishing.
fn ffmpeg_publish_refusal(url: &str, timeout: Duration) -> anyhow::Result<Option<String>> {
    let mut child = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=15",
            "-t",
            "20",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "15",
            "-f",
            "flv",
            url,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn ffmpeg")?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                std::io::Read::read_to_string(&mut pipe, &mut stderr)?;
            }
            return Ok((!status.success()).then_some(stderr));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether an FLV byte stream (from its file header on) holds an H.264 keyframe tag yet.
fn has_avc_keyframe(flv: &[u8]) -> bool {
    let mut at = 13;
    while at + 11 <= flv.len() {
        let size = u32::from_be_bytes([0, flv[at + 1], flv[at + 2], flv[at + 3]]) as usize;
        let body = &flv[(at + 11).min(flv.len())..];
        if flv[at] == 9 && body.len() >= 2 && body[0] == 0x17 && body[1] == 1 {
            return true;
        }
        at += 11 + size + 4;
    }
    false
}

/// The `URI="…"` of a playlist line.
fn uri_of(line: &str) -> Option<&str> {
    line.split("URI=\"").nth(1)?.split('"').next()
}

/// `(msn, part)` of a `part-MSN-PART.m4s` name.
fn part_numbers(uri: &str) -> Option<(u64, u64)> {
    let (msn, part) = uri
        .strip_prefix("part-")?
        .strip_suffix(".m4s")?
        .split_once('-')?;
    Some((msn.parse().ok()?, part.parse().ok()?))
}

/// The number after `prefix` on the playlist's line that starts with it.
fn playlist_value(playlist: &str, prefix: &str) -> Option<f64> {
    let line = playlist.lines().find(|l| l.starts_with(prefix))?;
    line[prefix.len()..]
        .split(|c: char| c == ',' || c.is_whitespace())
        .next()?
        .parse()
        .ok()
}

/// The live room's LL-HLS: playlist shape and bounds, ffprobe and ffmpeg on what it names, a
/// blocking reload and the hinted part answered as soon as they exist, and bad requests.
async fn check_hls(api: &Api, room_id: &str, hls_url: Option<&str>) -> anyhow::Result<()> {
    let base = format!("/live/{room_id}");
    assert_eq!(
        hls_url,
        Some(api.url(&format!("{base}/index.m3u8")).as_str())
    );
    let playlist_path = format!("{base}/index.m3u8");
    let fetch = |path: String| async move {
        let response = api.http().get(api.url(&path)).send().await?;
        let status = response.status().as_u16();
        let kind = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        anyhow::Ok((status, kind, response.bytes().await?))
    };
    // Two finished segments (about 4 s of stream) in the playlist.
    let playlist = eventually("two HLS segments", Duration::from_secs(20), || async {
        let (status, kind, body) = fetch(playlist_path.clone()).await?;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(kind, "application/vnd.apple.mpegurl");
        let text = String::from_utf8(body.to_vec())?;
        Ok((text.matches("#EXTINF:").count() >= 2).then_some(text))
    })
    .await?;
    for tag in [
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES",
        "#EXT-X-PART-INF:PART-TARGET=",
        "#EXT-X-MAP:URI=\"init-",
        "#EXT-X-PROGRAM-DATE-TIME:",
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-",
    ] {
        assert!(playlist.contains(tag), "no {tag} in\n{playlist}");
    }
    let target = playlist_value(&playlist, "#EXT-X-TARGETDURATION:").context("target")?;
    let part_target = playlist_value(&playlist, "#EXT-X-PART-INF:PART-TARGET=").context("part")?;
    for line in playlist.lines() {
        if let Some(d) = line.strip_prefix("#EXTINF:") {
            let d: f64 = d.trim_end_matches(',').parse()?;
            assert!(
                d > 0.5 && d.round() <= target,
                "segment of {d} s, target {target}"
            );
        }
        if let Some(rest) = line.strip_prefix("#EXT-X-PART:DURATION=") {
            let d: f64 = rest.split(',').next().unwrap_or("").parse()?;
            // FLV's whole milliseconds: a part may end a millisecond past the target.
            assert!(d > 0.0 && d <= part_target + 0.002, "part of {d} s");
        }
    }
    assert!(
        playlist
            .lines()
            .filter(|l| l.starts_with("#EXT-X-PART:"))
            .take(1)
            .all(|l| l.contains("INDEPENDENT=YES")),
        "the first listed part must start with a keyframe:\n{playlist}"
    );

    // What players get: ffprobe reads the playlist, and init + a segment decode without a word.
    tokio::task::spawn_blocking({
        let url = api.url(&playlist_path);
        move || assert_h264_720p_aac("HLS", &url)
    })
    .await??;
    let init = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\""))
        .and_then(|r| r.split('"').next())
        .context("map")?
        .to_string();
    let segment = playlist
        .lines()
        .find(|l| l.starts_with("seg-"))
        .context("a segment")?
        .to_string();
    let file = std::env::temp_dir().join(format!("costream-hls-{room_id}.mp4"));
    let mut joined = Vec::new();
    for name in [&init, &segment] {
        let (status, kind, body) = fetch(format!("{base}/{name}")).await?;
        assert_eq!((status, kind.as_str()), (200, "video/mp4"), "{name}");
        joined.extend_from_slice(&body);
    }
    std::fs::write(&file, &joined)?;
    let errors = tokio::task::spawn_blocking({
        let file = file.clone();
        move || costream_testkit::decode_errors(&file)
    })
    .await?;
    let _ = std::fs::remove_file(&file);
    assert!(errors.is_empty(), "ffmpeg on init + {segment}: {errors}");

    // Blocking reload: ask for the hinted part; the answer comes once it exists, and lists it.
    let (status, _, body) = fetch(playlist_path.clone()).await?;
    assert_eq!(status, 200);
    let text = String::from_utf8(body.to_vec())?;
    let hint = text
        .lines()
        .find(|l| l.starts_with("#EXT-X-PRELOAD-HINT:"))
        .and_then(uri_of)
        .context("preload hint")?
        .to_string();
    let (msn, part) = part_numbers(&hint).context("hint name")?;
    let asked = Instant::now();
    let (status, _, body) =
        fetch(format!("{playlist_path}?_HLS_msn={msn}&_HLS_part={part}")).await?;
    let waited = asked.elapsed();
    let reloaded = String::from_utf8(body.to_vec())?;
    assert_eq!(status, 200, "{reloaded}");
    assert!(
        reloaded.contains(&format!("URI=\"{hint}\""))
            && !reloaded.contains(&format!("PRELOAD-HINT:TYPE=PART,URI=\"{hint}\"")),
        "the blocking reload answered before {hint} existed:\n{reloaded}"
    );
    assert!(
        waited < Duration::from_secs(3),
        "blocking reload took {waited:?}"
    );
    println!("MEASURE hls_blocking_reload_ms={}", waited.as_millis());
    // The next hinted part, fetched before it exists, comes as soon as it is written.
    let next_hint = reloaded
        .lines()
        .find(|l| l.starts_with("#EXT-X-PRELOAD-HINT:"))
        .and_then(uri_of)
        .context("next hint")?
        .to_string();
    let (status, kind, body) = fetch(format!("{base}/{next_hint}")).await?;
    assert_eq!((status, kind.as_str()), (200, "video/mp4"), "{next_hint}");
    assert_eq!(&body[4..8], b"moof", "a part is a fragment");

    // Bad requests: a reload far past the live edge, a malformed one, an unknown file.
    for (query, code, error) in [
        (
            format!("?_HLS_msn={}", msn + 10),
            400,
            "hls_msn_too_far_ahead",
        ),
        ("?_HLS_part=1".to_string(), 400, "bad_hls_query"),
        ("?_HLS_msn=x".to_string(), 400, "bad_hls_query"),
    ] {
        let (status, body) = api
            .send(
                reqwest::Method::GET,
                &format!("{playlist_path}{query}"),
                None,
            )
            .await?;
        assert_eq!(
            (status, body["error"].as_str()),
            (code, Some(error)),
            "{query}: {body}"
        );
    }
    let (status, body) = api
        .send(reqwest::Method::GET, &format!("{base}/seg-0.ts"), None)
        .await?;
    assert_eq!(status, 404, "{body}");
    let (status, body) = api
        .send(
            reqwest::Method::GET,
            &format!("{base}/part-999999-0.m4s"),
            None,
        )
        .await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("hls_file_not_found")),
        "{body}"
    );
    Ok(())
}

/// Any `key=<value>` in `text` whose value is not the redaction `***`.
fn unredacted_key(text: &str) -> Option<&str> {
    text.match_indices("key=").find_map(|(i, _)| {
        let value: &str = text[i + 4..]
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .next()
            .unwrap_or("");
        (value.len() >= 8).then_some(value)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_without_outputs_is_served_as_http_flv_and_rtmp_by_the_builtin_origin(
) -> anyhow::Result<()> {
    let mut serve = Serve::start_capturing_log()?;
    let api = Api::new(&serve.base_url);
    let room = api.create_room(json!({"name": "origin"})).await?;
    let flv_url = room.created["flv_url"]
        .as_str()
        .context("flv_url in the create answer")?
        .to_string();
    let rtmp_url = room.created["rtmp_play_url"]
        .as_str()
        .context("rtmp_play_url in the create answer")?
        .to_string();
    assert_eq!(flv_url, api.url(&format!("/live/{}.flv", room.id)));
    assert!(
        rtmp_url.starts_with("rtmp://127.0.0.1:")
            && rtmp_url.ends_with(&format!("/live/{}", room.id)),
        "{rtmp_url}"
    );
    assert!(
        !rtmp_url.contains(":1935/"),
        "the tests' origin must use a free port: {rtmp_url}"
    );
    let rtmp_base = rtmp_url
        .trim_end_matches(&format!("/live/{}", room.id))
        .to_string();

    // The room has exactly one output, the origin, shown without its key.
    let status = api.status(&room).await?;
    assert_eq!(
        status["outputs"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
    assert_eq!(status["outputs"][0]["origin"], true, "{status}");
    assert_eq!(unredacted_key(&status.to_string()), None, "{status}");

    // Unknown stream, and a known stream before it is live: 404 with a JSON error.
    let (code, body) = api
        .send(reqwest::Method::GET, "/live/nosuchroom.flv", None)
        .await?;
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["error"], "stream_not_found", "{body}");
    let (code, body) = api
        .send(
            reqwest::Method::GET,
            &format!("/live/{}.flv", room.id),
            None,
        )
        .await?;
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["error"], "stream_not_live", "{body}");

    let red = Publisher::start(
        &room.whip_url,
        &room.guest_token,
        PublisherOptions::red_vp8(),
    )?;
    api.wait_for_tracks(&room, 2).await?;

    let went_live = Instant::now();
    let (code, body) = api.go_live(&room).await?;
    assert_eq!(code, 200, "{body}");

    // The first HTTP-FLV viewer: its first bytes, then it stays connected till the end.
    // Polled every 20 ms (not `eventually`'s 200 ms) so the go-live latency is measured finely.
    let deadline = went_live + Duration::from_secs(15);
    let mut viewer = loop {
        let response = api.http().get(&flv_url).send().await?;
        if response.status() == 200 {
            break response;
        }
        assert!(Instant::now() < deadline, "HTTP-FLV not live within 15 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        viewer.headers()["content-type"],
        "video/x-flv",
        "{:?}",
        viewer.headers()
    );
    let mut received = viewer.chunk().await?.context("no first chunk")?.to_vec();
    assert_eq!(&received[..3], b"FLV");
    println!(
        "MEASURE origin_golive_to_first_http_flv_byte_ms={}",
        went_live.elapsed().as_millis()
    );
    // The first viewer's first H.264 keyframe, i.e. its first decodable picture.
    while !has_avc_keyframe(&received) {
        let chunk = tokio::time::timeout_at(deadline.into(), viewer.chunk())
            .await
            .context("no keyframe over HTTP-FLV within 15 s of going live")??
            .context("HTTP-FLV ended before a keyframe")?;
        received.extend_from_slice(&chunk);
    }
    println!(
        "MEASURE origin_golive_to_first_http_flv_keyframe_ms={}",
        went_live.elapsed().as_millis()
    );

    // The publisher's picture goes through mixer and origin to the viewer.
    eventually("red in the mix", Duration::from_secs(15), || async {
        Ok((participants_in_mix(&api.status(&room).await?) == 1).then_some(()))
    })
    .await?;
    eventually(
        "a red frame over HTTP-FLV",
        Duration::from_secs(20),
        || async {
            let url = flv_url.clone();
            let frame =
                tokio::task::spawn_blocking(move || grab_frame_rgb(&url, 320, 180)).await??;
            let center = costream_testkit::mean_rgb(&frame, 320, 140, 80, 40, 20);
            Ok(costream_testkit::close_to(center, [255, 0, 0], 12).then_some(()))
        },
    )
    .await?;

    // Both protocols carry the full mix.
    tokio::task::spawn_blocking({
        let (flv_url, rtmp_url) = (flv_url.clone(), rtmp_url.clone());
        move || {
            assert_h264_720p_aac("HTTP-FLV", &flv_url)?;
            assert_h264_720p_aac("RTMP play", &rtmp_url)
        }
    })
    .await??;

    // HLS / LL-HLS of the same stream.
    check_hls(&api, &room.id, room.created["hls_url"].as_str()).await?;

    // A late viewer decodes a picture at once (GOP cache), over each protocol.
    for (what, url) in [("HTTP-FLV", flv_url.clone()), ("RTMP", rtmp_url.clone())] {
        let started = Instant::now();
        let frame = tokio::task::spawn_blocking(move || grab_frame_rgb(&url, 320, 180)).await??;
        let took = started.elapsed();
        println!(
            "MEASURE origin_late_viewer_first_frame_ms_{}={}",
            what.replace('-', "_").to_lowercase(),
            took.as_millis()
        );
        assert_eq!(frame.len(), 320 * 180 * 3, "{what}");
        assert!(
            took < Duration::from_secs(5),
            "{what}: first frame took {took:?}"
        );
    }

    // Publishing needs the room's key: a wrong key, no key and an unknown stream are refused.
    for (what, url, reason) in [
        (
            "wrong key",
            format!("{rtmp_base}/live/{}?key=wrong", room.id),
            "wrong or missing publish key",
        ),
        (
            "no key",
            format!("{rtmp_base}/live/{}", room.id),
            "wrong or missing publish key",
        ),
        (
            "unknown stream",
            format!("{rtmp_base}/live/nosuchroom?key=wrong"),
            "no such stream",
        ),
    ] {
        let refusal = tokio::task::spawn_blocking(move || {
            ffmpeg_publish_refusal(&url, Duration::from_secs(15))
        })
        .await??;
        let stderr = refusal.with_context(|| format!("a publish with {what} was accepted"))?;
        // ffmpeg shows the origin's RTMP error status.
        assert!(
            stderr.contains("Server error") && stderr.contains(reason),
            "{what}: {stderr}"
        );
    }
    // ... and the real stream went on untouched.
    let status = api.status(&room).await?;
    assert_eq!(status["origin"]["live"], true, "{status}");
    assert!(status["origin"]["viewers"].as_u64() >= Some(1), "{status}");
    assert_eq!(status["outputs"][0]["state"], "live", "{status}");

    // Ending the room ends the viewers' streams and the stream itself.
    red.leave()?;
    let (code, _) = api.end_room(&room).await?;
    assert_eq!(code, 204);
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while viewer.chunk().await.ok().flatten().is_some() {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the HTTP-FLV viewer was not disconnected when the room ended"
    );
    let (code, body) = api
        .send(
            reqwest::Method::GET,
            &format!("/live/{}.flv", room.id),
            None,
        )
        .await?;
    assert_eq!(code, 404, "{body}");
    let (code, body) = api
        .send(
            reqwest::Method::GET,
            &format!("/live/{}/index.m3u8", room.id),
            None,
        )
        .await?;
    assert_eq!(code, 404, "HLS after the room ended: {body}");

    // SIGTERM with an HTTP-FLV viewer attached still shuts down cleanly (the endless body must
    // not hold graceful shutdown open). A room goes live without participants, too.
    let other = api.create_room(json!({})).await?;
    let (code, body) = api
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/rooms/{}/live", other.id),
            Some(&other.host_token),
        )
        .await?;
    assert_eq!(code, 200, "{body}");
    let other_flv = api.url(&format!("/live/{}.flv", other.id));
    let mut lingering = eventually(
        "second room on HTTP-FLV",
        Duration::from_secs(15),
        || async {
            let response = api.http().get(&other_flv).send().await?;
            Ok((response.status() == 200).then_some(response))
        },
    )
    .await?;
    assert!(lingering.chunk().await?.is_some());
    // The first SIGTERM drains (the live room and its viewer go on, see tests/pool.rs); the
    // second one stops now.
    serve.signal("TERM")?;
    eventually("draining", Duration::from_secs(5), || async {
        let response = api.http().get(api.url("/readyz")).send().await?;
        Ok((response.status() == 503).then_some(()))
    })
    .await?;
    assert!(
        lingering.chunk().await?.is_some(),
        "the viewer stopped during the drain"
    );
    let status = tokio::task::block_in_place(|| serve.terminate())?;
    assert!(status.success(), "{status}");

    let log = serve.log()?;
    assert_eq!(
        unredacted_key(&log),
        None,
        "a publish key leaked into the log"
    );
    Ok(())
}
