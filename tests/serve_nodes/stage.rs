//! The stage of the serve-nodes test and benchmark: a real `redis-server`, a `costream worker`
//! on 127.0.0.2, nginx-rtmp as the CDN and two `costream serve` nodes sharing Redis behind a
//! TCP balancer (standing in for the load balancer: each connection goes to the next node that
//! accepts it), with one live room and a `costream publish` guest joined through the balancer.
//! A trial takes the room's owner away (`kill -9`, or SIGTERM as in an upgrade) and times the
//! other node's adoption and the guest's return, while the CDN is sampled every 100 ms.

// The test and the benchmark each use part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use costream_testkit::{Nginx, Redis};
use serde_json::{json, Value};

use crate::common::cdn::{sole_publisher, CdnSampler};
use crate::common::{
    self, eventually, participants_in_mix, Api, Publisher, PublisherOptions, Room, Serve, Worker,
};

pub const KEY: &str = "nodes-show";
/// 32 bytes in base64: every serve node must share the store key.
const STORE_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
pub const NODES: [&str; 2] = ["node-a", "node-b"];

/// One address in front of the nodes: each connection goes to the next node (in turn) that
/// accepts it, as a TCP load balancer with health by connect.
pub struct Balancer {
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

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set(&self, backends: Vec<String>) {
        *self.backends.lock().unwrap() = backends;
    }
}

/// How the room's owner goes away.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Loss {
    /// `kill -9`: its rooms' ownership expires (5 s) and the other node adopts them.
    Kill,
    /// SIGTERM, as in an upgrade: it lets go of its rooms at once.
    Term,
    /// The only node is killed with `kill -9` and started again at once (a supervisor's
    /// restart): it takes its own rooms back. Times count from the restarted node answering.
    Restart,
}

/// What one loss of the owner cost.
#[derive(Debug)]
pub struct Trial {
    pub loss: Loss,
    /// From the signal (for a restart: the node answering again) to a node owning the room,
    /// live with the same mixer.
    pub adopted: Duration,
    /// From the same moment to the guest back in the mix.
    pub guest_back: Duration,
    /// The longest the CDN's byte count stood still (one publisher throughout, checked).
    pub cdn_still: Duration,
}

pub struct Stage {
    pub redis: Redis,
    pub nginx: Arc<Nginx>,
    _worker: Worker,
    nodes: [Option<Serve>; 2],
    dirs: [PathBuf; 2],
    pub balancer: Balancer,
    pub room: Room,
    _guest: Publisher,
    pub mixer_pid: u64,
    pub publisher: u64,
}

fn node_config(redis: &Redis, node_id: &str) -> String {
    format!(
        "[cluster]\nredis_url = \"{}\"\nnode_id = \"{node_id}\"\n\n[store]\nkey = \"{STORE_KEY}\"\n",
        redis.url()
    )
}

