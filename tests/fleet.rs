//! The fleet with real processes: a real `redis-server`, nginx-rtmp as the CDN, `costream
//! serve --redis` and `costream worker`s on distinct loopback addresses (127.0.0.2, …) standing
//! in for machines. Rooms spread over the workers by free capacity; a worker killed or frozen
//! loses its rooms to the others (timed at the CDN), a frozen worker's mixers stop pushing by
//! themselves so the CDN keeps exactly one publisher per stream key; Redis going away touches no
//! live room; a draining worker takes no new room and hands its room over at its deadline.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{eventually, process_gone, Api, Publisher, PublisherOptions, Room, Serve, Worker};
use costream_testkit::{close_to, mean_rgb, FrameReader, Nginx, Redis};
use serde_json::{json, Value};

const RED: [u8; 3] = [255, 0, 0];

/// The tests in this file time failovers; run one at a time on the 2 cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A cheap room: 640x360 at 15 fps, 800 kbit/s, charged 0.15 cores with 4 reserved inputs.
fn small_room(nginx: &Nginx, key: &str) -> Value {
    json!({
        "outputs": [{"url": nginx.rtmp_url(key)}],
        "video": {"width": 640, "height": 360, "fps": 15, "bitrate_kbps": 800},
    })
}

/// Three small rooms fit on each worker (so one worker can take everyone's rooms).
const WORKER_FLAGS: &[&str] = &[
    "--capacity-cores",
    "0.5",
    "--max-utilization",
    "1.0",
    "--warm",
    "1",
];

fn serve_on(redis: &Redis) -> anyhow::Result<Serve> {
    Serve::start_with_config(&format!("[cluster]\nredis_url = \"{}\"\n", redis.url()))
}

/// Goes live and waits until the output is live; returns the worker running the mixer.
async fn go_live_on_a_worker(api: &Api, room: &Room) -> anyhow::Result<String> {
    let (code, body) = api.go_live(room).await?;
    anyhow::ensure!(code == 200, "go live: {code} {body}");
    eventually(
        "output live on a worker",
        Duration::from_secs(20),
        || async {
            let status = api.status(room).await?;
            let live = status["outputs"][0]["state"] == "live";
            Ok(live
                .then(|| status["mixer"]["worker"].as_str().map(str::to_string))
                .flatten())
        },
    )
    .await
}

