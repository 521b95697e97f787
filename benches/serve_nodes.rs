//! Many serve nodes (issue 15 items 2–4), over several trials, with real processes (the stage
//! of `tests/serve_nodes.rs`: two serve nodes behind a TCP balancer, Redis, a worker, nginx and
//! a `costream publish` guest in one live room). Each trial takes the room's owner away and
//! starts it again; kills and SIGTERMs alternate.
//!
//! - `serve_nodes_kill_adopted_*`: `kill -9` of the owner → the other node owns the room and
//!   has it live with the same mixer (the goal: within 10 s).
//! - `serve_nodes_kill_guest_back_*`: → the guest back in the mix (it reconnected by itself).
//! - `serve_nodes_term_adopted_*`, `serve_nodes_term_guest_back_*`: the same after SIGTERM (a
//!   node drained for an upgrade).
//! - `serve_nodes_restart_adopted_*`, `serve_nodes_restart_guest_back_*`: one node left, killed
//!   and started again at once; from the restarted node answering to the room live with the
//!   same mixer, and to the guest back (the goal: ≤ 3 s).
//! - `serve_nodes_cdn_still_max_ms`: across every trial, the longest nginx saw the room's one
//!   publisher send nothing (every trial checks it stays the same publisher: no CDN gap).
//!
//! Run: `cargo bench --bench serve_nodes -- [--trials N]` (default 5 of each); writes the keys
//! into `benches/results.json` (other keys kept) and prints them. Needs nginx and Redis
//! (`scripts/setup.sh --test`).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/serve_nodes/stage.rs"]
mod stage;
mod support;

use std::collections::BTreeMap;

use serde_json::{json, Value};
use stage::{Loss, Stage};
use support::{ms, percentile};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let trials: usize = support::flag("--trials", 5)?;
    let mut stage = Stage::start().await?;
    let mut runs = Vec::new();
    for n in 1..=trials {
        for loss in [Loss::Kill, Loss::Term] {
            let trial = stage.lose_owner(loss).await?;
            eprintln!("trial {n}: {}", Stage::summary(&trial));
            runs.push(trial);
        }
    }
    // One node left, restarted at once each time.
    let owner_now = stage::owner(&stage.redis, &stage.room.id);
    let other = stage::NODES
        .iter()
        .position(|n| *n != owner_now)
        .expect("two nodes");
    stage.stop_node(other).await?;
    for n in 1..=trials {
        let trial = stage.lose_owner(Loss::Restart).await?;
        eprintln!("trial {n}: {}", Stage::summary(&trial));
        runs.push(trial);
    }
    let mut results: BTreeMap<String, Value> = BTreeMap::new();
    for (loss, name) in [
        (Loss::Kill, "kill"),
        (Loss::Term, "term"),
        (Loss::Restart, "restart"),
    ] {
        let of = |pick: fn(&stage::Trial) -> f64| -> Vec<f64> {
            runs.iter().filter(|t| t.loss == loss).map(pick).collect()
        };
        for (what, samples) in [
            ("adopted", of(|t| ms(t.adopted))),
            ("guest_back", of(|t| ms(t.guest_back))),
        ] {
            results.insert(
                format!("serve_nodes_{name}_{what}_p50_ms"),
                json!(percentile(&samples, 50.0)),
            );
            results.insert(
                format!("serve_nodes_{name}_{what}_max_ms"),
                json!(percentile(&samples, 100.0)),
            );
        }
    }
    let still: Vec<f64> = runs.iter().map(|t| ms(t.cdn_still)).collect();
    results.insert(
        "serve_nodes_cdn_still_max_ms".into(),
        json!(percentile(&still, 100.0)),
    );
    results.insert("serve_nodes_trials".into(), json!(trials));
    drop(stage);
    support::record(results)
}
