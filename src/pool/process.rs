//! One `costream mixer` child process: spawn, send commands, read events, stop.
//!
//! The child speaks the JSON-lines protocol of `costream_mixer::control` on stdio. Everything it
//! reports is tagged with the epoch the room gave it, so the room can ignore a stale mixer. Its
//! stderr (its log) goes to this process's log ([`child_log`]).

mod child_log;

use std::path::{Path, PathBuf};
use std::time::Duration;

use costream_mixer::control::{decode_line, encode_line, Command, Event};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn, Instrument};

use super::spawner::{SpawnError, Spawner};

/// What a mixer process tells its room.
#[derive(Debug)]
pub enum MixerReport {
    Event {
        epoch: u64,
        event: Event,
    },
    Exited {
        epoch: u64,
        reason: String,
        /// The machine running the mixer was lost (a fleet worker died, froze or was cut off),
        /// not the mixer itself: the room moves at once and it does not count as a crash.
        worker_lost: bool,
    },
    /// The machine running the mixer is draining and asks for the room to move (make before
    /// break: the mixer stays on air until the room stops it). Only fleet workers send it.
    MoveRequested {
        epoch: u64,
    },
}

/// A started `costream mixer` not yet given to a room: it warms up (GStreamer init, plugins)
/// and then waits for `Start`. The warm pool holds these.
pub struct MixerChild {
    child: tokio::process::Child,
    binary: PathBuf,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// Set once the child said `Hello`.
    warm: bool,
    /// Tells the task forwarding the child's log which room it works for.
    log_room: child_log::LogRoom,
}

impl MixerChild {
    /// Forks `<binary> mixer` on the spawner thread (see [`Spawner`]) and starts forwarding its
    /// log. Must be called inside a Tokio runtime.
    pub fn spawn(spawner: &Spawner, binary: &Path) -> Result<Self, SpawnError> {
        let mut child = spawner.spawn(binary)?;
        let stdin = child.stdin.take().expect("stdin piped");
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        let log_room = child_log::forward(stderr, child.id());
        Ok(Self {
            child,
            binary: binary.to_owned(),
            stdin,
            lines: BufReader::new(stdout).lines(),
            warm: false,
            log_room,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Waits for the child's `Hello` (it is then warm); the error says why it never came.
    pub async fn warm_up(&mut self) -> Result<(), String> {
        while let Some(line) = self.lines.next_line().await.map_err(|e| e.to_string())? {
            match decode_line::<Event>(&line) {
                Ok(Event::Hello { .. }) => {
                    self.warm = true;
                    return Ok(());
                }
                Ok(Event::Fatal { reason }) => return Err(reason),
                _ => warn!("unexpected line from a warming mixer: {line:.200}"),
            }
        }
        Err("mixer exited while warming up".into())
    }

    /// Still running (a warm mixer may have died while it waited in the pool).
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Hands the process to a room: from now on its events go to `reports`, tagged `epoch`.
    pub fn attach(
        self,
        room_id: &str,
        epoch: u64,
        reports: mpsc::Sender<MixerReport>,
    ) -> MixerProcess {
        let Self {
            child,
            binary,
            mut stdin,
            lines,
            warm,
            log_room,
        } = self;
        log_room.set(room_id, epoch);
        let pid = child.id();
        let span = tracing::info_span!(parent: None, "mixer", room = %room_id, epoch, pid);
        info!(parent: &span, warm, binary = %binary.display(), "mixer process attached to room");

        let (commands, mut command_rx) = mpsc::channel::<Command>(COMMAND_QUEUE);
        tokio::spawn(
            async move {
                while let Some(command) = command_rx.recv().await {
                    let line = encode_line(&command);
                    if let Err(e) = stdin.write_all(line.as_bytes()).await {
                        debug!("mixer stdin closed: {e}");
                        break;
                    }
                    let _ = stdin.flush().await;
                }
                // Dropping stdin tells the mixer serve is gone; it shuts down.
            }
            .instrument(span.clone()),
        );
        let (kill, kill_rx) = oneshot::channel::<()>();
        tokio::spawn(supervise(child, lines, kill_rx, epoch, reports).instrument(span));
        MixerProcess {
            epoch,
            pid,
            binary,
            warm,
            commands,
            kill: Some(kill),
        }
    }
}

/// Handle to a mixer child working for a room. Dropping it kills the child (no orphans).
pub struct MixerProcess {
    epoch: u64,
    pid: Option<u32>,
    binary: PathBuf,
    /// Came warm from the pool (false: spawned cold for this room).
    warm: bool,
    commands: mpsc::Sender<Command>,
    kill: Option<oneshot::Sender<()>>,
}

/// Bounded so a wedged child cannot make serve buffer without limit.
const COMMAND_QUEUE: usize = 256;

impl MixerProcess {
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    pub fn was_warm(&self) -> bool {
        self.warm
    }

    /// Queues a command; false when the child is gone or hopelessly behind.
    pub fn send(&self, command: Command) -> bool {
        match self.commands.try_send(command) {
            Ok(()) => true,
            Err(e) => {
                warn!(epoch = self.epoch, "mixer command dropped: {e}");
                false
            }
        }
    }

    /// Asks the mixer to shut down, and kills it if it has not exited after `grace`.
    pub fn stop(mut self, grace: Duration) {
        let _ = self.commands.try_send(Command::Shutdown);
        if let Some(kill) = self.kill.take() {
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                let _ = kill.send(());
            });
        }
    }
}

impl super::MixerLink for MixerProcess {
    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn send(&self, command: Command) -> bool {
        MixerProcess::send(self, command)
    }

