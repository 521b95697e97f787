//! HLS from the built-in origin (issue 16 item 2), with real processes: `costream serve`, a
//! `costream publish` guest in a live 720p30 room, and hls.js 1.7.4 in Debian's Chromium.
//!
//! - `hls_ll_latency_p50_ms` / `_max_ms`: hls.js in LL-HLS mode; latency = now − the playing
//!   frame's `EXT-X-PROGRAM-DATE-TIME` (stamped when the frame reached the origin; the mixer's
//!   own ~0.1 s comes on top). Target ≤ 3 s.
//! - `hls_plain_latency_p50_ms` / `_max_ms`: the same stream in plain HLS mode. Target ≤ 8 s.
//! - `hls_ll_startup_p50_ms`: `loadSource` → the first frame playing, LL-HLS.
//! - `hls_serve_cpu_ratio`: serve's CPU with `origin.hls = true` ÷ with `false`, one live room
//!   and no viewers, measured in alternating windows of the same run (the packager's cost).
//!
//! Run: `cargo bench --bench hls -- [--trials N] [--cpu-window-s S]` (default 5 and 20); writes
//! the keys into `benches/results.json` (other keys kept) and prints them. Needs node,
//! Chromium and `npm ci` in tests/browser (`scripts/setup.sh --test`).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use common::{cpu_seconds, eventually, Api, Publisher, PublisherOptions, Serve};
use serde_json::{json, Value};
use support::percentile;

/// A live room with one publisher, on a serve of its own.
struct LiveRoom {
    serve: Serve,
    room_id: String,
    _publisher: Publisher,
}

async fn live_room(hls: bool) -> anyhow::Result<LiveRoom> {
    let serve = Serve::start_with_config(&format!("[origin]\nhls = {hls}\n"))?;
    let api = Api::new(&serve.base_url);
    let room = api.create_room(json!({"name": "hls bench"})).await?;
    let publisher = Publisher::start(
        &room.whip_url,
        &room.guest_token,
        PublisherOptions::red_vp8(),
    )?;
    api.wait_for_tracks(&room, 2).await?;
    let (code, body) = api.go_live(&room).await?;
    anyhow::ensure!(code == 200, "go live: {body}");
    let status_path = format!("/api/v1/rooms/{}", room.id);
    eventually("the origin live", Duration::from_secs(20), || async {
        let (_, status) = api
            .send(reqwest::Method::GET, &status_path, Some(&room.host_token))
            .await?;
        Ok((status["origin"]["live"] == true).then_some(()))
    })
    .await?;
    Ok(LiveRoom {
        serve,
        room_id: room.id.clone(),
        _publisher: publisher,
    })
}

/// Runs the hls.js driver; returns its RESULT.
fn hls_js(base: &str, room: &str, trials: usize) -> anyhow::Result<Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let out = Command::new("node")
        .arg("hls_latency.mjs")
        .args([base, room, &trials.to_string()])
        .current_dir(&dir)
        .stderr(Stdio::inherit())
        .output()
        .context("node (scripts/setup.sh --test installs it)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("RESULT "))
        .with_context(|| format!("hls_latency.mjs printed no RESULT ({})", out.status))?;
    Ok(serde_json::from_str(line)?)
}

fn series(runs: &Value, field: &str) -> Vec<f64> {
    runs.as_array()
        .map(|a| a.iter().filter_map(|r| r[field].as_f64()).collect())
        .unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let trials: usize = support::flag("--trials", 5)?;
    let window_s: u64 = support::flag("--cpu-window-s", 20)?;
    let mut results: BTreeMap<String, Value> = BTreeMap::new();

    let room = live_room(true).await?;
    // Two finished segments before the first player starts.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let base = room.serve.base_url.clone();
    let id = room.room_id.clone();
    let runs = tokio::task::spawn_blocking(move || hls_js(&base, &id, trials)).await??;
    drop(room);
    for (mode, key) in [("ll", "hls_ll"), ("plain", "hls_plain")] {
        let latency = series(&runs[mode], "latencyMs");
        anyhow::ensure!(latency.len() == trials, "{mode}: {} runs", latency.len());
        results.insert(
            format!("{key}_latency_p50_ms"),
            json!(percentile(&latency, 50.0)),
        );
        results.insert(
            format!("{key}_latency_max_ms"),
            json!(percentile(&latency, 100.0)),
        );
    }
    let startup = series(&runs["ll"], "startupMs");
    results.insert(
        "hls_ll_startup_p50_ms".into(),
        json!(percentile(&startup, 50.0)),
    );
    results.insert("hls_trials".into(), json!(trials));

    // The packager's cost: serve's CPU share with HLS on and off, alternating, twice each.
    let mut shares: BTreeMap<bool, Vec<f64>> = BTreeMap::new();
    for hls in [true, false, true, false] {
        let room = live_room(hls).await?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let pid = room.serve.pid();
        let before = cpu_seconds(pid)?;
        tokio::time::sleep(Duration::from_secs(window_s)).await;
        let share = (cpu_seconds(pid)? - before) / window_s as f64;
        eprintln!(
            "serve CPU with hls = {hls}: {:.2} % of a core",
            share * 100.0
        );
        shares.entry(hls).or_default().push(share);
        drop(room);
    }
    let mean = |v: &Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
    let (on, off) = (mean(&shares[&true]), mean(&shares[&false]));
    results.insert(
        "hls_serve_cpu_on_pct".into(),
        json!((on * 1000.0).round() / 10.0),
    );
    results.insert(
        "hls_serve_cpu_off_pct".into(),
        json!((off * 1000.0).round() / 10.0),
    );
    results.insert(
        "hls_serve_cpu_ratio".into(),
        json!(((on / off) * 1000.0).round() / 1000.0),
    );
    support::record(results)
}
