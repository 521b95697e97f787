//! Where mixer processes are forked: one dedicated thread for serve's whole life.
//!
//! Every mixer is started with `PR_SET_PDEATHSIG = SIGKILL`, so the kernel kills it when serve
//! dies, however it dies (kill -9 included); stdin EOF is the second, polite way out. Linux
//! fires PDEATHSIG when the *thread* that forked the child exits, not the process, so children
//! must never be forked from a short-lived thread (tokio's blocking pool retires idle threads
//! after 10 s, which would kill the room's mixer). This thread lives as long as serve.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use tokio::runtime::Handle;

use crate::telemetry::{LogFormat, LOG_FORMAT_ENV};

#[derive(Debug, thiserror::Error)]
#[error("cannot start mixer {binary}: {source}")]
pub struct SpawnError {
    pub binary: String,
    pub source: std::io::Error,
}

struct Request {
    binary: PathBuf,
    reply: mpsc::Sender<Result<tokio::process::Child, SpawnError>>,
}

/// Handle to the spawner thread. Cheap to clone.
#[derive(Clone)]
pub struct Spawner {
    requests: mpsc::Sender<Request>,
}

impl Spawner {
    /// Starts the thread; children are registered with `runtime` (it reaps them) and run with
    /// `env`.
    pub fn start(runtime: Handle, env: MixerEnv) -> std::io::Result<Self> {
        let (requests, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("mixer-spawner".into())
            .spawn(move || {
                let _entered = runtime.enter();
                // Ends when every Spawner handle is gone, i.e. when serve shuts down.
                while let Ok(request) = rx.recv() {
                    let _ = request.reply.send(spawn_mixer(&request.binary, &env));
                }
            })?;
        Ok(Self { requests })
    }

    /// Starts `<binary> mixer` with piped stdin, stdout and stderr (its log, as JSON lines: see
    /// `process::child_log`). Blocks for the fork+exec only (milliseconds); the child warms up
    /// on its own afterwards.
    pub fn spawn(&self, binary: &Path) -> Result<tokio::process::Child, SpawnError> {
        let gone = || SpawnError {
            binary: binary.display().to_string(),
            source: std::io::Error::other("the mixer spawner thread is gone (shutting down)"),
        };
        let (reply, rx) = mpsc::channel();
        self.requests
            .send(Request {
                binary: binary.to_owned(),
                reply,
            })
            .map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?
    }
}

/// glibc's knob for its per-thread allocation arenas (an operator's own value wins).
const MALLOC_ARENA_MAX: &str = "MALLOC_ARENA_MAX";
/// A mixer's input branches bring streaming threads that come and go with guests, and glibc gives
/// busy threads arenas of their own (up to 8 per core) that it rarely returns: an R4 mixer grew
/// from 137 to 155-163 MB RSS over 12 guest re-joins with the default, and stayed at 135-140 MB
/// with 2 arenas, for the same CPU (0.41-0.43 core either way).
const MIXER_MALLOC_ARENAS: &str = "2";

/// What every mixer of this parent is told through its environment.
#[derive(Debug, Clone)]
pub struct MixerEnv {
    /// Where its inputs receive RTP (see `costream_mixer::control::RTP_BIND_ENV`).
    pub rtp_bind: IpAddr,
    /// Stop when the parent is silent this long (a fleet worker's mixers; see
    /// `costream_mixer::control::WATCHDOG_ENV`).
    pub watchdog: Option<Duration>,
    /// Where its recordings go (see `costream_mixer::recording::RECORDINGS_DIR_ENV`); none:
    /// it refuses to record.
    pub recordings_dir: Option<std::path::PathBuf>,
}

impl MixerEnv {
    /// Mixers next to serve: loopback, no watchdog (PDEATHSIG and stdin EOF suffice),
    /// recordings in serve's catalog.
    pub fn local(rtp_bind: IpAddr, recordings_dir: Option<std::path::PathBuf>) -> Self {
        Self {
            rtp_bind,
            watchdog: None,
            recordings_dir,
        }
    }
}

fn spawn_mixer(binary: &Path, env: &MixerEnv) -> Result<tokio::process::Child, SpawnError> {
    let parent = std::process::id();
    let mut command = tokio::process::Command::new(binary);
    command
        .arg("mixer")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Whatever this process's own format: JSON lines keep their level when re-emitted.
        .env(LOG_FORMAT_ENV, LogFormat::Json.as_str())
        .env(
            costream_mixer::control::RTP_BIND_ENV,
            env.rtp_bind.to_string(),
        )
        .kill_on_drop(true);
    if let Some(watchdog) = env.watchdog {
        command.env(
            costream_mixer::control::WATCHDOG_ENV,
            watchdog.as_millis().to_string(),
        );
    }
    if let Some(dir) = &env.recordings_dir {
        command.env(costream_mixer::recording::RECORDINGS_DIR_ENV, dir);
    }
    if std::env::var_os(MALLOC_ARENA_MAX).is_none() {
        command.env(MALLOC_ARENA_MAX, MIXER_MALLOC_ARENAS);
    }
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // serve died between fork and prctl: the signal was never armed, do not run.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::other(
                    "serve exited while starting the mixer",
                ));
            }
            Ok(())
        });
    }
    command.spawn().map_err(|source| SpawnError {
        binary: binary.display().to_string(),
        source,
    })
}
