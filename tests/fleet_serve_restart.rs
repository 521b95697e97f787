//! On a fleet, serve can die and come back without the CDN noticing (issue 15 item 2): a real
//! `redis-server`, nginx-rtmp as the CDN, a `costream worker` on 127.0.0.2 and `costream serve`
//! with its rooms in Redis; a `costream publish` guest in the room. serve is killed with
//! `kill -9` (and, the second time, stopped with SIGTERM as in an upgrade) and started again on
//! the same port: the worker's mixer is the same process throughout, nginx keeps one publisher
//! whose byte count never stops growing, the guest's tile shows its name slate while serve is
//! away, and the guest's camera is back in the mix by itself once serve answers. Ending the room
//! still stops the mixer at once (an orphan is only what serve did not let go of).
//!
//! Timings are printed and checked with generous bounds (behaviour, not speed).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cdn::{sole_publisher, CdnSampler};
use common::{
    eventually, participants_in_mix, process_gone, Api, Publisher, PublisherOptions, Room, Serve,
    Worker,
};
use costream_testkit::{close_to, mean_rgb, FrameReader, Nginx, Redis};
use serde_json::json;

const RED: [u8; 3] = [255, 0, 0];
const KEY: &str = "fleet-restart";
/// Generous: a loaded 2-core machine runs serve, a worker, a mixer, nginx and a publisher.
const GUEST_BACK_WITHIN: Duration = Duration::from_secs(20);

fn mean_centre(frame: &[u8]) -> [u8; 3] {
    mean_rgb(frame, 160, 60, 30, 40, 30)
}

/// Waits until the program's centre is (`red`) or is not (`!red`) the guest's red camera.
async fn centre_red(reader: &FrameReader, red: bool, within: Duration) -> anyhow::Result<()> {
    let what = if red {
        "the red camera in the mix"
    } else {
        "a slate instead of the camera"
    };
    eventually(what, within, || async {
        let frame = tokio::task::block_in_place(|| reader.next_frame(Duration::from_secs(5)));
        Ok(frame.filter(|f| close_to(mean_centre(f), RED, 30) == red))
    })
    .await?;
    Ok(())
}

struct Fleet {
    nginx: Arc<Nginx>,
    _redis: Redis,
    _worker: Worker,
    config: String,
    data_dir: std::path::PathBuf,
}

impl Fleet {
    fn start_serve(&self, listen: &str) -> anyhow::Result<Serve> {
        Serve::start_with_config_and_data_dir_on(&self.config, &self.data_dir, listen)
    }
}