/// The node that owns `room` in Redis (empty: none).
pub fn owner(redis: &Redis, room: &str) -> String {
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

impl Stage {
    /// Both nodes up, the room created on node A and live, the guest in it.
    pub async fn start() -> anyhow::Result<Self> {
        let redis = Redis::start()?;
        let nginx = Arc::new(Nginx::start()?);
        let worker = Worker::start(
            &redis.url(),
            "127.0.0.2",
            "w-nodes",
            &["--capacity-cores", "1.0", "--warm", "1"],
        )?;
        let dirs = [common::temp_data_dir(), common::temp_data_dir()];
        let a = Serve::start_with_config_and_data_dir(&node_config(&redis, NODES[0]), &dirs[0])?;
        let b = Serve::start_with_config_and_data_dir(&node_config(&redis, NODES[1]), &dirs[1])?;
        let balancer = Balancer::start(vec![
            a.listen_addr().to_string(),
            b.listen_addr().to_string(),
        ])
        .await?;
        let api_a = Api::new(&a.base_url);
        api_a.wait_for_workers(1).await?;
        Api::new(&b.base_url).wait_for_workers(1).await?;
        // Both nodes see each other before the first room (ties stay on the node asked).
        eventually("both nodes registered", Duration::from_secs(10), || async {
            let nodes = redis.command("SMEMBERS costream:nodes")?;
            Ok((nodes.contains(NODES[0]) && nodes.contains(NODES[1])).then_some(()))
        })
        .await?;
        let room = api_a
            .create_room(json!({
                "outputs": [{"url": nginx.rtmp_url(KEY)}],
                "video": {"width": 640, "height": 360, "fps": 15, "bitrate_kbps": 800},
            }))
            .await?;
        anyhow::ensure!(owner(&redis, &room.id) == NODES[0], "created on node A");
        let whip = format!("{}/whip/{}", balancer.url(), room.id);
        // The guest joins through node B (the balancer sends its first connection there), which
        // forwards to the owner, A.
        balancer.set(vec![b.listen_addr().to_string()]);
        let guest = Publisher::start(&whip, &room.guest_token, PublisherOptions::red_vp8())?;
        balancer.set(vec![
            a.listen_addr().to_string(),
            b.listen_addr().to_string(),
        ]);
        let api = Api::new(&balancer.url());
        let (code, body) = api.go_live(&room).await?;
        anyhow::ensure!(code == 200, "go live through the balancer: {code} {body}");
        let status = api.live_with(&room, 1).await?;
        let mixer_pid = status["mixer"]["pid"].as_u64().expect("the mixer's pid");
        let publisher = sole_publisher(&nginx, KEY).await?;
        Ok(Self {
            redis,
            nginx,
            _worker: worker,
            nodes: [Some(a), Some(b)],
            dirs,
            balancer,
            room,
            _guest: guest,
            mixer_pid,
            publisher,
        })
    }

    /// The API of node `i` directly.
    pub fn api_of(&self, i: usize) -> Api {
        Api::new(&self.nodes[i].as_ref().expect("node running").base_url)
    }

    /// The API through the balancer (a fresh client: a pooled connection would stay on a node
    /// that stopped).
    pub fn api(&self) -> Api {
        Api::new(&self.balancer.url())
    }

    /// Stops node `i` for good (SIGTERM): the other is left alone, for [`Loss::Restart`].
    pub async fn stop_node(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut node) = self.nodes[i].take() {
            node.signal("TERM")?;
            node.wait_exit(Duration::from_secs(20))?;
        }
        self.balancer.set(self.addresses());
        let (room, redis, other) = (&self.room, &self.redis, NODES[1 - i]);
        let api = self.api_of(1 - i);
        eventually(
            "the room with the node left",
            Duration::from_secs(20),
            || async {
                let status = api.status(room).await?;
                let live = status["broadcast"] == "live" && participants_in_mix(&status) == 1;
                Ok((live && owner(redis, &room.id) == other).then_some(()))
            },
        )
        .await
    }

    fn addresses(&self) -> Vec<String> {
        self.nodes
            .iter()
            .flatten()
            .map(|n| n.listen_addr().to_string())
            .collect()
    }

    /// The only node is killed and started again at once; times its clients' return from the
    /// moment it answers.
    async fn restart_alone(&mut self) -> anyhow::Result<Trial> {
        anyhow::ensure!(self.nodes.iter().flatten().count() == 1, "one node only");
        let i = self
            .nodes
            .iter()
            .position(Option::is_some)
            .expect("checked");
        let cdn = CdnSampler::start(self.nginx.clone(), KEY);
        let mut node = self.nodes[i].take().expect("checked");
        node.signal("KILL")?;
        node.wait_exit(Duration::from_secs(10))?;
        drop(node);
        let config = node_config(&self.redis, NODES[i]);
        self.nodes[i] = Some(Serve::start_with_config_and_data_dir(
            &config,
            &self.dirs[i],
        )?);
        let answered = Instant::now();
        self.balancer.set(self.addresses());
        let (adopted, guest_back) = self.back_on(i, answered).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let cdn_still = cdn.finish(self.publisher)?;
        Ok(Trial {
            loss: Loss::Restart,
            adopted,
            guest_back,
            cdn_still,
        })
    }

    /// Waits until node `i` owns the room and has it live with the same mixer, then until the
    /// guest is back in the mix; returns both times since `since`.
    async fn back_on(&self, i: usize, since: Instant) -> anyhow::Result<(Duration, Duration)> {
        let api = self.api_of(i);
        let (room, redis, mixer_pid) = (&self.room, &self.redis, self.mixer_pid);
        let adopted = eventually(
            "the room live with the same mixer",
            Duration::from_secs(20),
            || async {
                let status = api.status(room).await?;
                let back = status["broadcast"] == "live" && status["mixer"]["pid"] == mixer_pid;
                Ok((back && owner(redis, &room.id) == NODES[i]).then(Instant::now))
            },
        )
        .await?;
        let guest_back = eventually(
            "the guest back in the mix",
            Duration::from_secs(20),
            || async {
                let status = api.status(room).await?;
                Ok((participants_in_mix(&status) == 1).then(Instant::now))
            },
        )
        .await?;
        Ok((adopted - since, guest_back - since))
    }

    /// Takes the room's owner away, times the other node's adoption and the guest's return,
    /// then starts the lost node again (an upgrade's new version) and waits until it is back.
    /// [`Loss::Restart`]: see [`Stage::stop_node`].
    pub async fn lose_owner(&mut self, loss: Loss) -> anyhow::Result<Trial> {
        if loss == Loss::Restart {
            return self.restart_alone().await;
        }
        let owner_id = owner(&self.redis, &self.room.id);
        let lost = NODES
            .iter()
            .position(|n| *n == owner_id)
            .ok_or_else(|| anyhow::anyhow!("the room has no owner ({owner_id:?})"))?;
        let heir = 1 - lost;
        let cdn = CdnSampler::start(self.nginx.clone(), KEY);
        let signalled = Instant::now();
        let node = self.nodes[lost].as_mut().expect("node running");
        node.signal(if loss == Loss::Term { "TERM" } else { "KILL" })?;
        let (adopted, guest_back) = self.back_on(heir, signalled).await?;
        // A little steady state after the return, still sampled.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let cdn_still = cdn.finish(self.publisher)?;
        let mut node = self.nodes[lost].take().expect("node running");
        node.wait_exit(Duration::from_secs(20))?;
        drop(node);
        let config = node_config(&self.redis, NODES[lost]);
        self.nodes[lost] = Some(Serve::start_with_config_and_data_dir(
            &config,
            &self.dirs[lost],
        )?);
        self.balancer.set(self.addresses());
        let redis = &self.redis;
        eventually(
            "the node registered again",
            Duration::from_secs(10),
            || async {
                let nodes = redis.command("SMEMBERS costream:nodes")?;
                Ok(nodes.contains(NODES[lost]).then_some(()))
            },
        )
        .await?;
        Ok(Trial {
            loss,
            adopted,
            guest_back,
            cdn_still,
        })
    }

    /// A summary for the logs and the benchmark's artifacts.
    pub fn summary(trial: &Trial) -> Value {
        json!({
            "loss": format!("{:?}", trial.loss),
            "adopted_ms": trial.adopted.as_millis() as u64,
            "guest_back_ms": trial.guest_back.as_millis() as u64,
            "cdn_still_ms": trial.cdn_still.as_millis() as u64,
        })
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            drop(node.take());
        }
        for dir in &self.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
