//! Many serve nodes behind one address (issue 15 items 3 and 4): a real `redis-server`, a
//! `costream worker` on 127.0.0.2, nginx-rtmp as the CDN and two `costream serve` nodes sharing
//! Redis, behind a TCP balancer standing in for the load balancer (each connection to the next
//! node that accepts it). A room created on node A is joined (a `costream publish` guest),
//! driven and followed (its event stream) through the balancer, so through either node: the one
//! that does not own it forwards to the owner. A second room goes to the less loaded node, B.
//! Then A is killed with `kill -9`: B adopts the room (live again, taking over the mixer A left
//! orphaned on the worker) and the guest reconnects by itself. A comes back, and B is stopped
//! with SIGTERM as in an upgrade: A adopts the room at once. The CDN sees one publisher
//! throughout.
//!
//! Timings are printed and checked with generous bounds (behaviour, not speed).

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::sse::Events;
use common::{eventually, participants_in_mix, Api, Publisher, PublisherOptions, Serve, Worker};
use costream_testkit::{Nginx, Redis};
use serde_json::json;

const KEY: &str = "nodes-show";
/// 32 bytes in base64: every serve node must share the store key.
const STORE_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

fn node_config(redis: &Redis, node_id: &str) -> String {
    format!(
        "[cluster]\nredis_url = \"{}\"\nnode_id = \"{node_id}\"\n\n[store]\nkey = \"{STORE_KEY}\"\n",
        redis.url()
    )
}

/// One address in front of the nodes: each connection goes to the next node (in turn) that
/// accepts it, as a TCP load balancer with health by connect.
struct Balancer {
    addr: SocketAddr,
    backends: Arc<Mutex<Vec<String>>>,
}

impl Balancer {
    async fn start(backends: Vec<String>) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let backends = Arc::new(Mutex::new(backends));
        let list = backends.clone();
        tokio::spawn(async move {
            let mut turn = 0usize;
            while let Ok((mut down, _)) = listener.accept().await {
                let mut order = list.lock().unwrap().clone();
                turn += 1;
                let len = order.len().max(1);
                order.rotate_left(turn % len);
                tokio::spawn(async move {
                    for backend in order {
                        if let Ok(mut up) = tokio::net::TcpStream::connect(&backend).await {
                            let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                            return;
                        }
                    }
                });
            }
        });
        Ok(Self { addr, backends })
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set(&self, backends: Vec<String>) {
        *self.backends.lock().unwrap() = backends;
    }
}

