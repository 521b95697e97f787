//! A private `redis-server` per test (Debian's Redis 7): its own port and directory, no
//! persistence, killed on drop. Stands in for the fleet's coordinator.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub struct Redis {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub port: u16,
    /// Addresses it listens on besides 127.0.0.1.
    also_bind: Vec<std::net::IpAddr>,
}

impl Redis {
    /// Starts a server on a free port of 127.0.0.1 and waits (10 s at most) until it answers.
    pub fn start() -> anyhow::Result<Redis> {
        Self::start_also_on(&[])
    }

    /// Like [`Redis::start`], also listening on `also_bind` (e.g. the host end of a network
    /// namespace's link, for workers inside it).
    pub fn start_also_on(also_bind: &[std::net::IpAddr]) -> anyhow::Result<Redis> {
        let dir = tempfile::tempdir().context("tempdir for redis")?;
        let port = crate::free_port()?;
        let mut redis = Redis {
            child: None,
            dir,
            port,
            also_bind: also_bind.to_vec(),
        };
        redis.spawn()?;
        Ok(redis)
    }

    /// `redis://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (everything it held is lost: no persistence).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again, empty, on the same port (a Redis restart).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    /// Sends one command (inline protocol) and returns the raw reply.
    pub fn command(&self, line: &str) -> anyhow::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(format!("{line}\r\n").as_bytes())?;
        let mut buf = vec![0u8; 64 * 1024];
        let n = stream.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .arg("--bind")
            .arg("127.0.0.1")
            .args(self.also_bind.iter().map(|ip| ip.to_string()))
            // Protected mode refuses clients from other addresses without a password; the extra
            // address is a link of the test's own.
            .args([
                "--protected-mode",
                if self.also_bind.is_empty() {
                    "yes"
                } else {
                    "no"
                },
            ])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn redis-server (is it installed? scripts/setup.sh --test)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.command("PING").is_ok_and(|r| r.starts_with("+PONG")) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "redis-server did not answer on port {} within 10 s",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
