//! A room's mixer crashes (`kill -9`) or hangs (`SIGSTOP`) while live: serve replaces it, the
//! output comes back with the same picture, and the guest's WebRTC session is never touched.
//! Real processes throughout: nginx-rtmp, serve, a `costream publish` guest, ffmpeg.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{eventually, Api, Publisher, PublisherOptions, Room};
use costream_testkit::{close_to, mean_rgb, FrameReader, Nginx};
use serde_json::{json, Value};

const RED: [u8; 3] = [255, 0, 0];

fn signal(pid: u64, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid}");
}

fn process_gone(pid: u64) -> bool {
    // Gone, or at most a zombie nobody will wait for (it is reaped by serve).
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Polls the room quickly until the output is live on a mixer other than `old_pid`, and
/// returns the new pid, how long that took and every output state seen on the way.
async fn wait_for_replacement(
    api: &Api,
    room: &Room,
    old_pid: u64,
    within: Duration,
) -> anyhow::Result<(u64, Duration, Vec<String>)> {
    let started = Instant::now();
    let mut seen = Vec::new();
    loop {
        let status = api.status(room).await?;
        let state = status["outputs"][0]["state"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if seen.last() != Some(&state) {
            seen.push(state.clone());
        }
        let pid = status["mixer"]["pid"].as_u64();
        if let Some(pid) = pid.filter(|&p| p != old_pid && state == "live") {
            return Ok((pid, started.elapsed(), seen));
        }
        if started.elapsed() > within {
            anyhow::bail!("no live replacement mixer within {within:?}; states seen {seen:?}; last status {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn red_on_air(url: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let reader = FrameReader::start(url, 160, 90, 5)?;
    eventually("red in the output", Duration::from_secs(10), || async {
        let frame = tokio::task::block_in_place(|| reader.next_frame(Duration::from_secs(5)));
        Ok(frame
            .filter(|f| close_to(mean_rgb(f, 160, 60, 30, 40, 30), RED, 12))
            .map(|_| started.elapsed()))
    })
    .await
}

fn participant_ids(status: &Value) -> HashSet<String> {
    status["participants"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["participant_id"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_or_hung_mixer_is_replaced_without_touching_the_guest() -> anyhow::Result<()> {
    let nginx = Nginx::start()?;
    let serve = common::Serve::start()?;
    let api = Api::new(&serve.base_url);
    let key = "faults";
    let room = api
        .create_room(json!({"outputs": [{"url": nginx.rtmp_url(key)}]}))
        .await?;
    let guest = Publisher::start(
        &room.whip_url,
        &room.guest_token,
        PublisherOptions {
            color: "red",
            tone_hz: 440,
            codec: "vp8",
            name: "guest",
        },
    )?;
    api.wait_for_tracks(&room, 2).await?;
    let (code, body) = api.go_live(&room).await?;
    assert_eq!(code, 200, "{body}");
    let status = eventually("output live", Duration::from_secs(15), || async {
        let status = api.status(&room).await?;
        Ok((status["outputs"][0]["state"] == "live").then_some(status))
    })
    .await?;
    let guests_before = participant_ids(&status);
    let url = nginx.rtmp_url(key);
    red_on_air(&url).await?;

    // kill -9: replaced, output live again within 3 s, status passes through "reconnecting".
    let first = status["mixer"]["pid"].as_u64().expect("mixer pid");
    signal(first, "KILL");
    let (second, took, seen) =
        wait_for_replacement(&api, &room, first, Duration::from_secs(3)).await?;
    println!(
        "MEASURE kill9_to_output_live_ms={} states={seen:?}",
        took.as_millis()
    );
    assert!(seen.iter().any(|s| s == "reconnecting"), "{seen:?}");
    let shown = red_on_air(&url).await?;
    println!(
        "MEASURE kill9_then_new_reader_sees_picture_ms={}",
        shown.as_millis()
    );
    assert!(
        process_gone(first),
        "the killed mixer {first} was not reaped"
    );

    // SIGSTOP: detected by missing heartbeats within 5 s, killed, replaced.
    signal(second, "STOP");
    let (third, took, seen) =
        wait_for_replacement(&api, &room, second, Duration::from_secs(10)).await?;
    println!(
        "MEASURE sigstop_to_output_live_ms={} states={seen:?}",
        took.as_millis()
    );
    assert!(
        took < Duration::from_secs(7),
        "hang detection took {took:?}"
    );
    red_on_air(&url).await?;
    eventually("the hung mixer killed", Duration::from_secs(5), || async {
        Ok(process_gone(second).then_some(()))
    })
    .await?;

    // The guest never noticed: same participant, still publishing, status counts the restarts.
    let status = api.status(&room).await?;
    assert_eq!(participant_ids(&status), guests_before, "{status}");
    assert_eq!(status["mixer"]["restarts"], 2, "{status}");
    assert_eq!(status["broadcast"], "live", "{status}");

    // Stopping leaves no mixer behind.
    let (code, _) = api.stop_live(&room).await?;
    assert_eq!(code, 200);
    eventually("mixer gone after stop", Duration::from_secs(10), || async {
        Ok(process_gone(third).then_some(()))
    })
    .await?;
    guest.leave()?;
    Ok(())
}