fn owner(redis: &Redis, room: &str) -> String {
    // A RESP bulk string: `$6` then the value (`$-1` alone: nobody).
    let answer = redis
        .command(&format!("GET costream:owner:{room}"))
        .unwrap_or_default();
    answer
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('$'))
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_owned_by_one_node_forwarded_from_others_and_adopted_when_it_dies(
) -> anyhow::Result<()> {
    let redis = Redis::start()?;
    let nginx = Nginx::start()?;
    let _worker = Worker::start(
        &redis.url(),
        "127.0.0.2",
        "w-nodes",
        &["--capacity-cores", "1.0", "--warm", "1"],
    )?;
    let (dir_a, dir_b) = (common::temp_data_dir(), common::temp_data_dir());
    let result = async {
        let mut node_a = Serve::start_with_config_and_data_dir(&node_config(&redis, "node-a"), &dir_a)?;
        let mut node_b = Serve::start_with_config_and_data_dir(&node_config(&redis, "node-b"), &dir_b)?;
        let (api_a, api_b) = (Api::new(&node_a.base_url), Api::new(&node_b.base_url));
        let balancer = Balancer::start(vec![
            node_a.listen_addr().to_string(),
            node_b.listen_addr().to_string(),
        ])
        .await?;
        // A fresh client per phase: a pooled connection would stay on a node that stopped.
        let api = || Api::new(&balancer.url());
        api_a.wait_for_workers(1).await?;
        api_b.wait_for_workers(1).await?;
        // Both nodes see each other before the first room (ties stay on the node asked).
        eventually("both nodes registered", Duration::from_secs(10), || async {
            let nodes = redis.command("SMEMBERS costream:nodes")?;
            Ok((nodes.contains("node-a") && nodes.contains("node-b")).then_some(()))
        })
        .await?;

        let room = api_a
            .create_room(json!({
                "outputs": [{"url": nginx.rtmp_url(KEY)}],
                "video": {"width": 640, "height": 360, "fps": 15, "bitrate_kbps": 800},
            }))
            .await?;
        assert_eq!(owner(&redis, &room.id), "node-a");

        // Everything through the balancer, so through either node: the guest's WHIP, the
        // host's API and event stream.
        let whip = format!("{}/whip/{}", balancer.url(), room.id);
        let _guest = Publisher::start(&whip, &room.guest_token, PublisherOptions::red_vp8())?;
        let mut events = Events::open(&api_b, &room.id, &room.host_token).await?;
        let (code, body) = api().go_live(&room).await?;
        anyhow::ensure!(code == 200, "go live through the balancer: {code} {body}");
        events
            .until("the room live, in an event through node B", Duration::from_secs(30), |_, data| {
                (data["broadcast"] == "live").then_some(())
            })
            .await?;
        let status = eventually("output live with the guest, seen through node B", Duration::from_secs(30), || async {
            let status = api_b.status(&room).await?;
            let ready = status["outputs"][0]["state"] == "live" && participants_in_mix(&status) == 1;
            Ok(ready.then_some(status))
        })
        .await?;
        let mixer_pid = status["mixer"]["pid"].as_u64().expect("the mixer's pid");
        let publisher = eventually("one publisher at nginx", Duration::from_secs(10), || async {
            Ok(match nginx.publisher_ids(KEY).as_slice() {
                [id] => Some(*id),
                _ => None,
            })
        })
        .await?;

        // New rooms go to the least loaded node: A holds a live room with a guest, B nothing.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let second = api_a.create_room(json!({})).await?;
        assert_eq!(owner(&redis, &second.id), "node-b", "placed on the less loaded node");
        assert!(
            second.whip_url.starts_with(api_b.base_url.trim_end_matches('/')),
            "answered by node B: {}",
            second.whip_url
        );
        let (code, _) = api_a.end_room(&second).await?;
        assert_eq!(code, 204, "ended through node A");

        // Node A dies: B adopts the room within the ownership TTL and a scan or two.
        let killed = Instant::now();
        node_a.signal("KILL")?;
        node_a.wait_exit(Duration::from_secs(10))?;
        let adopted = adopted_by(&redis, &api_b, &room, "node-b", mixer_pid).await?.duration_since(killed);
        let guest_back = guest_in_mix(&api_b, &room).await?.duration_since(killed);
        assert_eq!(nginx.publisher_ids(KEY), vec![publisher], "the mixer never stopped");
        eprintln!(
            "node A killed: room adopted by node B after {:.2} s, guest back in the mix after {:.2} s",
            adopted.as_secs_f64(),
            guest_back.as_secs_f64()
        );
        assert!(adopted < Duration::from_secs(12), "adopted after {adopted:?}");

        // An upgrade: A comes back (a new version), then B is stopped with SIGTERM. B lets go
        // of the room at once and A adopts it on the clients' next requests.
        drop(node_a);
        let node_a = Serve::start_with_config_and_data_dir(&node_config(&redis, "node-a"), &dir_a)?;
        let api_a = Api::new(&node_a.base_url);
        balancer.set(vec![node_a.listen_addr().to_string(), node_b.listen_addr().to_string()]);
        eventually("node A registered again", Duration::from_secs(10), || async {
            let nodes = redis.command("SMEMBERS costream:nodes")?;
            Ok(nodes.contains("node-a").then_some(()))
        })
        .await?;
        let stopped = Instant::now();
        node_b.signal("TERM")?;
        let adopted = adopted_by(&redis, &api_a, &room, "node-a", mixer_pid).await?.duration_since(stopped);
        let guest_back = guest_in_mix(&api_a, &room).await?.duration_since(stopped);
        node_b.wait_exit(Duration::from_secs(20))?;
        assert_eq!(nginx.publisher_ids(KEY), vec![publisher], "the mixer never stopped");
        eprintln!(
            "node B stopped (SIGTERM): room adopted by node A after {:.2} s, guest back in the mix after {:.2} s",
            adopted.as_secs_f64(),
            guest_back.as_secs_f64()
        );
        assert!(adopted < Duration::from_secs(5), "adopted after {adopted:?}");

        let (code, _) = api().end_room(&room).await?;
        assert_eq!(code, 204);
        eventually("the publisher gone from nginx", Duration::from_secs(10), || async {
            Ok(nginx.publisher_ids(KEY).is_empty().then_some(()))
        })
        .await?;
        anyhow::Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir_a);
    let _ = std::fs::remove_dir_all(&dir_b);
    result
}

/// Waits until `node` owns the room and has it live with the same mixer; returns when.
async fn adopted_by(
    redis: &Redis,
    api: &Api,
    room: &common::Room,
    node: &str,
    mixer_pid: u64,
) -> anyhow::Result<Instant> {
    eventually(
        &format!("the room adopted by {node}, with the same mixer"),
        Duration::from_secs(20),
        || async {
            let status = api.status(room).await?;
            let back = status["broadcast"] == "live" && status["mixer"]["pid"] == mixer_pid;
            Ok((back && owner(redis, &room.id) == node).then(Instant::now))
        },
    )
    .await
}

/// Waits until the guest is back in the mix; returns when.
async fn guest_in_mix(api: &Api, room: &common::Room) -> anyhow::Result<Instant> {
    eventually(
        "the guest back in the mix",
        Duration::from_secs(20),
        || async {
            let status = api.status(room).await?;
            Ok((participants_in_mix(&status) == 1).then(Instant::now))
        },
    )
    .await
}
