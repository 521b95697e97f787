//! Clients back after a serve restart (issue 15 item 2): how long after a `kill -9`ed serve
//! answers again (first `GET /readyz` → 200, on the same port and data directory) its clients
//! are back, with real processes: the studio and a guest page in Chromium, a `costream
//! publish` guest, and the room's mix pushed to nginx-rtmp. The goals: guests back in
//! the room ≤ 3 s after serve answers again, the output back ≤ 2 s (one node).
//!
//! - `serve_restart_guests_back_*`: → every participant (both pages and `costream publish`)
//!   listed in the room status with its audio and video tracks again.
//! - `serve_restart_output_back_*`: → nginx `/stat` shows a new publisher of the room's key
//!   with its bytes growing (the restored room's new mixer).
//! - `serve_restart_pages_back_*`: → both pages back in their normal state (studio pill
//!   `connected`, guest banner `live`) after showing `reconnecting`.
//! - `serve_restart_publish_back_*`: → `costream publish` printed `reconnected`.
//! - `serve_restart_serve_down_p50_ms`: `kill -9` → serve answering (process start, restore).
//!
//! Run: `cargo bench --bench serve_restart -- [--trials N] [--down-ms MS]` (default 5, one room
//! restarted N times; `--down-ms`: serve stays down that long before it starts again, as under
//! a supervisor's restart delay, keys `serve_restart_down_<MS>ms_*`); writes the keys into `benches/results.json` (other keys kept) and prints them. Needs
//! nginx, node, Chromium and `npm ci` in tests/browser (`scripts/setup.sh --test`).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;
#[path = "../tests/serve_restart/trial.rs"]
mod trial;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use support::{ms, percentile};
use trial::Stage;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let trials: usize = support::flag("--trials", 5)?;
    let down_ms: u64 = support::flag("--down-ms", 0)?;
    // Restarted at once: serve_restart_*; left down first: serve_restart_down_<ms>ms_*.
    let prefix = match down_ms {
        0 => "serve_restart".to_string(),
        ms => format!("serve_restart_down_{ms}ms"),
    };
    let artifacts =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/artifacts/serve_restart_bench");
    std::fs::create_dir_all(&artifacts)?;
    let mut stage = Stage::start(&artifacts).await?;
    let mut runs = Vec::new();
    for n in 1..=trials {
        let trial = stage.restart_after(Duration::from_millis(down_ms)).await?;
        eprintln!("trial {n}: {}", trial.summary());
        runs.push(trial);
        stage.steady().await?;
    }
    let series = |pick: fn(&trial::Trial) -> Duration| -> Vec<f64> {
        runs.iter().map(|t| ms(pick(t))).collect()
    };
    let guests = series(|t| t.guests_back);
    let output = series(|t| t.output_back);
    let pages = series(|t| t.host_page_back.max(t.guest_page_back));
    let publish = series(|t| t.publish_back);
    let down = series(|t| t.serve_down);
    let mut results: BTreeMap<String, Value> = BTreeMap::new();
    for (name, samples) in [
        ("guests_back", &guests),
        ("output_back", &output),
        ("pages_back", &pages),
        ("publish_back", &publish),
    ] {
        results.insert(
            format!("{prefix}_{name}_p50_ms"),
            json!(percentile(samples, 50.0)),
        );
        results.insert(
            format!("{prefix}_{name}_max_ms"),
            json!(percentile(samples, 100.0)),
        );
    }
    results.insert(
        format!("{prefix}_serve_down_p50_ms"),
        json!(percentile(&down, 50.0)),
    );
    results.insert(format!("{prefix}_trials"), json!(trials));
    // What the pages showed through every restart, next to their screenshots.
    let history = tokio::task::block_in_place(|| stage.pages.take().map(|p| p.finish()))
        .transpose()?
        .unwrap_or_default();
    let summaries: Vec<Value> = runs.iter().map(trial::Trial::summary).collect();
    std::fs::write(
        artifacts.join("result.json"),
        serde_json::to_string_pretty(&json!({"trials": summaries, "history": history}))?,
    )?;
    drop(stage);

    support::record(results)
}
