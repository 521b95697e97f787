//! One live room through `kill -9` of serve and a restart on the same port and data directory,
//! with every kind of client in it: the studio and a guest page in Chromium, a `costream
//! publish` guest, and the mix pushed to nginx-rtmp. Shared by tests/serve_restart.rs (one
//! trial, behaviour asserted) and benches/serve_restart.rs (several, timings recorded).
//!
//! "serve answers" is the first `GET /readyz` → 200 on the restarted process (polled every
//! 10 ms from the kill on); every client time is measured from it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use costream_testkit::Nginx;
use serde_json::{json, Value};

use crate::common::{eventually, temp_data_dir, Api, Publisher, PublisherOptions, Room, Serve};

/// The stream key at nginx.
pub const KEY: &str = "restartshow";
/// Display names of the three participants.
pub const HOST_NAME: &str = "Host";
pub const GUEST_PAGE_NAME: &str = "Guest page";
pub const PUBLISH_NAME: &str = "publish";
/// How long a trial waits for anything to come back before it fails.
const BACK_WITHIN: Duration = Duration::from_secs(30);

/// What one restart looked like, every time from the instant serve answered again.
#[derive(Debug, Clone)]
pub struct Trial {
    /// `kill -9` → serve answering (process start, room restore).
    pub serve_down: Duration,
    /// → every participant (both pages and `costream publish`) in the room status with all
    /// of its tracks.
    pub guests_back: Duration,
    /// → every participant's tracks in the new mixer's program.
    pub guests_in_mix: Duration,
    /// → a new publisher of the room's key at nginx with its bytes growing.
    pub output_back: Duration,
    /// → `costream publish` printed `reconnected`.
    pub publish_back: Duration,
    /// → each page back in its connected state (host pill `connected`, guest banner `live`).
    pub host_page_back: Duration,
    pub guest_page_back: Duration,
    /// What each page showed between the kill and being back, in order.
    pub host_states: Vec<String>,
    pub guest_states: Vec<String>,
    /// What `costream publish` printed in that time.
    pub publish_lines: Vec<String>,
}

impl Trial {
    pub fn summary(&self) -> Value {
        let ms = |d: Duration| d.as_millis() as u64;
        json!({
            "serve_down_ms": ms(self.serve_down),
            "guests_back_ms": ms(self.guests_back),
            "guests_in_mix_ms": ms(self.guests_in_mix),
            "output_back_ms": ms(self.output_back),
            "publish_back_ms": ms(self.publish_back),
            "host_page_back_ms": ms(self.host_page_back),
            "guest_page_back_ms": ms(self.guest_page_back),
            "host_states": self.host_states,
            "guest_states": self.guest_states,
            "publish_lines": self.publish_lines,
        })
    }
}

/// The two pages, driven by tests/browser/restart.mjs.
pub struct Pages {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<(Instant, String)>,
    /// The last `STATE` the pages reported.
    pub last: Value,
}

impl Pages {
    fn start(host_url: &str, guest_url: &str, artifacts: &Path) -> anyhow::Result<Self> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
        if !dir.join("node_modules/playwright-core").exists() {
            bail!(
                "{} has no node_modules: run `bash scripts/setup.sh --test` (npm ci there)",
                dir.display()
            );
        }
        let mut child = Command::new("node")
            .arg("restart.mjs")
            .arg(host_url)
            .arg(guest_url)
            .arg(artifacts)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot run node (install nodejs: scripts/setup.sh --test)")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let pages = Self {
            child,
            stdin,
            lines,
            last: Value::Null,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (_, line) = pages
                .lines
                .recv_timeout(left)
                .context("the pages did not get ready within 60 s")?;
            if line.starts_with("READY ") {
                eprintln!("pages: {line}");
                return Ok(pages);
            }
            if let Some(why) = line.strip_prefix("FAILED ") {
                bail!("the pages failed to start: {why}");
            }
        }
    }

    /// `STATE` lines that arrived so far, with their instants (the latest kept in `last`).
    fn drain(&mut self) -> Vec<(Instant, Value)> {
        let mut states = Vec::new();
        while let Ok((at, line)) = self.lines.try_recv() {
            if let Some(json) = line.strip_prefix("STATE ") {
                if let Ok(state) = serde_json::from_str::<Value>(json) {
                    self.last = state.clone();
                    states.push((at, state));
                }
            }
        }
        states
    }

    /// Ends the pages; returns the `HISTORY` they printed (every state each page showed).
    pub fn finish(mut self) -> anyhow::Result<Value> {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok((_, line)) => {
                    if let Some(json) = line.strip_prefix("HISTORY ") {
                        return Ok(serde_json::from_str(json)?);
                    }
                }
                Err(_) => break,
            }
        }
        bail!("the pages printed no HISTORY")
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The processes of a room that goes through restarts.
pub struct Stage {
    pub nginx: Nginx,
    pub serve: Option<Serve>,
    pub data_dir: PathBuf,
    pub listen: String,
    pub api: Api,
    pub room: Room,
    pub pages: Option<Pages>,
    pub publisher: Option<Publisher>,
    publisher_lines: mpsc::Receiver<(Instant, String)>,
}

