//! A true network partition of a fleet worker (issue 12 item 4): the worker and its mixers run
//! in a network namespace of this test's own, linked to the host by a veth pair; taking the
//! host end down cuts it off from serve, Redis and the CDN at once while every process keeps
//! running. The room must be live again on another worker within 8 s, measured at the CDN; the
//! cut-off worker must stop its mixer by itself; and once the link is back, the CDN must see
//! exactly one publisher for the room's key.
//!
//! Needs root (CAP_NET_ADMIN) for `ip netns` / `ip link`, as on the development machines.

mod common;

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    children_of, eventually, process_gone, Api, Publisher, PublisherOptions, Serve, Worker,
};
use costream_testkit::{Nginx, NginxOptions, Redis};
use serde_json::json;

/// A network namespace with one veth link to the host (`/30`: host .1, namespace .2). Removed on
/// drop (deleting the namespace deletes its end of the pair, and with it the host's).
struct NetNs {
    name: String,
    host_if: String,
    host_ip: IpAddr,
    ns_ip: IpAddr,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {} (this test needs root for network namespaces)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

impl NetNs {
    fn create() -> anyhow::Result<Self> {
        let tag = std::process::id() % 100_000;
        // A /30 per test process, in a range nothing else here uses.
        let subnet = (tag % 60) as u8 * 4;
        let ns = Self {
            name: format!("cs-part-{tag}"),
            host_if: format!("csh{tag}"),
            host_ip: IpAddr::from([10, 231, 7, subnet + 1]),
            ns_ip: IpAddr::from([10, 231, 7, subnet + 2]),
        };
        let ns_if = format!("csn{tag}");
        let _ = Command::new("ip").args(["netns", "del", &ns.name]).output();
        ip(&["netns", "add", &ns.name])?;
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns_if,
        ])?;
        ip(&["link", "set", &ns_if, "netns", &ns.name])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", ns.host_ip),
            "dev",
            &ns.host_if,
        ])?;
        ip(&["link", "set", &ns.host_if, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns.name, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&["link", "set", "lo", "up"])?;
        inside(&["addr", "add", &format!("{}/30", ns.ns_ip), "dev", &ns_if])?;
        inside(&["link", "set", &ns_if, "up"])?;
        inside(&["route", "add", "default", "via", &ns.host_ip.to_string()])?;
        Ok(ns)
    }

    /// Takes the link down (`false`) or up again.
    fn link(&self, up: bool) -> anyhow::Result<()> {
        ip(&["link", "set", &self.host_if, if up { "up" } else { "down" }])
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

/// A worker off loopback must authenticate serve's placements.
const CLUSTER_SECRET: &str = "partition-test-secret-of-32-characters";

const WORKER_FLAGS: &[&str] = &[
    "--capacity-cores",
    "0.5",
    "--max-utilization",
    "1.0",
    "--warm",
    "1",
    "--cluster-secret",
    CLUSTER_SECRET,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_worker_loses_its_room_to_another_and_never_publishes_twice(
) -> anyhow::Result<()> {
    let net = NetNs::create()?;
    let redis = Redis::start_also_on(&[net.host_ip])?;
    // The CDN drops a publisher that falls silent (as edges do), freeing the key for the
    // room's new worker; nginx's default would hold it for minutes.
    let nginx = Nginx::start_with(&NginxOptions {
        also_listen: Some(net.host_ip),
        drop_idle_publisher: Some(Duration::from_secs(3)),
    })?;
    let redis_from_ns = format!("redis://{}:{}", net.host_ip, redis.port);
    let cut_off = Worker::start_in_netns(
        &net.name,
        &redis_from_ns,
        &net.ns_ip.to_string(),
        "w-island",
        WORKER_FLAGS,
    )?;
    let serve = Serve::start_with_config(&format!(
        "[cluster]\nredis_url = \"{}\"\nsecret = \"{CLUSTER_SECRET}\"\n",
        redis.url()
    ))?;
    let api = Api::new(&serve.base_url);
    api.wait_for_workers(1).await?;

    // The room goes live on the worker in the namespace (the only one yet), with a guest whose
    // RTP crosses the link; the output URL is reachable from both sides.
    let key = "island";
    let output = format!("rtmp://{}:{}/live/{key}", net.host_ip, nginx.rtmp_port);
    let room = api
        .create_room(json!({
            "outputs": [{"url": output}],
            "video": {"width": 640, "height": 360, "fps": 15, "bitrate_kbps": 800},
        }))
        .await?;
    let _guest = Publisher::start(
        &room.whip_url,
        &room.guest_token,
        PublisherOptions::red_vp8(),
    )?;
    api.wait_for_tracks(&room, 2).await?;
    let (code, body) = api.go_live(&room).await?;
    anyhow::ensure!(code == 200, "go live: {code} {body}");
    eventually(
        "live on the namespaced worker",
        Duration::from_secs(20),
        || async {
            let status = api.status(&room).await?;
            let live = status["outputs"][0]["state"] == "live"
                && status["mixer"]["worker"] == "w-island"
                && status["participants"][0]["tracks"][0]["in_mix"] == true;
            Ok(live.then_some(()))
        },
    )
    .await?;
    let _healthy = Worker::start(&redis.url(), "127.0.0.9", "w-main", WORKER_FLAGS)?;
    api.wait_for_workers(2).await?;
    let old_ids = nginx.publisher_ids(key);
    anyhow::ensure!(old_ids.len() == 1, "publishers before the cut: {old_ids:?}");
    let status = api.status(&room).await?;
    let island_mixer = status["mixer"]["pid"]
        .as_u64()
        .and_then(|pid| u32::try_from(pid).ok())
        .ok_or_else(|| anyhow::anyhow!("no mixer pid in {status}"))?;
    anyhow::ensure!(
        children_of(cut_off.pid()).contains(&island_mixer),
        "the room's mixer {island_mixer} is not the island worker's"
    );

    // The cut: every process keeps running, nothing crosses the link.
    net.link(false)?;
    let cut_at = Instant::now();
    let moved_in = eventually(
        "a new publisher at the CDN",
        Duration::from_secs(15),
        || async {
            let ids = nginx.publisher_ids(key);
            let bytes = nginx.publisher_bytes_in(key).unwrap_or(0);
            let fresh = ids.len() == 1 && !old_ids.contains(&ids[0]) && bytes > 0;
            Ok(fresh.then(|| cut_at.elapsed()))
        },
    )
    .await?;
    println!(
        "MEASURE fleet_partition_failover_ms={}",
        moved_in.as_millis()
    );
    assert!(
        moved_in < Duration::from_secs(8),
        "moved after {moved_in:?}"
    );
    let status = api.status(&room).await?;
    assert_eq!(status["mixer"]["worker"], "w-main", "{status}");
    // The cut-off worker stopped its own mixer (serve went silent), still cut off.
    eventually(
        "the island's mixer stopped",
        Duration::from_secs(8),
        || async { Ok(process_gone(island_mixer).then_some(())) },
    )
    .await?;
    let stopped_in = cut_at.elapsed();
    println!(
        "MEASURE fleet_partition_island_mixer_stopped_ms={}",
        stopped_in.as_millis()
    );

    // The link heals: the island finds its room held elsewhere; one publisher, the new one.
    net.link(true)?;
    let new_ids = nginx.publisher_ids(key);
    let healed = Instant::now();
    while healed.elapsed() < Duration::from_secs(5) {
        let ids = nginx.publisher_ids(key);
        assert_eq!(
            ids, new_ids,
            "one publisher per key after the partition heals"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The island worker is alive and serving again (it registers once Redis is reachable).
    api.wait_for_workers(2).await?;
    let status = api.status(&room).await?;
    assert_eq!(status["outputs"][0]["state"], "live", "{status}");
    Ok(())
}