    fn stop(self: Box<Self>, grace: Duration) {
        MixerProcess::stop(*self, grace);
    }

    fn info(&self) -> super::MixerInfo {
        super::MixerInfo {
            pid: self.pid,
            binary: Some(self.binary.display().to_string()),
            warm: Some(self.warm),
            worker: None,
        }
    }
}

impl Drop for MixerProcess {
    fn drop(&mut self) {
        // `stop` took the kill switch already; otherwise dropping means "kill now".
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
    }
}

/// Reads the child's events until its stdout closes (it exited) or it is killed, then reports
/// why it ended. stdout is drained before waiting so a last `Fatal` event is never lost.
async fn supervise(
    mut child: tokio::process::Child,
    mut lines: Lines<BufReader<ChildStdout>>,
    mut kill_rx: oneshot::Receiver<()>,
    epoch: u64,
    reports: mpsc::Sender<MixerReport>,
) {
    let mut last_fatal: Option<String> = None;
    let mut kill_requested = false;
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => match decode_line::<Event>(&line) {
                    // A cold mixer says hello before it reads `Start`; nothing for the room.
                    Ok(Event::Hello { .. }) => {}
                    Ok(event) => {
                        if let Event::Fatal { reason } = &event {
                            last_fatal = Some(reason.clone());
                        }
                        if reports.send(MixerReport::Event { epoch, event }).await.is_err() {
                            // The room is gone; nobody wants this mixer any more.
                            kill_requested = true;
                            break;
                        }
                    }
                    Err(e) => warn!("unreadable mixer event ({e}): {line:.200}"),
                },
                Ok(None) | Err(_) => break,
            },
            _ = &mut kill_rx => {
                kill_requested = true;
                break;
            }
        }
    }
    let status = if kill_requested {
        let _ = child.start_kill();
        child.wait().await
    } else {
        // stdout closed: the child is exiting; still honour a kill if it lingers.
        tokio::select! {
            status = child.wait() => status,
            _ = &mut kill_rx => {
                let _ = child.start_kill();
                child.wait().await
            }
        }
    };
    let reason = match (status, last_fatal) {
        (_, Some(fatal)) => fatal,
        (Ok(status), None) if status.success() => "mixer exited".to_string(),
        (Ok(status), None) => describe_exit(status),
        (Err(e), None) => format!("cannot wait for mixer: {e}"),
    };
    info!(%reason, "mixer process ended");
    let _ = reports
        .send(MixerReport::Exited {
            epoch,
            reason,
            worker_lost: false,
        })
        .await;
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("mixer exited with status {code}"),
        (None, Some(signal)) => format!("mixer killed by signal {signal}"),
        _ => format!("mixer ended: {status}"),
    }
}
