//! Test helpers shared by the mixer's tests and the end-to-end tests: a throwaway nginx-rtmp
//! server standing in for a CDN, a throwaway redis-server for the fleet, ffprobe/ffmpeg pull-back of what reached it, and polling with a
//! deadline (tests wait on conditions, never sleep-and-hope).

mod frames;
mod media;
mod nginx;
mod redis;
mod sync;

pub use frames::FrameReader;
pub use media::{
    close_to, decode_errors, duration_s, grab_audio_s16, grab_frame_rgb, mean_rgb, packets,
    probe_stream, rgb_filter, rms_dbfs, video_packets, ColourTags, Packet, StreamInfo,
};
pub use nginx::{Nginx, NginxOptions};
pub use redis::Redis;
pub use sync::{av_onsets, Onsets};

use std::time::{Duration, Instant};

/// Polls `cond` every 50 ms until it returns true or `deadline` passes. Returns whether it
/// became true, so the caller can assert with its own message.
pub fn wait_until(deadline: Instant, mut cond: impl FnMut() -> bool) -> bool {
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Like [`wait_until`] but for a condition that yields a value (e.g. a parsed frame).
pub fn wait_for<T>(deadline: Instant, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free TCP port on 127.0.0.1: bind to port 0, read it back, release it. Racy in theory
/// (someone could take it before the caller binds), fine for tests on one machine.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// User + system CPU seconds a process has used so far (`"self"` or a pid), from /proc.
pub fn cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat
        .rsplit_once(')')
        .ok_or_else(|| anyhow::anyhow!("bad /proc/{pid}/stat"))?
        .1;
    // After the command name: state is field 0, utime 11, stime 12 (clock ticks, 100/s).
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?
            .parse::<f64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_reports_timeout_and_success() {
        let soon = Instant::now() + Duration::from_millis(120);
        assert!(!wait_until(soon, || false));
        let mut n = 0;
        assert!(wait_until(Instant::now() + Duration::from_secs(5), || {
            n += 1;
            n == 3
        }));
    }

    #[test]
    fn free_ports_are_nonzero() {
        assert_ne!(free_port().unwrap(), 0);
    }
}
