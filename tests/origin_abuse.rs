//! The built-in origin's RTMP port against a hostile client, on a real serve: a client that has
//! not published (no room key) and declares one huge RTMP message is cut off after a few KiB,
//! so many of them cannot make the server buffer their bytes; idle clients filling every
//! connection the origin allows do not keep a room's mixer from publishing.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Api, Serve};
use serde_json::json;

/// RSS of a process in KiB, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// RTMP simple handshake (C0 C1, read S0 S1 S2, C2 = S1).
fn handshake(addr: &str) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut c0c1 = vec![3u8];
    c0c1.extend(std::iter::repeat_n(0u8, 1536));
    stream.write_all(&c0c1)?;
    let mut s = vec![0u8; 1 + 1536 + 1536];
    stream.read_exact(&mut s)?;
    stream.write_all(&s[1..1537])?;
    Ok(stream)
}

/// Declares a 16 MB video message on chunk stream 3 and sends up to `bytes` of it in 128-byte
/// chunks; returns how many bytes the server took before it hung up.
fn flood(mut stream: TcpStream, bytes: usize) -> usize {
    let mut header = vec![0x03u8, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0x09, 0, 0, 0, 0];
    header.extend(std::iter::repeat_n(0u8, 128));
    let mut sent = 0;
    if stream.write_all(&header).is_err() {
        return sent;
    }
    sent += header.len();
    let mut chunk = vec![0xC3u8];
    chunk.extend(std::iter::repeat_n(0u8, 128));
    stream.set_write_timeout(Some(Duration::from_secs(5))).ok();
    while sent < bytes {
        if stream.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_huge_message_is_cut_off_and_pins_no_memory() -> anyhow::Result<()> {
    let serve = Serve::start()?;
    let api = Api::new(&serve.base_url);
    let room = api.create_room(json!({"name": "abuse"})).await?;
    let play = room.created["rtmp_play_url"]
        .as_str()
        .expect("rtmp_play_url")
        .to_string();
    let addr = play
        .trim_start_matches("rtmp://")
        .split('/')
        .next()
        .unwrap()
        .to_string();

    let before = rss_kib(serve.pid());
    let floods: Vec<_> = (0..10)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || handshake(&addr).map(|s| flood(s, 8 << 20)))
        })
        .collect();
    let mut taken = Vec::new();
    for f in floods {
        taken.push(f.join().expect("flood thread")?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = rss_kib(serve.pid()).saturating_sub(before);
    println!("MEASURE origin_flood_rss_growth_kib={grown} bytes_taken_per_connection={taken:?}");
    // The server hung up long before the 8 MiB each client wanted to send (kernel buffers
    // absorb some on loopback), and kept nothing like 10 × 8 MiB.
    assert!(taken.iter().all(|&t| t < 6 << 20), "bytes taken {taken:?}");
    assert!(
        grown < 16 * 1024,
        "serve grew by {grown} KiB under the flood"
    );
    // The origin still serves: a fresh handshake works.
    handshake(&addr)?;
    Ok(())
}

/// Holds RTMP connections from `from` (a loopback alias, not the address the serve's own mixers
/// publish from) that handshake and then idle, keeping `target` open until dropped: any the
/// server closes (timed out, or evicted) is replaced and any it refuses is retried every 50 ms,
/// so the origin stays as full as such a client can make it.
struct IdleFlood {
    task: tokio::task::JoinHandle<()>,
    held: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    connects: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl IdleFlood {
    fn start(from: [u8; 4], addr: &str, target: usize) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let held = std::sync::Arc::new(AtomicUsize::new(0));
        let connects = std::sync::Arc::new(AtomicUsize::new(0));
        let addr: std::net::SocketAddr = addr.parse().expect("origin address");
        let task = {
            let (held, connects) = (held.clone(), connects.clone());
            tokio::spawn(async move {
                let mut open: Vec<TcpStream> = Vec::new();
                loop {
                    open.retain(|s| {
                        let mut b = [0u8; 64];
                        match (&*s).read(&mut b) {
                            Ok(0) => false,
                            Ok(_) => true,
                            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                        }
                    });
                    held.store(open.len(), Ordering::Relaxed);
                    while open.len() < target {
                        connects.fetch_add(1, Ordering::Relaxed);
                        match idle_client(from, addr).await {
                            Ok(s) => open.push(s),
                            Err(_) => break,
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        Self {
            task,
            held,
            connects,
        }
    }

    /// Connections the server kept open, as of the last sweep (approximate: one the server has
    /// just closed may still count).
    fn held(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Connections attempted so far.
    fn connects(&self) -> usize {
        self.connects.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for IdleFlood {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A handshaken RTMP connection from `from` that then sends nothing (a non-blocking socket).
async fn idle_client(from: [u8; 4], addr: std::net::SocketAddr) -> anyhow::Result<TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::from((from, 0)))?;
    let mut stream = tokio::time::timeout(Duration::from_secs(2), socket.connect(addr)).await??;
    let mut c0c1 = vec![3u8];
    c0c1.extend(std::iter::repeat_n(0u8, 1536));
    stream.write_all(&c0c1).await?;
    let mut s = vec![0u8; 1 + 1536 + 1536];
    tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut s)).await??;
    stream.write_all(&s[1..1537]).await?;
    // A plain non-blocking read sees the server's close reliably (tokio's `try_read` only
    // reads once the reactor has marked the socket readable).
    Ok(stream.into_std()?)
}

/// Goes live and waits for the room's HTTP-FLV stream to start; how long it took, or `None`
/// if it did not start within `within`.
async fn live_within(
    api: &Api,
    room: &common::Room,
    within: Duration,
) -> anyhow::Result<Option<Duration>> {
    let started = std::time::Instant::now();
    let (code, body) = api.go_live(room).await?;
    anyhow::ensure!(code == 200, "go live: {code} {body}");
    let flv_url = api.url(&format!("/live/{}.flv", room.id));
    while started.elapsed() < within {
        let mut response = api.http().get(&flv_url).send().await?;
        if response.status() == 200 {
            if let Some(chunk) = response.chunk().await? {
                anyhow::ensure!(chunk.starts_with(b"FLV"), "not FLV");
                return Ok(Some(started.elapsed()));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(None)
}

fn rtmp_addr(room: &common::Room) -> String {
    room.created["rtmp_play_url"]
        .as_str()
        .expect("rtmp_play_url")
        .trim_start_matches("rtmp://")
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_filling_the_origin_do_not_lock_the_mixer_out() -> anyhow::Result<()> {
    // 16 shared places and 8 publisher slots; two flooding addresses want 20 connections each
    // (one alone would stop at its per-address cap, which is max_connections on loopback), so
    // they fill the shared part and churn through the reserve, evicting each other's idle
    // candidates. The mixer's connection, alone from its address, is not evicted while it
    // authenticates. (With as many flooding addresses as free publisher slots it could be: see
    // `origin::slots`.)
    let serve = Serve::start_with_config("[origin]\nmax_connections = 24\npublisher_slots = 8\n")?;
    let api = Api::new(&serve.base_url);
    let room = api.create_room(json!({"name": "full"})).await?;
    let floods =
        [[127, 0, 0, 2], [127, 0, 0, 3]].map(|from| IdleFlood::start(from, &rtmp_addr(&room), 20));
    let held = || floods.iter().map(IdleFlood::held).sum::<usize>();
    let connects = || floods.iter().map(IdleFlood::connects).sum::<usize>();
    common::eventually("the origin full", Duration::from_secs(20), || async {
        Ok((held() >= 24 && connects() > 100).then_some(()))
    })
    .await?;
    let connects_before = connects();
    let live = live_within(&api, &room, Duration::from_secs(20)).await?;
    let connects_during = connects() - connects_before;
    println!(
        "MEASURE origin_full_golive_to_first_flv_byte_ms={:?} flood_connects_during_golive={connects_during}",
        live.map(|d| d.as_millis()),
    );
    assert!(
        live.is_some(),
        "the room did not go live within 20 s while idle clients filled the origin"
    );
    // The flood went on all along: the mixer got in beside it, not after it.
    assert!(connects_during > 0, "the flood stopped");
    Ok(())
}