/// Waits until nginx has a publisher for `key` that is not one of `old` and receives bytes
/// from it; returns its id and how long that took since `since`.
async fn new_publisher_at_cdn(
    nginx: &Nginx,
    key: &str,
    old: &[u64],
    since: Instant,
    within: Duration,
) -> anyhow::Result<(u64, Duration)> {
    let mut first_seen: Option<(u64, u64)> = None;
    loop {
        let ids = nginx.publisher_ids(key);
        let bytes = nginx.publisher_bytes_in(key).unwrap_or(0);
        match (ids.as_slice(), first_seen) {
            ([id], Some((seen_id, seen_bytes))) if *id == seen_id && bytes > seen_bytes => {
                return Ok((*id, since.elapsed()));
            }
            ([id], _) if !old.contains(id) => first_seen = Some((*id, bytes)),
            _ => {}
        }
        anyhow::ensure!(
            since.elapsed() < within,
            "no new publisher of {key} at the CDN within {within:?} (publishers now {ids:?})"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn red_on_air(url: &str) -> anyhow::Result<()> {
    let reader = FrameReader::start(url, 160, 90, 5)?;
    eventually("red in the output", Duration::from_secs(15), || async {
        let frame = tokio::task::block_in_place(|| reader.next_frame(Duration::from_secs(5)));
        Ok(frame.filter(|f| close_to(mean_rgb(f, 160, 60, 30, 40, 30), RED, 12)))
    })
    .await?;
    Ok(())
}

fn red_guest(room: &Room) -> anyhow::Result<Publisher> {
    Publisher::start(
        &room.whip_url,
        &room.guest_token,
        PublisherOptions {
            color: "red",
            tone_hz: 440,
            codec: "vp8",
            name: "guest",
        },
    )
}

fn worker_index(workers: &[Worker], id: &str) -> usize {
    workers
        .iter()
        .position(|w| w.id == id)
        .unwrap_or_else(|| panic!("no worker {id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_spread_over_workers_and_move_when_a_worker_dies_or_freezes() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let redis = Redis::start()?;
    let nginx = Nginx::start()?;
    let mut workers = vec![
        Worker::start(&redis.url(), "127.0.0.2", "w-a", WORKER_FLAGS)?,
        Worker::start(&redis.url(), "127.0.0.3", "w-b", WORKER_FLAGS)?,
        Worker::start(&redis.url(), "127.0.0.4", "w-c", WORKER_FLAGS)?,
    ];
    let serve = serve_on(&redis)?;
    let api = Api::new(&serve.base_url);
    let view = api.wait_for_workers(3).await?;
    assert!(
        (view["free"].as_f64().unwrap() - 1.5).abs() < 0.01,
        "{view}"
    );
    assert_eq!(view["workers"][0]["state"], "serving", "{view}");

    // Three rooms go to three different workers (spread by free capacity); room a has a guest.
    let a = api.create_room(small_room(&nginx, "a")).await?;
    let b = api.create_room(small_room(&nginx, "b")).await?;
    let c = api.create_room(small_room(&nginx, "c")).await?;
    let guest = red_guest(&a)?;
    api.wait_for_tracks(&a, 2).await?;
    let mut placed = Vec::new();
    for room in [&a, &b, &c] {
        placed.push(go_live_on_a_worker(&api, room).await?);
    }
    let distinct: HashSet<&String> = placed.iter().collect();
    assert_eq!(distinct.len(), 3, "rooms not spread: {placed:?}");
    let view = eventually(
        "the pool lists each worker's room",
        Duration::from_secs(5),
        || async {
            let view = api.pool().await?;
            let hosting = view["workers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|w| w["rooms"].as_array().is_some_and(|r| r.len() == 1))
                .count();
            Ok((hosting == 3).then_some(view))
        },
    )
    .await?;
    println!("fleet view with three rooms: {view}");
    // The guest's RTP crosses to the worker's address: the mix shows it.
    red_on_air(&nginx.rtmp_url("a")).await?;

    // kill -9 of the worker running room a (and of its mixers): a machine lost.
    let old_ids = nginx.publisher_ids("a");
    let killed = worker_index(&workers, &placed[0]);
    let killed_at = Instant::now();
    workers[killed].kill_all();
    let (_, took) =
        new_publisher_at_cdn(&nginx, "a", &old_ids, killed_at, Duration::from_secs(10)).await?;
    println!("MEASURE fleet_failover_kill_ms={}", took.as_millis());
    assert!(
        took < Duration::from_secs(3),
        "room a back at the CDN after {took:?}"
    );
    let status = api.status(&a).await?;
    let moved_to = status["mixer"]["worker"].as_str().unwrap_or("").to_string();
    assert!(
        !moved_to.is_empty() && moved_to != placed[0],
        "room a still on {moved_to:?}: {status}"
    );
    red_on_air(&nginx.rtmp_url("a")).await?;

    // SIGSTOP of the worker running room b: silent but alive.
    let b_status = api.status(&b).await?;
    let frozen_mixer = b_status["mixer"]["pid"].as_u64().expect("mixer pid") as u32;
    let old_ids = nginx.publisher_ids("b");
    let frozen = worker_index(&workers, &placed[1]);
    let frozen_at = Instant::now();
    workers[frozen].signal("STOP")?;
    let (new_id, took) =
        new_publisher_at_cdn(&nginx, "b", &old_ids, frozen_at, Duration::from_secs(15)).await?;
    println!("MEASURE fleet_failover_partition_ms={}", took.as_millis());
    assert!(
        took < Duration::from_secs(8),
        "room b back at the CDN after {took:?}"
    );
    // The frozen worker's mixer stopped pushing by itself (its watchdog), before it resumes.
    assert!(
        process_gone(frozen_mixer),
        "the frozen worker's mixer still runs"
    );
    let status = api.status(&b).await?;
    assert_ne!(status["mixer"]["worker"], placed[1].as_str(), "{status}");

    // It resumes: nothing of room b comes back from it; one publisher per key, the new one.
    workers[frozen].signal("CONT")?;
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert_eq!(
            nginx.publisher_ids("b"),
            vec![new_id],
            "publishers of b after resume"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for key in ["a", "b", "c"] {
        assert_eq!(nginx.publisher_ids(key).len(), 1, "publishers of {key}");
    }
    // Room c never moved.
    assert_eq!(api.status(&c).await?["mixer"]["worker"], placed[2].as_str());
    // The dead worker leaves the registry when its record expires.
    api.wait_for_workers(2).await?;
    guest.leave()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_away_live_rooms_stream_on_and_new_go_lives_wait() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mut redis = Redis::start()?;
    let nginx = Nginx::start()?;
    let _worker = Worker::start(&redis.url(), "127.0.0.5", "w-r", WORKER_FLAGS)?;
    let serve = serve_on(&redis)?;
    let api = Api::new(&serve.base_url);
    api.wait_for_workers(1).await?;
    let a = api.create_room(small_room(&nginx, "ra")).await?;
    let b = api.create_room(small_room(&nginx, "rb")).await?;
    go_live_on_a_worker(&api, &a).await?;
    let publisher = nginx.publisher_ids("ra");
    assert_eq!(publisher.len(), 1);

    redis.stop();
    let away_since = Instant::now();
    // Once serve's view of the fleet is stale (3 s), a go-live is refused with the reason: the
    // very first attempt (an attempt that went live would crash-loop without Redis instead).
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (code, body) = api.go_live(&b).await?;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["error"], "coordinator_unavailable", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("Redis"),
        "{body}"
    );
    // Room a streams on for the whole outage (30 s, as the issue asks), on the same CDN session.
    let mut last = nginx.publisher_bytes_in("ra").unwrap_or(0);
    while away_since.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = nginx.publisher_bytes_in("ra").unwrap_or(0);
        assert!(now > last, "room a stalled while Redis was away");
        assert_eq!(nginx.publisher_ids("ra"), publisher);
        last = now;
    }

    // Redis comes back empty: workers register again, go-lives work, room a was never touched.
    redis.restart()?;
    let back = Instant::now();
    eventually(
        "go-live after Redis is back",
        Duration::from_secs(15),
        || async {
            let (code, _) = api.go_live(&b).await?;
            Ok((code == 200).then_some(()))
        },
    )
    .await?;
    println!(
        "MEASURE fleet_redis_back_to_go_live_ms={}",
        back.elapsed().as_millis()
    );
    eventually("room b live", Duration::from_secs(20), || async {
        Ok((api.status(&b).await?["outputs"][0]["state"] == "live").then_some(()))
    })
    .await?;
    assert_eq!(nginx.publisher_ids("ra"), publisher, "room a was restarted");
    // Its worker took its lease back in the new Redis.
    let lease = redis.command(&format!("GET costream:lease:{}", a.id))?;
    assert!(lease.contains("w-r/"), "lease of room a: {lease:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_worker_takes_no_new_room_and_hands_its_room_over() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let redis = Redis::start()?;
    let nginx = Nginx::start()?;
    let mut flags = WORKER_FLAGS.to_vec();
    flags.extend(["--drain-timeout-secs", "4"]);
    let mut old = Worker::start(&redis.url(), "127.0.0.6", "w-old", &flags)?;
    let serve = serve_on(&redis)?;
    let api = Api::new(&serve.base_url);
    api.wait_for_workers(1).await?;
    let a = api.create_room(small_room(&nginx, "da")).await?;
    let _guest = red_guest(&a)?;
    api.wait_for_tracks(&a, 2).await?;
    assert_eq!(go_live_on_a_worker(&api, &a).await?, "w-old");

    // A new version joins; the old one is told to go (SIGTERM).
    let _new = Worker::start(&redis.url(), "127.0.0.7", "w-new", WORKER_FLAGS)?;
    api.wait_for_workers(2).await?;
    let old_ids = nginx.publisher_ids("da");
    assert_eq!(old_ids.len(), 1);
    old.signal("TERM")?;
    let started_draining = Instant::now();
    eventually("old worker draining", Duration::from_secs(5), || async {
        let view = api.pool().await?;
        let draining = view["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|w| w["worker_id"] == "w-old" && w["state"] == "draining");
        Ok(draining.then_some(()))
    })
    .await?;
    // New rooms go to the new worker only, though the old one has room.
    let b = api.create_room(small_room(&nginx, "db")).await?;
    assert_eq!(go_live_on_a_worker(&api, &b).await?, "w-new");
    // Room a streams on the old worker until the drain deadline, then moves make before
    // break: its successor on w-new starts (the status names it and says "moving") while the
    // old publisher is still at the CDN, and the output moves once the successor shows the
    // program.
    let mut successor_seen_at = None;
    let gone_at = loop {
        let status = api.status(&a).await?;
        if successor_seen_at.is_none() && status["mixer"]["worker"] == "w-new" {
            successor_seen_at = Some(Instant::now());
            assert_eq!(status["mixer"]["state"], "moving", "{status}");
        }
        let ids = nginx.publisher_ids("da");
        if !ids.iter().any(|id| old_ids.contains(id)) {
            break Instant::now();
        }
        anyhow::ensure!(
            started_draining.elapsed() < Duration::from_secs(30),
            "room a never left the old worker"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let successor_seen_at = successor_seen_at.ok_or_else(|| {
        anyhow::anyhow!("the successor never showed before the old publisher left")
    })?;
    assert!(successor_seen_at <= gone_at);
    let (_, gap) =
        new_publisher_at_cdn(&nginx, "da", &old_ids, gone_at, Duration::from_secs(10)).await?;
    println!(
        "MEASURE fleet_drain_output_gap_ms={} successor_started_before_ms={}",
        gap.as_millis(),
        gone_at.duration_since(successor_seen_at).as_millis()
    );
    assert!(gap < Duration::from_secs(3), "output gap {gap:?}");
    // The old worker exits once its room has moved, well before its hard limit.
    old.wait_exit(Duration::from_secs(20))?;
    let status = api.status(&a).await?;
    assert_eq!(
        status["mixer"]["restarts"], 0,
        "a planned move is no restart: {status}"
    );
    assert_eq!(status["mixer"]["state"], "running", "{status}");
    assert_eq!(status["outputs"][0]["state"], "live", "{status}");
    // The guest's RTP now goes to the successor: the mix still shows it.
    red_on_air(&nginx.rtmp_url("da")).await?;
    assert_eq!(api.status(&a).await?["mixer"]["worker"], "w-new");
    api.wait_for_workers(1).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serve_with_pool_local_is_a_worker_of_its_own_fleet() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let redis = Redis::start()?;
    let nginx = Nginx::start()?;
    let serve = Serve::start_with_config(&format!(
        "[cluster]\nredis_url = \"{}\"\n[pool]\nlocal = true\ncapacity_cores = 0.5\nmax_utilization = 1.0\n",
        redis.url()
    ))?;
    let api = Api::new(&serve.base_url);
    let view = api.wait_for_workers(1).await?;
    let local = view["workers"][0]["worker_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(local.ends_with("-serve"), "{view}");
    assert!(
        (view["capacity"].as_f64().unwrap() - 0.5).abs() < 0.01,
        "{view}"
    );
    let a = api.create_room(small_room(&nginx, "local")).await?;
    assert_eq!(go_live_on_a_worker(&api, &a).await?, local);
    // A worker of its own joins: the next room goes where there is more room.
    let _other = Worker::start(&redis.url(), "127.0.0.8", "w-other", WORKER_FLAGS)?;
    api.wait_for_workers(2).await?;
    let b = api.create_room(small_room(&nginx, "local-b")).await?;
    assert_eq!(go_live_on_a_worker(&api, &b).await?, "w-other");
    Ok(())
}
