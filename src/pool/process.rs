//! One `costream mixer` child process: spawn, send commands, read events, stop.
//!
//! The child speaks the JSON-lines protocol of `costream_mixer::control` on stdio. Everything it
//! reports is tagged with the epoch the room gave it, so the room can ignore a stale mixer.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use costream_mixer::control::{decode_line, encode_line, Command, Event};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn, Instrument};

/// What a mixer process tells its room.
#[derive(Debug)]
pub enum MixerReport {
    Event { epoch: u64, event: Event },
    Exited { epoch: u64, reason: String },
}

/// Handle to a running mixer child. Dropping it kills the child (no orphans).
pub struct MixerProcess {
    epoch: u64,
    pid: Option<u32>,
    commands: mpsc::Sender<Command>,
    kill: Option<oneshot::Sender<()>>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot start mixer {binary}: {source}")]
pub struct SpawnError {
    binary: String,
    source: std::io::Error,
}

/// Bounded so a wedged child cannot make serve buffer without limit.
const COMMAND_QUEUE: usize = 256;

impl MixerProcess {
    /// Starts `<binary> mixer` and the tasks that feed and read it. Reports go to `reports`.
    pub fn spawn(
        binary: &PathBuf,
        room_id: &str,
        epoch: u64,
        reports: mpsc::Sender<MixerReport>,
    ) -> Result<Self, SpawnError> {
        let mut child = tokio::process::Command::new(binary)
            .arg("mixer")
            .env("COSTREAM_ROOM", room_id)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| SpawnError {
                binary: binary.display().to_string(),
                source,
            })?;
        let pid = child.id();
        let span = tracing::info_span!(parent: None, "mixer", room = %room_id, epoch, pid);
        info!(parent: &span, "mixer process started");

        let (commands, mut command_rx) = mpsc::channel::<Command>(COMMAND_QUEUE);
        let mut stdin = child.stdin.take().expect("stdin piped");
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

        let stdout = child.stdout.take().expect("stdout piped");
        let (kill, kill_rx) = oneshot::channel::<()>();
        tokio::spawn(supervise(child, stdout, kill_rx, epoch, reports).instrument(span));
        Ok(Self {
            epoch,
            pid,
            commands,
            kill: Some(kill),
        })
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
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
    stdout: tokio::process::ChildStdout,
    mut kill_rx: oneshot::Receiver<()>,
    epoch: u64,
    reports: mpsc::Sender<MixerReport>,
) {
    let mut lines = BufReader::new(stdout).lines();
    let mut last_fatal: Option<String> = None;
    let mut kill_requested = false;
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => match decode_line::<Event>(&line) {
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
    let _ = reports.send(MixerReport::Exited { epoch, reason }).await;
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("mixer exited with status {code}"),
        (None, Some(signal)) => format!("mixer killed by signal {signal}"),
        _ => format!("mixer ended: {status}"),
    }
}
