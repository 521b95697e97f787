//! The Grafana dashboard in `docker/grafana/` queries only metrics that a real `costream serve`
//! exports, and its panels do not overlap: checked against a live scrape, not by eye.

mod common;

use std::collections::BTreeSet;

use common::{Api, Serve};
use serde_json::Value;

const DASHBOARD: &str = include_str!("../docker/grafana/costream.json");

/// The `costream_…` metric names a PromQL expression uses (histogram series map to their base).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(start) = rest.find("costream_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_queries_an_exported_metric() -> anyhow::Result<()> {
    let dashboard: Value = serde_json::from_str(DASHBOARD)?;
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8);

    // A room that is live, so the per-room series exist too.
    let serve = Serve::start()?;
    let api = Api::new(&serve.base_url);
    let room = api.create_room(serde_json::json!({})).await?;
    let _guest = common::Publisher::start(
        &room.whip_url,
        &room.guest_token,
        common::PublisherOptions::red_vp8(),
    )?;
    api.go_live(&room).await?;
    let exported = common::eventually(
        "the room's series",
        std::time::Duration::from_secs(30),
        || async {
            let text = api
                .http()
                .get(api.url("/metrics"))
                .send()
                .await?
                .text()
                .await?;
            Ok(text
                .contains("costream_room_mixer_rss_bytes")
                .then_some(text))
        },
    )
    .await?;
    let exported: BTreeSet<String> = exported
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();

    let mut areas = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default();
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            let names = metric_names(expr);
            assert!(
                !names.is_empty(),
                "{title}: {expr} queries no costream metric"
            );
            for name in names {
                assert!(
                    exported.contains(&name),
                    "{title}: {name} is not exported by serve"
                );
            }
        }
        let g = &panel["gridPos"];
        let area = [&g["x"], &g["y"], &g["w"], &g["h"]].map(|v| v.as_u64().expect("gridPos"));
        assert!(area[0] + area[2] <= 24, "{title} wider than the grid");
        areas.push((title.to_string(), area));
    }
    for (i, (a, [ax, ay, aw, ah])) in areas.iter().enumerate() {
        for (b, [bx, by, bw, bh]) in &areas[i + 1..] {
            let overlap = ax < &(bx + bw) && bx < &(ax + aw) && ay < &(by + bh) && by < &(ay + ah);
            assert!(!overlap, "panels {a} and {b} overlap");
        }
    }
    Ok(())
}
