//! A fleet worker's own `/metrics` (`costream worker --metrics-listen`), with real processes: a
//! real `redis-server`, nginx-rtmp as the CDN, `costream serve --redis` and one worker on
//! 127.0.0.9 (standing in for a machine). Idle, it shows its capacity and no room; with a live
//! room, the room's series and its mixer's memory; after the room stops, none of them. A
//! second worker asking for the same metrics address fails to start, naming it.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, Api, Serve, Worker, BIN};
use costream_testkit::{Nginx, Redis};
use serde_json::json;

const IP: &str = "127.0.0.9";

/// The value of the line that starts with `series` (name and labels exactly).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

async fn scrape(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let response = http.get(format!("{base}/metrics")).send().await?;
    anyhow::ensure!(response.status() == 200, "{}", response.status());
    let content_type = response.headers()["content-type"].to_str()?.to_string();
    anyhow::ensure!(
        content_type == "text/plain; version=0.0.4",
        "{content_type}"
    );
    Ok(response.text().await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_exports_its_capacity_and_the_rooms_it_runs() -> anyhow::Result<()> {
    let redis = Redis::start()?;
    let nginx = Nginx::start()?;
    let port = std::net::TcpListener::bind((IP, 0))?.local_addr()?.port();
    let metrics_addr = format!("{IP}:{port}");
    let _worker = Worker::start(
        &redis.url(),
        IP,
        "w-metrics",
        &[
            "--capacity-cores",
            "0.5",
            "--max-utilization",
            "1.0",
            "--warm",
            "1",
            "--metrics-listen",
            &metrics_addr,
        ],
    )?;
    let base = format!("http://{metrics_addr}");
    let http = reqwest::Client::new();

    // Idle: its capacity, its identity, no room.
    let text = scrape(&http, &base).await?;
    assert_eq!(
        value(&text, "costream_worker_capacity_cores"),
        Some(0.5),
        "{text}"
    );
    assert_eq!(value(&text, "costream_worker_free_cores"), Some(0.5));
    assert_eq!(value(&text, "costream_worker_mixers"), Some(0.0));
    assert_eq!(value(&text, "costream_worker_draining"), Some(0.0));
    assert!(
        text.lines().any(|l| l
            .starts_with(r#"costream_worker_info{worker_id="w-metrics",version=""#)
            && l.ends_with(" 1")),
        "{text}"
    );
    assert!(!text.contains("room="), "{text}");
    let health = http.get(format!("{base}/healthz")).send().await?;
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await?, "ok");

    // The address is taken: a second worker asking for it stops at startup, naming it.
    let mut second = Command::new(BIN)
        .args(["worker", "--redis", &redis.url(), "--advertise-ip", IP])
        .args(["--worker-id", "w-clash", "--metrics-listen", &metrics_addr])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = second.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            anyhow::bail!("a worker whose metrics address is taken still runs");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr)?;
    assert!(!status.success());
    assert!(
        stderr.contains(&metrics_addr) && stderr.contains("--metrics-listen"),
        "{stderr}"
    );

    // A room goes live on it: the room's series appear, with its mixer's memory.
    let serve = Serve::start_with_config(&format!("[cluster]\nredis_url = \"{}\"\n", redis.url()))?;
    let api = Api::new(&serve.base_url);
    let room = api
        .create_room(json!({
            "outputs": [{"url": nginx.rtmp_url("wm")}],
            "video": {"width": 640, "height": 360, "fps": 15, "bitrate_kbps": 800},
        }))
        .await?;
    eventually("the worker registered", Duration::from_secs(20), || async {
        let pool: serde_json::Value = api
            .http()
            .get(api.url("/api/v1/pool"))
            .send()
            .await?
            .json()
            .await?;
        Ok((pool["workers"].as_array().map_or(0, Vec::len) == 1).then_some(()))
    })
    .await?;
    let (code, body) = api.go_live(&room).await?;
    assert_eq!(code, 200, "{body}");
    eventually("output live", Duration::from_secs(20), || async {
        let status = api.status(&room).await?;
        Ok((status["outputs"][0]["state"] == "live").then_some(()))
    })
    .await?;
    let labelled = |name: &str| format!(r#"{name}{{room="{}"}}"#, room.id);
    let text = eventually(
        "the room in the metrics",
        Duration::from_secs(5),
        || async {
            let text = scrape(&http, &base).await?;
            let rss = value(&text, &labelled("costream_worker_mixer_rss_bytes"));
            Ok(rss.is_some_and(|rss| rss > 0.0).then_some(text))
        },
    )
    .await?;
    println!("a worker with one room:\n{text}");
    assert_eq!(value(&text, "costream_worker_mixers"), Some(1.0));
    assert!(value(&text, "costream_worker_used_cores").unwrap() > 0.0);
    assert!(value(&text, &labelled("costream_worker_room_cost_cores")).unwrap() > 0.0);
    assert!(value(&text, &labelled("costream_worker_room_epoch")).unwrap() >= 1.0);
    assert!(value(&text, &labelled("costream_worker_mixer_cpu_seconds")).is_some());

    // It stops: its series go with it.
    let (code, body) = api.stop_live(&room).await?;
    assert_eq!(code, 200, "{body}");
    let text = eventually("the room gone", Duration::from_secs(10), || async {
        let text = scrape(&http, &base).await?;
        Ok((value(&text, "costream_worker_mixers") == Some(0.0)).then_some(text))
    })
    .await?;
    assert!(!text.contains("room="), "{text}");
    assert_eq!(value(&text, "costream_worker_used_cores"), Some(0.0));
    Ok(())
}
