//! Clients reconnect by themselves after a serve restart (issue 15 item 2). A live room with
//! the studio and a guest page in Chromium, a `costream publish` guest and the mix pushed to
//! nginx-rtmp; serve is killed with `kill -9` and started again on the same port and data
//! directory. Without any click, the pages show "reconnecting", publish the same camera and
//! mic again and receive each other again; `costream publish` posts its offer again; the
//! room goes live again with a new mixer and nginx receives the program from a new publisher.
//! Timings are printed and checked with generous bounds (behaviour, not speed: the benchmark
//! benches/serve_restart.rs measures them over several trials).
//!
//! Needs node, Chromium and `npm ci` in tests/browser, and nginx with the RTMP module
//! (`scripts/setup.sh --test`). Artifacts (screenshots, page consoles) land in
//! tests/artifacts/serve_restart/.

mod common;
#[path = "serve_restart/trial.rs"]
mod trial;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use common::{Api, Publisher, PublisherOptions, Serve};
use serde_json::json;
use trial::Stage;

/// Generous: a loaded 2-core machine runs two Chromiums, serve, a mixer and nginx here.
const GUESTS_BACK_WITHIN: Duration = Duration::from_secs(15);
const OUTPUT_BACK_WITHIN: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_publish_reconnect_by_themselves_after_kill_9() -> anyhow::Result<()> {
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/artifacts/serve_restart");
    std::fs::create_dir_all(&artifacts)?;
    let mut stage = Stage::start(&artifacts).await?;
    let before = stage.api.status(&stage.room).await?;
    let old_ids: Vec<String> = before["participants"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|p| p["participant_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();

    let trial = stage.restart_after(Duration::ZERO).await?;
    eprintln!("serve restart: {}", trial.summary());

    // What each client showed: the pages went to "reconnecting" and came back without a click.
    assert!(
        trial.host_states.iter().any(|s| s == "reconnecting"),
        "the studio never showed reconnecting: {:?}",
        trial.host_states
    );
    assert!(
        trial.guest_states.iter().any(|s| s == "reconnecting"),
        "the guest page never showed reconnecting: {:?}",
        trial.guest_states
    );
    assert!(
        trial
            .publish_lines
            .iter()
            .any(|l| l.starts_with("reconnecting")),
        "costream publish did not say it was reconnecting: {:?}",
        trial.publish_lines
    );
    assert!(
        trial.guests_back <= GUESTS_BACK_WITHIN,
        "guests back after {:?}",
        trial.guests_back
    );
    assert!(
        trial.output_back <= OUTPUT_BACK_WITHIN,
        "output back after {:?}",
        trial.output_back
    );

    // The same room (same links), everyone in it under a new session and in the mix (the new
    // mixer may still be opening the last track's input when everyone is back), live with a
    // new mixer.
    let after = common::eventually("everyone in the mix", Duration::from_secs(10), || async {
        let status = stage.api.status(&stage.room).await?;
        Ok((common::participants_in_mix(&status) == 3).then_some(status))
    })
    .await?;
    assert_eq!(after["broadcast"], "live", "{after}");
    for p in after["participants"].as_array().into_iter().flatten() {
        let id = p["participant_id"].as_str().unwrap_or_default();
        assert!(
            !old_ids.iter().any(|old| old == id),
            "{id} is a session from before"
        );
    }
    assert_ne!(
        after["mixer"]["pid"], before["mixer"]["pid"],
        "a new mixer: {after}"
    );
    // The pages receive each other again (subscriptions reopened on the new server): the host
    // is seen by the guest page, the guest page and `costream publish` by the studio.
    common::eventually(
        "the pages subscribe to each other again",
        Duration::from_secs(15),
        || async {
            let status = stage.api.status(&stage.room).await?;
            let seen_by = |name: &str| {
                status["participants"]
                    .as_array()
                    .and_then(|l| l.iter().find(|p| p["display_name"] == name))
                    .and_then(|p| p["subscribers"].as_u64())
                    .unwrap_or(0)
            };
            Ok((seen_by(trial::HOST_NAME) >= 1
                && seen_by(trial::GUEST_PAGE_NAME) >= 1
                && seen_by(trial::PUBLISH_NAME) >= 2)
                .then_some(()))
        },
    )
    .await?;

    let history = tokio::task::block_in_place(|| stage.pages.take().map(|p| p.finish()))
        .transpose()?
        .unwrap_or_default();
    eprintln!("page history: {history}");
    std::fs::write(
        artifacts.join("result.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "trial": trial.summary(),
            "history": history,
        }))?,
    )?;
    Ok(())
}

/// `costream publish` without the pages: `--no-reconnect` makes a lost session an error exit;
/// by default it comes back after a restart, and stops with an error once the room is gone
/// (the server answers its new offer 404) instead of retrying forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reconnects_until_the_room_is_gone_and_no_reconnect_opts_out() -> anyhow::Result<()>
{
    let data_dir = common::temp_data_dir();
    let result = publish_only(&data_dir).await;
    let _ = std::fs::remove_dir_all(&data_dir);
    result
}

async fn publish_only(data_dir: &Path) -> anyhow::Result<()> {
    let serve = Serve::start_with_data_dir(data_dir)?;
    let listen = serve.listen_addr().to_string();
    let api = Api::new(&serve.base_url);
    let room = api.create_room(json!({"name": "publish only"})).await?;
    let small = ["--width", "160", "--height", "90", "--fps", "10"];
    let (mut stays, stays_lines) = Publisher::start_following(
        &room.whip_url,
        &room.guest_token,
        PublisherOptions::red_vp8(),
        &small,
    )?;
    let mut opted_out = Publisher::start_with_args(
        &room.whip_url,
        &room.guest_token,
        PublisherOptions {
            name: "opted out",
            ..PublisherOptions::red_vp8()
        },
        &[&small[..], &["--no-reconnect"]].concat(),
    )?;

    let mut serve = serve;
    serve.signal("KILL")?;
    serve.wait_exit(Duration::from_secs(10))?;
    drop(serve);
    let serve = Serve::start_with_data_dir_on(data_dir, &listen)?;
    let api = Api::new(&serve.base_url);

    let status = tokio::task::block_in_place(|| opted_out.wait_exit(Duration::from_secs(15)))
        .context("--no-reconnect: still running after the session was lost")?;
    assert!(!status.success(), "--no-reconnect exits with an error");
    let wait_line = |prefix: &str, within: Duration| -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (_, line) = stays_lines
                .recv_timeout(left)
                .with_context(|| format!("no {prefix:?} line (saw {seen:?})"))?;
            let done = line.starts_with(prefix);
            seen.push(line);
            if done {
                return Ok(seen);
            }
        }
    };
    let lines = tokio::task::block_in_place(|| wait_line("reconnected", Duration::from_secs(15)))?;
    assert!(lines[0].starts_with("reconnecting "), "{lines:?}");
    let names: Vec<String> = api.status(&room).await?["participants"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["display_name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(names, ["red"], "only the reconnecting publisher is back");

    // The room ends: its sessions close, and the next offer is answered 404.
    let (code, _) = api.end_room(&room).await?;
    assert_eq!(code, 204);
    let status = tokio::task::block_in_place(|| stays.wait_exit(Duration::from_secs(15)))
        .context("still retrying after the room ended")?;
    assert!(!status.success(), "a gone room is an error exit");
    Ok(())
}
