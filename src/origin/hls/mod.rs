//! HLS and Low-Latency HLS from the built-in origin: `GET /live/{room}/index.m3u8`.
//!
//! The hub feeds every tag of a published stream to its [`packager::Packager`], which cuts
//! CMAF (fMP4) parts of at most half a second and segments on the mixer's 2 s keyframes; the
//! parts land in the stream's [`window::Window`] in memory (a bounded window, nothing on
//! disk). Players that know LL-HLS (hls.js, Safari/iOS) fetch parts with blocking playlist
//! reloads; the others fetch whole segments.
//!
//! - [`fmp4`]: init segments and fragments (`mp4-atom`)
//! - [`packager`]: FLV tags → parts and segments (pure)
//! - [`window`]: the bounded window and what a blocking request waits for (pure)
//! - [`playlist`]: the playlist text and file names (pure)
//! - [`http`]: the GET handlers

pub mod fmp4;
pub mod http;
pub mod packager;
pub mod playlist;
pub mod window;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use self::packager::{PackagedPart, PackagerSettings};
use self::window::{Window, WindowLimits};

/// How a stream's HLS is cut and how much of it is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HlsSettings {
    pub enabled: bool,
    pub packager: PackagerSettings,
    pub window: WindowLimits,
    /// The playlist's target duration, matching the mixer's 2 s keyframe interval.
    pub target_duration_s: u64,
}

impl Default for HlsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            packager: PackagerSettings::default(),
            window: WindowLimits::default(),
            target_duration_s: 2,
        }
    }
}

/// Seconds since 1970: where a new window's numbering starts. Segments last about 2 s, so a
/// stream registered again (a serve restart) numbers on past what players saw before.
fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The HLS side of one registered stream, shared by the hub (writer) and requests (readers).
pub struct HlsStream {
    settings: HlsSettings,
    window: Mutex<Window>,
    /// Bumped on every change, so blocked requests look again.
    changed: watch::Sender<u64>,
}

impl std::fmt::Debug for HlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HlsStream").finish_non_exhaustive()
    }
}

impl HlsStream {
    pub fn new(settings: HlsSettings) -> Self {
        Self {
            settings,
            window: Mutex::new(Window::new(
                settings.window,
                settings.target_duration_s,
                unix_seconds(),
            )),
            changed: watch::Sender::new(0),
        }
    }

    pub fn settings(&self) -> HlsSettings {
        self.settings
    }

    pub fn window(&self) -> MutexGuard<'_, Window> {
        // Plain data behind the lock: a panic elsewhere leaves nothing half-done to fear.
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add(&self, part: PackagedPart) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.window().add(part, now_ms);
        self.changed.send_modify(|n| *n += 1);
    }

    /// The publisher went away (see [`window::PUBLISHER_AWAY_ENDS_AFTER`]).
    pub fn publisher_left(&self) {
        self.window().publisher_left(std::time::Instant::now());
    }

    /// A publisher came.
    pub fn publisher_joined(&self) {
        self.window().publisher_joined(std::time::Instant::now());
        self.changed.send_modify(|n| *n += 1);
    }

    /// The stream was unregistered: its playlist ends and blocked requests answer now.
    pub fn end(&self) {
        self.window().end();
        self.changed.send_modify(|n| *n += 1);
    }

    /// Waits until `ready` holds for the window, at most `limit`; returns whether it did.
    pub async fn wait_for(&self, limit: Duration, ready: impl Fn(&Window) -> bool) -> bool {
        let mut changes = self.changed.subscribe();
        let waited = tokio::time::timeout(limit, async {
            loop {
                if ready(&self.window()) {
                    return true;
                }
                if changes.changed().await.is_err() {
                    return ready(&self.window());
                }
            }
        });
        waited.await.unwrap_or(false)
    }

    /// How long a blocking request may wait: three target durations (RFC 8216bis 6.2.5.2).
    pub fn block_limit(&self) -> Duration {
        Duration::from_secs(3 * self.window().target_duration_s())
    }
}
