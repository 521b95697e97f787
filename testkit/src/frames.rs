//! A continuous ffmpeg reader: decodes a live stream into small RGB frames so a test can watch
//! the picture change over time (one-shot grabs each wait for a keyframe and are too slow to
//! time a change within a few seconds).

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

type Latest = Arc<Mutex<Option<(Instant, Vec<u8>)>>>;

/// Decodes `url` at a few frames per second, scaled to `width`x`height` RGB24.
pub struct FrameReader {
    child: Child,
    latest: Latest,
    pub width: u32,
    pub height: u32,
}

impl FrameReader {
    /// Decodes `url` at `fps` frames per second, scaled to `width`x`height` RGB24 by the
    /// stream's own colour description (`crate::rgb_filter`).
    pub fn start(url: &str, width: u32, height: u32, fps: u32) -> anyhow::Result<FrameReader> {
        let vf = format!("fps={fps},{}", crate::rgb_filter(width, height));
        let mut child = Command::new("ffmpeg")
            .args([
                "-v", "error", "-fflags", "nobuffer", "-i", url, "-an", "-vf", &vf,
            ])
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn ffmpeg")?;
        let mut stdout = child.stdout.take().context("stdout")?;
        let latest: Latest = Arc::default();
        let sink = latest.clone();
        let size = (width * height * 3) as usize;
        std::thread::spawn(move || loop {
            let mut frame = vec![0u8; size];
            if stdout.read_exact(&mut frame).is_err() {
                return;
            }
            *sink.lock().unwrap() = Some((Instant::now(), frame));
        });
        Ok(FrameReader {
            child,
            latest,
            width,
            height,
        })
    }

    /// The newest frame if it was decoded after `after`.
    pub fn frame_after(&self, after: Instant) -> Option<Vec<u8>> {
        match &*self.latest.lock().unwrap() {
            Some((t, f)) if *t > after => Some(f.clone()),
            _ => None,
        }
    }

    /// Waits up to `timeout` for a frame decoded after now.
    pub fn next_frame(&self, timeout: Duration) -> Option<Vec<u8>> {
        let now = Instant::now();
        crate::wait_for(now + timeout, || self.frame_after(now))
    }
}

impl Drop for FrameReader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
