//! Test harness: the real `costream` binary as child processes (serve, publishers), plus an
//! HTTP client for the API. nginx-rtmp and ffmpeg helpers live in `costream-testkit`.
#![allow(dead_code)]

pub mod cdn;
pub mod sse;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_costream");

/// Reads lines of a child's stdout on a thread until one starts with `prefix`.
fn wait_for_line(child: &mut Child, prefix: &str, timeout: Duration) -> anyhow::Result<String> {
    let stdout = child.stdout.take().context("stdout not piped")?;
    let (tx, rx) = mpsc::channel();
    let wanted = prefix.to_string();
    std::thread::spawn(move || {
        let mut found = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if !found && line.starts_with(&wanted) {
                found = true;
                let _ = tx.send(line);
            }
        }
    });
    rx.recv_timeout(timeout)
        .with_context(|| format!("no stdout line starting with {prefix:?} within {timeout:?}"))
}

/// Every stdout line of `child`, with the instant it was read, from a reader thread.
pub fn follow_lines(child: &mut Child) -> anyhow::Result<mpsc::Receiver<(Instant, String)>> {
    let stdout = child.stdout.take().context("stdout not piped")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// A running `costream serve` on a free loopback port. Killed on drop.
pub struct Serve {
    child: Child,
    pub base_url: String,
    /// serve's (and its mixers') log, when captured.
    log_path: Option<std::path::PathBuf>,
    /// The `--config` file, when started with one (tests rewrite it before SIGHUP).
    pub config_path: Option<std::path::PathBuf>,
    /// serve's `--data-dir`: its own per serve, so tests never restore each other's rooms.
    pub data_dir: std::path::PathBuf,
    /// Removed on drop (made here, not given by the test).
    owns_data_dir: bool,
}

/// A fresh data directory for one serve (its room store), under the system's temp dir.
pub fn temp_data_dir() -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("costream-data-{}-{n}", std::process::id()))
}

impl Serve {
    /// Logs go to the test's stderr.
    pub fn start() -> anyhow::Result<Self> {
        Self::spawn(Stdio::inherit(), None, "info")
    }

    /// With a TOML config file holding `config` (logs to the test's stderr).
    pub fn start_with_config(config: &str) -> anyhow::Result<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("costream-test-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, config)?;
        let mut serve = Self::spawn_with(Stdio::inherit(), None, "info", Some(path.clone()), &[])?;
        serve.config_path = Some(path);
        Ok(serve)
    }

