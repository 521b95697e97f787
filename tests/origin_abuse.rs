//! The built-in origin's RTMP port against a hostile client, on a real serve: a client that has
//! not published (no room key) and declares one huge RTMP message is cut off after a few KiB,
//! so many of them cannot make the server buffer their bytes.

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
