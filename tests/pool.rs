//! The mixer pool with real processes: warm mixers (idle CPU ~0, warm vs cold go-live), admission
//! by cost (503 + Retry-After, the live room untouched), graceful drain on SIGTERM, no orphan
//! mixers when serve is killed, and a rolling upgrade to another mixer binary.

mod common;

use std::time::{Duration, Instant};

use common::{children_of, cpu_seconds, eventually, process_gone, Api, Room, Serve};
use costream_testkit::Nginx;
use serde_json::{json, Value};

/// A cheap room (the tests share 2 cores): 640x360 at 15 fps, 800 kbit/s. With 4 reserved
/// inputs the cost model charges it 0.15 cores.
fn small_room(nginx: &Nginx, key: &str) -> Value {
    json!({
        "outputs": [{"url": nginx.rtmp_url(key)}],
        "video": {"width": 640, "height": 360, "fps": 15, "bitrate_kbps": 800},
    })
}

async fn readyz(api: &Api) -> anyhow::Result<u16> {
    Ok(api
        .http()
        .get(api.url("/readyz"))
        .send()
        .await?
        .status()
        .as_u16())
}

async fn warm_pids(api: &Api, count: usize) -> anyhow::Result<Vec<u64>> {
    eventually("warm mixers ready", Duration::from_secs(20), || async {
        let view = api.pool().await?;
        let pids: Vec<u64> = view["warm_pids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
            .collect();
        Ok((pids.len() == count).then_some(pids))
    })
    .await
}

/// Goes live and returns how long until nginx received the first bytes of the mix.
async fn go_live_to_first_byte(
    api: &Api,
    room: &Room,
    nginx: &Nginx,
    key: &str,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let (code, body) = api.go_live(room).await?;
    anyhow::ensure!(code == 200, "go live: {code} {body}");
    loop {
        if nginx.publisher_bytes_in(key).unwrap_or(0) > 0 {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(20),
            "no bytes at nginx"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn bytes_grow(nginx: &Nginx, key: &str) -> anyhow::Result<()> {
    let before = nginx.publisher_bytes_in(key).unwrap_or(0);
    eventually("output still flowing", Duration::from_secs(5), || async {
        Ok((nginx.publisher_bytes_in(key).unwrap_or(0) > before).then_some(()))
    })
    .await
}

fn exe_of(pid: u64) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_pool_admission_by_cost_and_pool_view() -> anyhow::Result<()> {
    let nginx = Nginx::start()?;
    // 0.25 cores: one small room (0.15) fits, a second does not.
    let serve = Serve::start_with_config(
        "[pool]\nwarm = 1\ncapacity_cores = 0.25\nmax_utilization = 1.0\nretry_after_secs = 7\n",
    )?;
    let api = Api::new(&serve.base_url);

    // Only the warm mixer exists, and an idle serve with its warm mixer uses ~no CPU.
    let warm = warm_pids(&api, 1).await?;
    assert_eq!(
        children_of(serve.pid()),
        vec![warm[0] as u32],
        "only the warm mixer"
    );
    assert_eq!(readyz(&api).await?, 200);
    let cpu =
        || cpu_seconds(serve.pid()).unwrap_or(0.0) + cpu_seconds(warm[0] as u32).unwrap_or(0.0);
    let before = cpu();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = cpu() - before;
    println!("MEASURE idle_cpu_serve_plus_warm_mixer_3s={idle:.3}s");
    assert!(
        idle < 0.06,
        "idle serve + warm mixer used {idle:.3} s of CPU in 3 s"
    );

    // Going live takes the warm mixer; the pool refills with a new one.
    let a = api.create_room(small_room(&nginx, "a")).await?;
    let warm_start = go_live_to_first_byte(&api, &a, &nginx, "a").await?;
    println!(
        "MEASURE warm_go_live_to_first_flv_byte_ms={}",
        warm_start.as_millis()
    );
    let status = eventually("room a running", Duration::from_secs(10), || async {
        let s = api.status(&a).await?;
        Ok((s["mixer"]["state"] == "running").then_some(s))
    })
    .await?;
    assert_eq!(status["mixer"]["pid"].as_u64(), Some(warm[0]), "{status}");
    assert_eq!(status["mixer"]["warm"], true, "{status}");
    assert!(
        status["mixer"]["version"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "{status}"
    );
    let cost = status["cost"].as_f64().expect("cost in room status");
    assert!((0.1..0.3).contains(&cost), "{status}");
    let refilled = warm_pids(&api, 1).await?;
    assert_ne!(refilled, warm, "the pool refilled with a new process");

    // A second room does not fit: 503, Retry-After, a JSON message; room a is untouched.
    let b = api.create_room(small_room(&nginx, "b")).await?;
    let response = api
        .http()
        .post(api.url(&format!("/api/v1/rooms/{}/live", b.id)))
        .bearer_auth(&b.host_token)
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("7")
    );
    let body: Value = response.json().await?;
    assert_eq!(body["error"], "over_capacity", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("cores"), "{message}");
    println!("MEASURE over_capacity_message={message:?}");
    assert_eq!(api.status(&b).await?["broadcast"], "offline");
    bytes_grow(&nginx, "a").await?;
    assert_eq!(api.status(&a).await?["broadcast"], "live");

    let view = api.pool().await?;
    println!("MEASURE pool_view={view}");
    assert_eq!(view["capacity"], 0.25, "{view}");
    assert_eq!(view["used"].as_f64(), Some(cost), "{view}");
    assert_eq!(view["warm_mixers"], 1, "{view}");
    assert_eq!(view["rooms"][0]["room_id"], a.id.as_str(), "{view}");
    assert_eq!(view["rooms"][0]["cost"].as_f64(), Some(cost), "{view}");

    // When a stops, its share is free again and b is admitted; a's mixer is gone.
    let a_pid = status["mixer"]["pid"].as_u64().unwrap() as u32;
    let (code, _) = api.stop_live(&a).await?;
    assert_eq!(code, 200);
    assert_eq!(api.pool().await?["used"], 0.0);
    eventually("a's mixer gone", Duration::from_secs(10), || async {
        Ok(process_gone(a_pid).then_some(()))
    })
    .await?;
    let (code, body) = api.go_live(&b).await?;
    assert_eq!(code, 200, "{body}");
    let (code, _) = api.end_room(&b).await?;
    assert_eq!(code, 204);
    eventually(
        "only the warm mixer left",
        Duration::from_secs(10),
        || async { Ok((children_of(serve.pid()).len() == 1).then_some(())) },
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_live_rooms_then_stops_cleanly() -> anyhow::Result<()> {
    let nginx = Nginx::start()?;
    // No warm pool: this also measures a cold go-live.
    let mut serve =
        Serve::start_with_config("[pool]\nwarm = 0\n[server]\ndrain_timeout_secs = 60\n")?;
    let api = Api::new(&serve.base_url);
    assert!(
        children_of(serve.pid()).is_empty(),
        "no mixer without a live room"
    );
    let room = api.create_room(small_room(&nginx, "d")).await?;
    let cold = go_live_to_first_byte(&api, &room, &nginx, "d").await?;
    println!(
        "MEASURE cold_go_live_to_first_flv_byte_ms={}",
        cold.as_millis()
    );
    let mixers = children_of(serve.pid());
    assert_eq!(mixers.len(), 1);

    serve.signal("TERM")?;
    eventually("readyz 503", Duration::from_secs(5), || async {
        Ok((readyz(&api).await? == 503).then_some(()))
    })
    .await?;
    // Nothing new is admitted, with a message saying so.
    let (code, body) = api
        .send(reqwest::Method::POST, "/api/v1/rooms", None)
        .await?;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["error"], "draining", "{body}");
    // The live room keeps streaming through the drain.
    for _ in 0..3 {
        bytes_grow(&nginx, "d").await?;
    }
    assert!(
        serve.try_wait()?.is_none(),
        "serve exited while a room was live"
    );
    assert_eq!(api.status(&room).await?["broadcast"], "live");

    // The room ends: serve stops on its own, leaving nothing behind.
    let ended = Instant::now();
    let (code, _) = api.end_room(&room).await?;
    assert_eq!(code, 204);
    let status = serve.wait_exit(Duration::from_secs(10))?;
    println!(
        "MEASURE drain_room_end_to_exit_ms={}",
        ended.elapsed().as_millis()
    );
    assert!(status.success(), "{status}");
    for pid in mixers {
        assert!(process_gone(pid), "mixer {pid} outlived serve");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_and_second_signal_stop_live_rooms() -> anyhow::Result<()> {
    let nginx = Nginx::start()?;
    // Deadline: a room still live after 2 s of drain is stopped and serve exits.
    let mut serve =
        Serve::start_with_config("[pool]\nwarm = 1\n[server]\ndrain_timeout_secs = 2\n")?;
    let api = Api::new(&serve.base_url);
    let room = api.create_room(small_room(&nginx, "e")).await?;
    go_live_to_first_byte(&api, &room, &nginx, "e").await?;
    let mixers = eventually("live + warm mixer", Duration::from_secs(20), || async {
        let children = children_of(serve.pid());
        Ok((children.len() == 2).then_some(children))
    })
    .await?;
    let sent = Instant::now();
    serve.signal("TERM")?;
    let status = serve.wait_exit(Duration::from_secs(10))?;
    let took = sent.elapsed();
    println!("MEASURE drain_deadline_2s_exit_ms={}", took.as_millis());
    assert!(status.success(), "{status}");
    assert!(
        took >= Duration::from_secs(2),
        "exited before the deadline: {took:?}"
    );
    for pid in &mixers {
        assert!(process_gone(*pid), "mixer {pid} outlived serve");
    }

    // A second signal stops at once, long before the deadline.
    let mut serve =
        Serve::start_with_config("[pool]\nwarm = 0\n[server]\ndrain_timeout_secs = 600\n")?;
    let api = Api::new(&serve.base_url);
    let room = api.create_room(small_room(&nginx, "f")).await?;
    go_live_to_first_byte(&api, &room, &nginx, "f").await?;
    let mixers = children_of(serve.pid());
    serve.signal("TERM")?;
    eventually("draining", Duration::from_secs(5), || async {
        Ok((readyz(&api).await? == 503).then_some(()))
    })
    .await?;
    let sent = Instant::now();
    serve.signal("INT")?;
    let status = serve.wait_exit(Duration::from_secs(10))?;
    println!(
        "MEASURE second_signal_exit_ms={}",
        sent.elapsed().as_millis()
    );
    assert!(status.success(), "{status}");
    for pid in mixers {
        assert!(process_gone(pid), "mixer {pid} outlived serve");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_serve_leaves_no_mixer_behind() -> anyhow::Result<()> {
    let nginx = Nginx::start()?;
    let mut serve = Serve::start_with_config("[pool]\nwarm = 1\n")?;
    let api = Api::new(&serve.base_url);
    let room = api.create_room(small_room(&nginx, "k")).await?;
    go_live_to_first_byte(&api, &room, &nginx, "k").await?;
    let mixers = eventually("live + warm mixer", Duration::from_secs(20), || async {
        let children = children_of(serve.pid());
        Ok((children.len() == 2).then_some(children))
    })
    .await?;
    let killed = Instant::now();
    serve.signal("KILL")?;
    serve.wait_exit(Duration::from_secs(5))?;
    // The mixers are re-parented when serve dies; PR_SET_PDEATHSIG has the kernel kill them.
    eventually("every mixer gone", Duration::from_secs(3), || async {
        Ok(mixers.iter().all(|&pid| process_gone(pid)).then_some(()))
    })
    .await?;
    println!(
        "MEASURE serve_sigkill_to_mixers_gone_ms={}",
        killed.elapsed().as_millis()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rolls_new_rooms_onto_a_new_mixer_binary() -> anyhow::Result<()> {
    let nginx = Nginx::start()?;
    let dir = std::env::temp_dir().join(format!("costream-upgrade-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (old, new) = (dir.join("mixer-v1"), dir.join("mixer-v2"));
    std::fs::copy(common::BIN, &old)?;
    std::fs::copy(common::BIN, &new)?;
    let config = |binary: &std::path::Path| {
        format!(
            "[mixer]\nbinary = {:?}\n[pool]\nwarm = 1\n",
            binary.display().to_string()
        )
    };
    let serve = Serve::start_with_config(&config(&old))?;
    let api = Api::new(&serve.base_url);
    let old_warm = warm_pids(&api, 1).await?;
    assert_eq!(exe_of(old_warm[0]), old.display().to_string());

    let first = api.create_room(small_room(&nginx, "v1")).await?;
    go_live_to_first_byte(&api, &first, &nginx, "v1").await?;
    let status = eventually(
        "first room's output live",
        Duration::from_secs(15),
        || async {
            let s = api.status(&first).await?;
            Ok((s["outputs"][0]["state"] == "live").then_some(s))
        },
    )
    .await?;
    assert_eq!(
        status["mixer"]["binary"],
        old.display().to_string(),
        "{status}"
    );
    let first_pid = status["mixer"]["pid"].as_u64().unwrap();
    let warm_v1 = warm_pids(&api, 1).await?;

    // Point serve at the new binary.
    std::fs::write(serve.config_path.as_ref().unwrap(), config(&new))?;
    serve.signal("HUP")?;
    let warm_v2 = eventually(
        "warm mixers of the new binary",
        Duration::from_secs(20),
        || async {
            let view = api.pool().await?;
            let pids = warm_pids(&api, 1).await?;
            let on_new = view["mixer_binary"] == new.display().to_string()
                && exe_of(pids[0]) == new.display().to_string();
            Ok(on_new.then_some(pids))
        },
    )
    .await?;
    eventually("old warm mixer stopped", Duration::from_secs(5), || async {
        Ok(process_gone(warm_v1[0] as u32).then_some(()))
    })
    .await?;

    // New rooms run the new binary; the old room keeps its process and keeps streaming.
    let second = api.create_room(small_room(&nginx, "v2")).await?;
    go_live_to_first_byte(&api, &second, &nginx, "v2").await?;
    let status = eventually("second room running", Duration::from_secs(10), || async {
        let s = api.status(&second).await?;
        Ok((s["mixer"]["state"] == "running").then_some(s))
    })
    .await?;
    assert_eq!(
        status["mixer"]["binary"],
        new.display().to_string(),
        "{status}"
    );
    assert_eq!(status["mixer"]["pid"].as_u64(), Some(warm_v2[0]));
    let status = api.status(&first).await?;
    assert_eq!(status["mixer"]["pid"].as_u64(), Some(first_pid), "{status}");
    assert_eq!(
        status["mixer"]["binary"],
        old.display().to_string(),
        "{status}"
    );
    assert_eq!(status["outputs"][0]["state"], "live", "{status}");
    bytes_grow(&nginx, "v1").await?;
    bytes_grow(&nginx, "v2").await?;
    assert_eq!(exe_of(first_pid), old.display().to_string());
    drop(serve);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