    /// Logs (serve's and its mixers') go to a file, for tests that inspect them.
    pub fn start_capturing_log() -> anyhow::Result<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("costream-serve-{}-{n}.log", std::process::id()));
        let file = std::fs::File::create(&path)?;
        // Debug level: the log-hygiene checks must see everything that could leak.
        Self::spawn(Stdio::from(file), Some(path), "debug,webrtc=info")
    }

    /// Like [`Serve::start_capturing_log`], with `--log-format json` (through its environment
    /// variable, as a container would set it) at info level.
    pub fn start_capturing_json_log() -> anyhow::Result<Self> {
        let path =
            std::env::temp_dir().join(format!("costream-serve-{}-json.log", std::process::id()));
        let file = std::fs::File::create(&path)?;
        Self::spawn_with(
            Stdio::from(file),
            Some(path),
            "info",
            None,
            &[("COSTREAM_LOG_FORMAT", "json")],
        )
    }

    fn spawn(
        stderr: Stdio,
        log_path: Option<std::path::PathBuf>,
        default_filter: &str,
    ) -> anyhow::Result<Self> {
        Self::spawn_with(stderr, log_path, default_filter, None, &[])
    }

    /// With the room store in `data_dir` (kept on drop: the test restarts serve on it).
    pub fn start_with_data_dir(data_dir: &std::path::Path) -> anyhow::Result<Self> {
        Self::spawn_in(
            Stdio::inherit(),
            None,
            "info",
            None,
            &[],
            Some(data_dir.to_path_buf()),
        )
    }

    /// With `config` (TOML) and the room store's data directory `data_dir` (kept on drop).
    pub fn start_with_config_and_data_dir(
        config: &str,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        Self::start_with_config_and_data_dir_on(config, data_dir, "127.0.0.1:0")
    }

    /// As `start_with_config_and_data_dir`, listening on `listen` (a restart on the same port).
    pub fn start_with_config_and_data_dir_on(
        config: &str,
        data_dir: &std::path::Path,
        listen: &str,
    ) -> anyhow::Result<Self> {
        let path = data_dir.with_extension("toml");
        std::fs::write(&path, config)?;
        let mut serve = Self::spawn_listening(
            Stdio::inherit(),
            None,
            "info",
            Some(path.clone()),
            &[],
            Some(data_dir.to_path_buf()),
            listen,
        )?;
        serve.config_path = Some(path);
        Ok(serve)
    }

    fn spawn_with(
        stderr: Stdio,
        log_path: Option<std::path::PathBuf>,
        default_filter: &str,
        config: Option<std::path::PathBuf>,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::spawn_in(stderr, log_path, default_filter, config, env, None)
    }

    /// With the room store in `data_dir` (kept on drop), listening on `listen` (e.g.
    /// `127.0.0.1:41234`): a restart on the same port and data dir, so the links handed out
    /// before still reach it.
    pub fn start_with_data_dir_on(
        data_dir: &std::path::Path,
        listen: &str,
    ) -> anyhow::Result<Self> {
        Self::spawn_listening(
            Stdio::inherit(),
            None,
            "info",
            None,
            &[],
            Some(data_dir.to_path_buf()),
            listen,
        )
    }

    /// `host:port` of the HTTP listener.
    pub fn listen_addr(&self) -> &str {
        self.base_url
            .trim_start_matches("http://")
            .trim_end_matches('/')
    }

    fn spawn_in(
        stderr: Stdio,
        log_path: Option<std::path::PathBuf>,
        default_filter: &str,
        config: Option<std::path::PathBuf>,
        env: &[(&str, &str)],
        data_dir: Option<std::path::PathBuf>,
    ) -> anyhow::Result<Self> {
        Self::spawn_listening(
            stderr,
            log_path,
            default_filter,
            config,
            env,
            data_dir,
            "127.0.0.1:0",
        )
    }

    fn spawn_listening(
        stderr: Stdio,
        log_path: Option<std::path::PathBuf>,
        default_filter: &str,
        config: Option<std::path::PathBuf>,
        env: &[(&str, &str)],
        data_dir: Option<std::path::PathBuf>,
        listen: &str,
    ) -> anyhow::Result<Self> {
        let owns_data_dir = data_dir.is_none();
        let data_dir = data_dir.unwrap_or_else(temp_data_dir);
        let mut command = Command::new(BIN);
        command.envs(env.iter().copied());
        if let Some(config) = &config {
            command.arg("serve").arg("--config").arg(config);
        } else {
            command.arg("serve");
        }
        let mut child = command
            // Port 0 for the built-in origin too, so parallel tests never fight over 1935.
            .args(["--listen", listen, "--origin-rtmp-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&data_dir)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| default_filter.into()),
            )
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .context("spawn costream serve")?;
        let line = wait_for_line(
            &mut child,
            "costream listening on ",
            Duration::from_secs(30),
        )?;
        let base_url = line
            .trim_start_matches("costream listening on ")
            .trim()
            .to_string();
        Ok(Self {
            child,
            base_url,
            log_path,
            config_path: None,
            data_dir,
            owns_data_dir,
        })
    }

    /// The captured log so far.
    pub fn log(&self) -> anyhow::Result<String> {
        let path = self.log_path.as_ref().context("log not captured")?;
        Ok(std::fs::read_to_string(path)?)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`TERM`, `KILL`, `HUP`, ...) to serve.
    pub fn signal(&self, name: &str) -> anyhow::Result<()> {
        signal(self.child.id(), name)
    }

    /// The exit status, if serve has exited.
    pub fn try_wait(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Waits (up to `timeout`) for serve to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        wait_with_deadline(&mut self.child, timeout)
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        signal(self.child.id(), "TERM")?;
        wait_with_deadline(&mut self.child, Duration::from_secs(10))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(path) = &self.log_path {
            if std::thread::panicking() {
                if let Ok(log) = std::fs::read_to_string(path) {
                    let tail: Vec<_> = log.lines().rev().take(80).collect();
                    eprintln!("--- last lines of serve's log ---");
                    for line in tail.iter().rev() {
                        eprintln!("{line}");
                    }
                }
            }
            let _ = std::fs::remove_file(path);
        }
        if let Some(path) = &self.config_path {
            let _ = std::fs::remove_file(path);
        }
        if self.owns_data_dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// A running `costream worker` of a fleet, on its own loopback address (standing in for a
/// machine). Killed on drop (SIGCONT first, so a frozen one can die).
pub struct Worker {
    child: Child,
    pub id: String,
    pub ip: String,
}

impl Worker {
    /// `costream worker --redis URL --advertise-ip IP --worker-id ID` plus `extra` flags; waits
    /// until it listens.
    pub fn start(redis_url: &str, ip: &str, id: &str, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_via(Command::new(BIN), redis_url, ip, id, extra)
    }

    /// The same inside network namespace `netns` (`ip netns exec`, which execs the worker: the
    /// child's pid is the worker's).
    pub fn start_in_netns(
        netns: &str,
        redis_url: &str,
        ip: &str,
        id: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", netns, BIN]);
        Self::start_via(command, redis_url, ip, id, extra)
    }

    fn start_via(
        mut command: Command,
        redis_url: &str,
        ip: &str,
        id: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let mut child = command
            .args([
                "worker",
                "--redis",
                redis_url,
                "--advertise-ip",
                ip,
                "--worker-id",
                id,
            ])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawn costream worker")?;
        wait_for_line(&mut child, "costream worker ", Duration::from_secs(30))?;
        Ok(Self {
            child,
            id: id.to_string(),
            ip: ip.to_string(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, name: &str) -> anyhow::Result<()> {
        signal(self.child.id(), name)
    }

    /// `kill -9` of the worker and every mixer it runs (a machine lost).
    pub fn kill_all(&mut self) {
        let mixers = children_of(self.child.id());
        let _ = self.child.kill();
        for pid in mixers {
            let _ = signal(pid, "KILL");
        }
        let _ = self.child.wait();
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        wait_with_deadline(&mut self.child, timeout)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = signal(self.child.id(), "CONT");
        self.kill_all();
    }
}

/// `costream publish` with the options and `extra` flags, its stdout piped.
fn spawn_publish(
    whip_url: &str,
    token: &str,
    opts: &PublisherOptions<'_>,
    extra: &[&str],
) -> anyhow::Result<Child> {
    Command::new(BIN)
        .args([
            "publish",
            "--whip",
            whip_url,
            "--color",
            opts.color,
            "--tone",
            &opts.tone_hz.to_string(),
            "--codec",
            opts.codec,
            "--name",
            opts.name,
        ])
        .args(extra)
        .env("COSTREAM_TOKEN", token)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawn costream publish")
}

/// Live (non-zombie) processes whose parent is `parent`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.first() != Some(&"Z") && fields.get(1) == Some(&parent.to_string().as_str())
        })
        .collect()
}

/// Whether a process is gone (or a zombie nobody will run again).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

pub fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()?;
    if !status.success() {
        bail!("kill -{name} {pid} failed");
    }
    Ok(())
}

fn wait_with_deadline(
    child: &mut Child,
    timeout: Duration,
) -> anyhow::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("process {} did not exit within {timeout:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `costream publish` child: a real WebRTC publisher of a solid color and a tone.
pub struct Publisher {
    child: Child,
}

pub struct PublisherOptions<'a> {
    pub color: &'a str,
    pub tone_hz: u32,
    pub codec: &'a str,
    pub name: &'a str,
}

impl PublisherOptions<'static> {
    /// The tests' usual first participant: red VP8 and a 440 Hz tone, named "red".
    pub fn red_vp8() -> Self {
        Self {
            color: "red",
            tone_hz: 440,
            codec: "vp8",
            name: "red",
        }
    }
}

