//! `GET /metrics` against a real `costream serve`: scraped and parsed while a room goes live,
//! gets a guest, loses an output and ends — the values move, and the room's series vanish
//! with it.

mod common;

use std::time::Duration;

use common::{eventually, Api, Publisher, PublisherOptions, Serve};
use serde_json::json;

/// One sample of a scrape: name, labels as written (`{a="b",…}` or empty) and value.
fn samples(text: &str) -> Vec<(String, String, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = match series.find('{') {
                Some(i) => (&series[..i], &series[i..]),
                None => (series, ""),
            };
            Some((name.to_string(), labels.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn value(samples: &[(String, String, f64)], name: &str, labels_contain: &[&str]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, labels, _)| n == name && labels_contain.iter().all(|l| labels.contains(l)))
        .map(|(_, _, v)| *v)
}

async fn scrape(api: &Api) -> anyhow::Result<Vec<(String, String, f64)>> {
    let response = api.http().get(api.url("/metrics")).send().await?;
    anyhow::ensure!(response.status() == 200, "{}", response.status());
    Ok(samples(&response.text().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_room_from_creation_to_its_end() -> anyhow::Result<()> {
    let serve = Serve::start()?;
    let api = Api::new(&serve.base_url);
    let room = api.create_room(json!({"name": "metrics"})).await?;
    let room_label = format!("room=\"{}\"", room.id);
    let before = scrape(&api).await?;
    assert_eq!(value(&before, "costream_rooms", &[]), Some(1.0));
    assert_eq!(value(&before, "costream_participants", &[]), Some(0.0));
    assert!(
        !before
            .iter()
            .any(|(_, labels, _)| labels.contains(&room_label)),
        "no room series while offline"
    );
    // The create request was counted under its route template, not the room id.
    assert!(
        value(
            &before,
            "costream_http_requests_total",
            &[
                "route=\"/api/v1/rooms\"",
                "method=\"POST\"",
                "status=\"201\""
            ]
        ) >= Some(1.0)
    );
    assert!(
        value(
            &before,
            "costream_http_request_duration_seconds_bucket",
            &["route=\"/api/v1/rooms\"", "le=\"+Inf\""]
        ) >= Some(1.0)
    );

    let _guest = Publisher::start(
        &room.whip_url,
        &room.guest_token,
        PublisherOptions::red_vp8(),
    )?;
    let (status, _) = api.go_live(&room).await?;
    assert_eq!(status, 200);
    let live = eventually(
        "the origin output live in the metrics",
        Duration::from_secs(30),
        || async {
            let now = scrape(&api).await?;
            let live = value(
                &now,
                "costream_output_state",
                &[&room_label, "output=\"origin\"", "state=\"live\""],
            );
            Ok((live == Some(1.0)).then_some(now))
        },
    )
    .await?;
    assert_eq!(value(&live, "costream_participants", &[]), Some(1.0));
    assert_eq!(
        value(&live, "costream_room_participants", &[&room_label]),
        Some(1.0)
    );
    assert!(value(&live, "costream_peer_connections", &[]) >= Some(1.0));
    assert_eq!(value(&live, "costream_rooms_live", &[]), Some(1.0));
    assert!(value(&live, "costream_room_mixer_rss_bytes", &[&room_label]) > Some(10e6));
    // Frames and bytes move while live.
    let first_frames = value(&live, "costream_room_mixer_frames_out", &[&room_label]);
    let moved = eventually(
        "frames and bytes moving",
        Duration::from_secs(10),
        || async {
            let now = scrape(&api).await?;
            let frames = value(&now, "costream_room_mixer_frames_out", &[&room_label]);
            let bytes = value(
                &now,
                "costream_output_bytes_sent",
                &[&room_label, "output=\"origin\""],
            );
            Ok((frames > first_frames && bytes > Some(0.0)).then_some(now))
        },
    )
    .await?;
    assert!(value(&moved, "costream_room_mixer_cpu_seconds", &[&room_label]) > Some(0.0));
    // Quality figures: the guest became visible (it joined before the go-live, so counted from
    // there), the mixer reports its latency, the program is not frozen (the red guest is still,
    // so the program may be still too, but no shown input moves), packets come in.
    let quality = eventually(
        "quality figures in the metrics",
        Duration::from_secs(15),
        || async {
            let now = scrape(&api).await?;
            let visible = value(&now, "costream_join_to_visible_seconds_count", &[]);
            let latency = value(&now, "costream_room_latency_seconds", &[&room_label]);
            let packets = value(&now, "costream_rtp_packets_received", &[]);
            Ok((visible >= Some(1.0) && latency.is_some() && packets > Some(100.0)).then_some(now))
        },
    )
    .await?;
    let latency = value(&quality, "costream_room_latency_seconds", &[&room_label]).unwrap();
    assert!((0.001..2.0).contains(&latency), "latency {latency} s");
    let max = value(
        &quality,
        "costream_room_latency_max_seconds",
        &[&room_label],
    )
    .unwrap();
    assert!(max >= latency, "max {max} < median {latency}");
    let join = value(&quality, "costream_join_to_visible_seconds_sum", &[]).unwrap();
    assert!((0.0..10.0).contains(&join), "join to visible {join} s");
    assert_eq!(
        value(&quality, "costream_room_program_frozen", &[&room_label]),
        Some(0.0)
    );
    assert_eq!(
        value(&quality, "costream_room_program_black", &[&room_label]),
        Some(0.0)
    );
    assert!(value(&quality, "costream_rtp_bytes_received", &[]) > Some(10_000.0));
    assert!(value(&quality, "costream_room_rtp_packets_lost", &[&room_label]).is_some());
    assert!(value(&quality, "costream_room_rtp_jitter_seconds", &[&room_label]) < Some(0.1));
    // The same figures in the room status.
    let status = api.status(&room).await?;
    let program = &status["quality"];
    assert!(program["latency_ms"].as_u64().is_some(), "{status}");
    assert_eq!(program["frozen"], false, "{status}");
    let guest = &status["participants"][0]["quality"];
    assert!(guest["packets_received"].as_u64() > Some(0), "{status}");
    assert!(guest["join_to_visible_ms"].as_f64().is_some(), "{status}");

    // The output goes: its series go with it, the room's stay.
    let (status, _) = api
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/rooms/{}/outputs/origin", room.id),
            Some(&room.host_token),
        )
        .await?;
    assert_eq!(status, 204);
    let after_output = eventually(
        "the output's series gone",
        Duration::from_secs(10),
        || async {
            let now = scrape(&api).await?;
            Ok(value(&now, "costream_output_state", &[&room_label])
                .is_none()
                .then_some(now))
        },
    )
    .await?;
    assert!(value(&after_output, "costream_room_participants", &[&room_label]).is_some());

    // The room ends: every series labelled with it is gone; the totals drop.
    api.end_room(&room).await?;
    let ended = eventually(
        "the room gone from the metrics",
        Duration::from_secs(10),
        || async {
            let now = scrape(&api).await?;
            let gone = value(&now, "costream_rooms", &[]) == Some(0.0)
                && value(&now, "costream_rooms_live", &[]) == Some(0.0);
            Ok(gone.then_some(now))
        },
    )
    .await?;
    assert!(
        !ended
            .iter()
            .any(|(_, labels, _)| labels.contains(&room_label)),
        "room series remain after it ended"
    );
    Ok(())
}
