//! What a CDN (nginx-rtmp) saw of one stream key over a while: whether it kept one publisher,
//! and the longest its bytes stood still.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use costream_testkit::Nginx;

/// When, nginx's publisher ids of the key, and their bytes in.
type CdnSample = (Instant, Vec<u64>, u64);

/// nginx's publishers of one stream key and their bytes, sampled every 100 ms until finished.
pub struct CdnSampler {
    samples: Arc<Mutex<Vec<CdnSample>>>,
    running: Arc<AtomicBool>,
}

/// Waits until nginx has exactly one publisher of `key`; its id.
pub async fn sole_publisher(nginx: &Nginx, key: &str) -> anyhow::Result<u64> {
    super::eventually(
        "one publisher at nginx",
        Duration::from_secs(10),
        || async {
            Ok(match nginx.publisher_ids(key).as_slice() {
                [id] => Some(*id),
                _ => None,
            })
        },
    )
    .await
}

impl CdnSampler {
    pub fn start(nginx: Arc<Nginx>, key: &str) -> Self {
        let key = key.to_string();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let running = Arc::new(AtomicBool::new(true));
        let (list, on) = (samples.clone(), running.clone());
        std::thread::spawn(move || {
            while on.load(Ordering::Relaxed) {
                let ids = nginx.publisher_ids(&key);
                let bytes = nginx.publisher_bytes_in(&key).unwrap_or(0);
                list.lock().unwrap().push((Instant::now(), ids, bytes));
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Self { samples, running }
    }

    /// Every sample showed exactly `publisher`; returns the longest time its bytes stood still.
    pub fn finish(self, publisher: u64) -> anyhow::Result<Duration> {
        self.running.store(false, Ordering::Relaxed);
        let samples = self.samples.lock().unwrap().clone();
        let start = samples.first().map(|s| s.0);
        let mut longest = Duration::ZERO;
        let mut last_growth: Option<(Instant, u64)> = None;
        for (at, ids, bytes) in &samples {
            anyhow::ensure!(
                ids == &[publisher],
                "nginx showed publishers {ids:?} at +{:.1} s (expected only {publisher})",
                start.map_or(0.0, |s| at.duration_since(s).as_secs_f64())
            );
            match last_growth {
                Some((t, b)) if *bytes > b => {
                    longest = longest.max(at.duration_since(t));
                    last_growth = Some((*at, *bytes));
                }
                None => last_growth = Some((*at, *bytes)),
                _ => {}
            }
        }
        if let (Some((t, _)), Some((end, ..))) = (last_growth, samples.last()) {
            longest = longest.max(end.duration_since(t));
        }
        Ok(longest)
    }
}