impl Publisher {
    pub fn start(whip_url: &str, token: &str, opts: PublisherOptions<'_>) -> anyhow::Result<Self> {
        Self::start_with_args(whip_url, token, opts, &[])
    }

    /// As `start`, with more `costream publish` flags (e.g. `--no-video`).
    pub fn start_with_args(
        whip_url: &str,
        token: &str,
        opts: PublisherOptions<'_>,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let mut child = spawn_publish(whip_url, token, &opts, extra)?;
        wait_for_line(&mut child, "publishing", Duration::from_secs(30))
            .with_context(|| format!("publisher {} did not connect", opts.name))?;
        Ok(Self { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// As `start_with_args`, and every later stdout line of the publisher (`reconnecting …`,
    /// `reconnected …`, `publishing`) with the instant it was read.
    pub fn start_following(
        whip_url: &str,
        token: &str,
        opts: PublisherOptions<'_>,
        extra: &[&str],
    ) -> anyhow::Result<(Self, mpsc::Receiver<(Instant, String)>)> {
        let mut child = spawn_publish(whip_url, token, &opts, extra)?;
        let lines = follow_lines(&mut child)?;
        let publisher = Self { child };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok((_, line)) if line == "publishing" => return Ok((publisher, lines)),
                Ok(_) => {}
                Err(_) => bail!("publisher {} did not connect", opts.name),
            }
        }
    }

    /// Waits (up to `timeout`) for the publisher to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        wait_with_deadline(&mut self.child, timeout)
    }