impl Drop for Stage {
    fn drop(&mut self) {
        self.pages.take();
        self.publisher.take();
        self.serve.take();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn absolute(base: &str, url: &str) -> String {
    if url.starts_with('/') {
        format!("{base}{url}")
    } else {
        url.to_string()
    }
}

impl Stage {
    /// nginx, serve, a live room pushing to nginx (640x360 at 15 fps: two Chromiums share the
    /// two cores), the studio and a guest page, and a `costream publish` guest; returns once
    /// all three are in the mix and nginx receives the program.
    pub async fn start(artifacts: &Path) -> anyhow::Result<Self> {
        let nginx = Nginx::start()?;
        let data_dir = temp_data_dir();
        let serve = Serve::start_with_data_dir(&data_dir)?;
        let listen = serve.listen_addr().to_string();
        let api = Api::new(&serve.base_url);
        let room = api
            .create_room(json!({
                "name": "Restart show",
                "outputs": [{"url": nginx.rtmp_url(KEY)}],
                "video": {"width": 640, "height": 360, "fps": 15, "bitrate_kbps": 800},
            }))
            .await?;
        let host_url = absolute(
            &serve.base_url,
            room.created["host_url"].as_str().context("host_url")?,
        );
        let guest_url = absolute(
            &serve.base_url,
            room.created["guest_url"].as_str().context("guest_url")?,
        );
        let pages = tokio::task::block_in_place(|| Pages::start(&host_url, &guest_url, artifacts))?;
        let (publisher, publisher_lines) = Publisher::start_following(
            &room.whip_url,
            &room.guest_token,
            PublisherOptions {
                color: "blue",
                tone_hz: 660,
                codec: "vp8",
                name: PUBLISH_NAME,
            },
            &["--width", "320", "--height", "180", "--fps", "15"],
        )?;
        let (status, body) = api.go_live(&room).await?;
        anyhow::ensure!(status == 200, "go live: {body}");
        let mut stage = Self {
            nginx,
            serve: Some(serve),
            data_dir,
            listen,
            api,
            room,
            pages: Some(pages),
            publisher: Some(publisher),
            publisher_lines,
        };
        stage.steady().await?;
        Ok(stage)
    }

    /// Everyone in the mix, the pages in their normal states, nginx receiving.
    pub async fn steady(&mut self) -> anyhow::Result<()> {
        eventually("all three in the mix", Duration::from_secs(60), || async {
            let status = self.api.status(&self.room).await?;
            Ok((crate::common::participants_in_mix(&status) == 3).then_some(()))
        })
        .await?;
        let pages = self.pages.as_mut().context("pages")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            pages.drain();
            if pages.last["host"]["state"] == "connected" && pages.last["guest"]["state"] == "live"
            {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "pages not in their normal states: {}",
                pages.last
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let before = self.nginx.publisher_bytes_in(KEY).unwrap_or(0);
        eventually("the program at nginx", Duration::from_secs(30), || async {
            Ok((self.nginx.publisher_bytes_in(KEY).unwrap_or(0) > before).then_some(()))
        })
        .await?;
        while self.publisher_lines.try_recv().is_ok() {}
        Ok(())
    }

    /// `kill -9` serve, leave it down for `down` (zero: start it again at once; more: a
    /// supervisor's restart delay, a slow machine), start it again on the same port and data
    /// dir, and time everything coming back.
    pub async fn restart_after(&mut self, down: Duration) -> anyhow::Result<Trial> {
        let old_publishers = self.nginx.publisher_ids(KEY);
        let mut serve = self.serve.take().context("serve")?;
        let killed = Instant::now();
        serve.signal("KILL")?;
        serve.wait_exit(Duration::from_secs(10))?;
        drop(serve);

        // "serve answers": polled from the kill on, independent of the restart below.
        let readyz = format!("http://{}/readyz", self.listen);
        let answered = tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_millis(500))
                .build()?;
            loop {
                if let Ok(response) = http.get(&readyz).send().await {
                    if response.status() == 200 {
                        return Ok::<_, anyhow::Error>(Instant::now());
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        tokio::time::sleep(down).await;
        let data_dir = self.data_dir.clone();
        let listen = self.listen.clone();
        let serve =
            tokio::task::spawn_blocking(move || Serve::start_with_data_dir_on(&data_dir, &listen))
                .await??;
        self.serve = Some(serve);
        let answered = tokio::time::timeout(Duration::from_secs(30), answered)
            .await
            .context("serve did not answer /readyz within 30 s")???;

        let pages = self.pages.as_mut().context("pages")?;
        let mut host_states: Vec<String> = Vec::new();
        let mut guest_states: Vec<String> = Vec::new();
        let mut host_back = None;
        let mut guest_back = None;
        let mut guests_back = None;
        let mut guests_in_mix = None;
        let mut output_back = None;
        let mut publish_back = None;
        let mut publish_lines = Vec::new();
        let mut last_bytes: Option<(u64, u64)> = None;
        let deadline = answered + BACK_WITHIN;
        loop {
            for (at, state) in pages.drain() {
                for (page, states, back, normal) in [
                    ("host", &mut host_states, &mut host_back, "connected"),
                    ("guest", &mut guest_states, &mut guest_back, "live"),
                ] {
                    let shown = state[page]["state"].as_str().unwrap_or("").to_string();
                    if states.last() != Some(&shown) {
                        states.push(shown.clone());
                    }
                    // Back: in the normal state again after having shown reconnecting.
                    if back.is_none()
                        && shown == normal
                        && states.iter().any(|s| s == "reconnecting")
                    {
                        *back = Some(at);
                    }
                }
            }
            while let Ok((at, line)) = self.publisher_lines.try_recv() {
                if publish_back.is_none() && line.starts_with("reconnected") {
                    publish_back = Some(at);
                }
                publish_lines.push(line);
            }
            if guests_back.is_none() || guests_in_mix.is_none() {
                if let Ok(status) = self.api.status(&self.room).await {
                    let now = Instant::now();
                    if guests_back.is_none() && all_back(&status) {
                        guests_back = Some(now);
                    }
                    if guests_in_mix.is_none() && crate::common::participants_in_mix(&status) == 3 {
                        guests_in_mix = Some(now);
                    }
                }
            }
            if output_back.is_none() {
                // A publisher nginx did not have before the kill, receiving bytes.
                let ids = self.nginx.publisher_ids(KEY);
                let new = ids.iter().find(|id| !old_publishers.contains(id)).copied();
                if let (Some(id), Some(bytes)) = (new, self.nginx.publisher_bytes_in(KEY)) {
                    if let Some((last_id, last)) = last_bytes {
                        if last_id == id && bytes > last {
                            output_back = Some(Instant::now());
                        }
                    }
                    last_bytes = Some((id, bytes));
                }
            }
            let done = [
                host_back,
                guest_back,
                guests_back,
                guests_in_mix,
                output_back,
                publish_back,
            ];
            if done.iter().all(Option::is_some) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "not everything came back within {BACK_WITHIN:?} of serve answering: \
                     host page {host_states:?} back {}, guest page {guest_states:?} back {}, \
                     participants {}, in mix {}, output {}, costream publish {} ({publish_lines:?}); \
                     last status: {}",
                    host_back.is_some(),
                    guest_back.is_some(),
                    guests_back.is_some(),
                    guests_in_mix.is_some(),
                    output_back.is_some(),
                    publish_back.is_some(),
                    self.api
                        .status(&self.room)
                        .await
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let since = |at: Option<Instant>| {
            at.map_or(Duration::ZERO, |at| at.saturating_duration_since(answered))
        };
        Ok(Trial {
            serve_down: answered.duration_since(killed),
            guests_back: since(guests_back),
            guests_in_mix: since(guests_in_mix),
            output_back: since(output_back),
            publish_back: since(publish_back),
            host_page_back: since(host_back),
            guest_page_back: since(guest_back),
            host_states,
            guest_states,
            publish_lines,
        })
    }
}

/// The three participants in the status, each with its audio and video track.
fn all_back(status: &Value) -> bool {
    let Some(list) = status["participants"].as_array() else {
        return false;
    };
    [HOST_NAME, GUEST_PAGE_NAME, PUBLISH_NAME]
        .iter()
        .all(|name| {
            list.iter().any(|p| {
                p["display_name"] == *name && p["tracks"].as_array().is_some_and(|t| t.len() == 2)
            })
        })
}