/// Stops serve with `signal`, starts it again on the same port; returns the new serve, when it
/// answered, and when the guest was back in the mix.
async fn restart(
    fleet: &Fleet,
    mut serve: Serve,
    signal: &str,
    room: &Room,
    mixer_pid: u64,
    reader: &FrameReader,
) -> anyhow::Result<(Serve, Duration)> {
    let listen = serve.listen_addr().to_string();
    serve.signal(signal)?;
    serve.wait_exit(Duration::from_secs(20))?;
    drop(serve);
    // serve is gone: the mixer pushes on, the guest's tile turns into its slate.
    centre_red(reader, false, Duration::from_secs(10)).await?;
    assert!(
        !process_gone(mixer_pid as u32),
        "the mixer stopped with serve"
    );

    let started = Instant::now();
    let serve = fleet.start_serve(&listen)?;
    let answered = started.elapsed();
    let api = Api::new(&serve.base_url);
    let status = eventually(
        "the room live with the same mixer",
        Duration::from_secs(20),
        || async {
            let status = api.status(room).await?;
            let same_mixer = status["broadcast"] == "live" && status["mixer"]["pid"] == mixer_pid;
            // The worker answers the new serve's Start from memory: Ready, the output live.
            Ok((same_mixer && status["outputs"][0]["state"] == "live").then_some(status))
        },
    )
    .await?;
    assert_eq!(status["mixer"]["restarts"], 0, "{status}");
    eventually("the guest back in the mix", GUEST_BACK_WITHIN, || async {
        let status = api.status(room).await?;
        Ok((participants_in_mix(&status) == 1).then_some(()))
    })
    .await?;
    let guest_back = started.elapsed();
    centre_red(reader, true, Duration::from_secs(15)).await?;
    eprintln!(
        "serve {signal}: answered {:.2} s after start, guest back in the mix {:.2} s after start",
        answered.as_secs_f64(),
        guest_back.as_secs_f64()
    );
    Ok((serve, guest_back))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_mixer_pushes_on_while_serve_is_killed_and_restarted() -> anyhow::Result<()> {
    let redis = Redis::start()?;
    let nginx = Arc::new(Nginx::start()?);
    let worker = Worker::start(
        &redis.url(),
        "127.0.0.2",
        "w-restart",
        &["--capacity-cores", "1.0", "--warm", "1"],
    )?;
    let fleet = Fleet {
        nginx: nginx.clone(),
        config: format!("[cluster]\nredis_url = \"{}\"\n", redis.url()),
        _redis: redis,
        _worker: worker,
        data_dir: common::temp_data_dir(),
    };
    let result = scenario(&fleet).await;
    let _ = std::fs::remove_dir_all(&fleet.data_dir);
    result
}

async fn scenario(fleet: &Fleet) -> anyhow::Result<()> {
    let serve = fleet.start_serve("127.0.0.1:0")?;
    let api = Api::new(&serve.base_url);
    api.wait_for_workers(1).await?;
    let room = api
        .create_room(json!({
            "outputs": [{"url": fleet.nginx.rtmp_url(KEY)}],
            "video": {"width": 640, "height": 360, "fps": 15, "bitrate_kbps": 800},
        }))
        .await?;
    let _guest = Publisher::start(
        &room.whip_url,
        &room.guest_token,
        PublisherOptions::red_vp8(),
    )?;
    let (code, body) = api.go_live(&room).await?;
    anyhow::ensure!(code == 200, "go live: {code} {body}");
    let status = api.live_with(&room, 1).await?;
    let mixer_pid = status["mixer"]["pid"].as_u64().expect("the mixer's pid");
    let reader = FrameReader::start(&fleet.nginx.rtmp_url(KEY), 160, 90, 5)?;
    centre_red(&reader, true, Duration::from_secs(15)).await?;
    let publisher = sole_publisher(&fleet.nginx, KEY).await?;
    let cdn = CdnSampler::start(fleet.nginx.clone(), KEY);

    let (serve, _) = restart(fleet, serve, "KILL", &room, mixer_pid, &reader).await?;
    // An upgrade: SIGTERM, the new binary started on the same port.
    let (serve, _) = restart(fleet, serve, "TERM", &room, mixer_pid, &reader).await?;

    let still = cdn.finish(publisher)?;
    eprintln!(
        "the CDN saw one publisher throughout two serve restarts; its bytes stood still at most {:.1} s",
        still.as_secs_f64()
    );
    assert!(
        still < Duration::from_secs(3),
        "the output stalled {still:?}"
    );

    // Ending the room stops the mixer at once: serve lets go with a Stop, no orphan is left.
    let api = Api::new(&serve.base_url);
    let ended = Instant::now();
    let (code, _) = api.end_room(&room).await?;
    assert_eq!(code, 204);
    eventually(
        "the publisher gone from nginx",
        Duration::from_secs(10),
        || async { Ok(fleet.nginx.publisher_ids(KEY).is_empty().then_some(())) },
    )
    .await?;
    eventually(
        "the mixer process gone",
        Duration::from_secs(10),
        || async { Ok(process_gone(mixer_pid as u32).then_some(())) },
    )
    .await?;
    eprintln!(
        "room ended: publisher gone from nginx after {:.2} s",
        ended.elapsed().as_secs_f64()
    );
    Ok(())
}