    /// Vanishes without leaving (`kill -9`, no WHIP DELETE), like a crashed browser.
    pub fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Leaves the room properly: SIGTERM makes the publisher send the WHIP DELETE.
    pub fn leave(mut self) -> anyhow::Result<()> {
        signal(self.child.id(), "TERM")?;
        let status = wait_with_deadline(&mut self.child, Duration::from_secs(10))?;
        if !status.success() {
            bail!("publisher exited with {status}");
        }
        Ok(())
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A thin client for the JSON API.
pub struct Api {
    pub base_url: String,
    http: reqwest::Client,
}

#[derive(Clone)]
pub struct Room {
    pub id: String,
    pub host_token: String,
    pub guest_token: String,
    pub whip_url: String,
    pub created: Value,
}

impl Api {
    pub fn new(base_url: &str) -> Self {
        Self {
            base_url: base_url.to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("http client"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    pub async fn create_room(&self, body: Value) -> anyhow::Result<Room> {
        let response = self
            .http
            .post(self.url("/api/v1/rooms"))
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let created: Value = response.json().await?;
        if status != 201 {
            bail!("create room: {status} {created}");
        }
        let field = |name: &str| {
            created[name]
                .as_str()
                .map(str::to_string)
                .with_context(|| format!("{name} missing in {created}"))
        };
        Ok(Room {
            id: field("room_id")?,
            host_token: field("host_token")?,
            guest_token: field("guest_token")?,
            whip_url: field("whip_url")?,
            created,
        })
    }

    /// `GET /api/v1/pool` (an open server: no token needed).
    pub async fn pool(&self) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(self.url("/api/v1/pool"))
            .send()
            .await?
            .json()
            .await?)
    }

    /// Waits (20 s at most) until the pool lists exactly `count` fleet workers; its view then.
    pub async fn wait_for_workers(&self, count: usize) -> anyhow::Result<Value> {
        eventually("workers registered", Duration::from_secs(20), || async {
            let view = self.pool().await?;
            let n = view["workers"].as_array().map_or(0, Vec::len);
            Ok((n == count).then_some(view))
        })
        .await
    }

    /// The room status as its host sees it (outputs' URLs and reasons, mixer details).
    pub async fn status(&self, room: &Room) -> anyhow::Result<Value> {
        let response = self
            .http
            .get(self.url(&format!("/api/v1/rooms/{}", room.id)))
            .bearer_auth(&room.host_token)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("room status: {}", response.status());
        }
        Ok(response.json().await?)
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, body))
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Waits until the room's first participant publishes `tracks` tracks.
    pub async fn wait_for_tracks(&self, room: &Room, tracks: usize) -> anyhow::Result<()> {
        eventually(
            "the publisher's tracks known",
            Duration::from_secs(10),
            || async {
                let status = self.status(room).await?;
                let known = status["participants"][0]["tracks"]
                    .as_array()
                    .map_or(0, Vec::len);
                Ok((known == tracks).then_some(()))
            },
        )
        .await
    }

    /// `DELETE /api/v1/rooms/{id}/live` with the host token.
    pub async fn stop_live(&self, room: &Room) -> anyhow::Result<(u16, Value)> {
        let path = format!("/api/v1/rooms/{}/live", room.id);
        self.send(reqwest::Method::DELETE, &path, Some(&room.host_token))
            .await
    }

    /// `DELETE /api/v1/rooms/{id}` with the host token.
    pub async fn end_room(&self, room: &Room) -> anyhow::Result<(u16, Value)> {
        let path = format!("/api/v1/rooms/{}", room.id);
        self.send(reqwest::Method::DELETE, &path, Some(&room.host_token))
            .await
    }

    /// `POST /api/v1/rooms/{id}/live` with the host token.
    pub async fn go_live(&self, room: &Room) -> anyhow::Result<(u16, Value)> {
        let path = format!("/api/v1/rooms/{}/live", room.id);
        self.send(reqwest::Method::POST, &path, Some(&room.host_token))
            .await
    }

    /// Waits until the room's first output is live with `participants` in the mix; its status.
    pub async fn live_with(&self, room: &Room, participants: usize) -> anyhow::Result<Value> {
        eventually(
            "output live with the participants in the mix",
            Duration::from_secs(30),
            || async {
                let status = self.status(room).await?;
                let ready = status["outputs"][0]["state"] == "live"
                    && participants_in_mix(&status) == participants;
                Ok(ready.then_some(status))
            },
        )
        .await
    }
}

/// Polls `check` until it returns Some or the deadline passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() > deadline {
            match last_error {
                Some(e) => bail!("{what}: not within {timeout:?} (last error: {e:#})"),
                None => bail!("{what}: not within {timeout:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Participants in a status JSON whose every track is in the mix.
pub fn participants_in_mix(status: &Value) -> usize {
    status["participants"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter(|p| {
                    let tracks = p["tracks"].as_array();
                    tracks.is_some_and(|t| !t.is_empty() && t.iter().all(|t| t["in_mix"] == true))
                })
                .count()
        })
        .unwrap_or(0)
}

/// The participant id of the participant with this display name.
pub fn participant_id(status: &Value, display_name: &str) -> Option<String> {
    status["participants"]
        .as_array()?
        .iter()
        .find(|p| p["display_name"] == display_name)
        .and_then(|p| p["participant_id"].as_str().map(str::to_string))
}

/// CPU seconds (user + sys) a process has used, from /proc.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    costream_testkit::cpu_seconds(&pid.to_string())
}
