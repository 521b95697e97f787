//! serve's end of a room's mixer on a fleet worker: a [`MixerLink`] over one TCP connection.
//!
//! Starting a link returns at once; a task claims the placement in Redis (a new epoch and the
//! room's lease: from then on any older placement is fenced off), connects to the worker, opens
//! the room and relays commands and events. Anything that ends the connection other than the
//! room stopping its mixer is reported as the mixer exiting, which the room recovers from as from
//! a crash (a new launch, on another worker when this one failed).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use costream_mixer::control::{Command, VideoSpec};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Framed, LinesCodec};
use tracing::{info, warn, Instrument};

use super::record::{Lease, WorkerRecord};
use super::store::FleetStore;
use super::wire::{self, FromWorker, ToWorker};
use crate::pool::{MixerInfo, MixerLink, MixerReport};

/// Bounded so a wedged connection cannot make serve buffer without limit.
const COMMAND_QUEUE: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often serve tells the worker it is still there (see `session::SERVE_SILENCE`).
const PING: Duration = Duration::from_secs(1);
/// The worker answers `Open` as soon as a mixer process is attached (a cold one is forked, not
/// waited for).
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// A fresh lease outlives the mixer's start; the worker renews it every second from then on.
pub const INITIAL_LEASE_TTL: Duration = Duration::from_secs(10);

/// Tells the fleet a worker failed a room (so the next launch avoids it).
pub type FailureSink = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// Everything a link needs to place one mixer.
pub struct LinkParams {
    pub store: FleetStore,
    pub secret: Option<Arc<[u8]>>,
    pub room_id: String,
    /// The room's own number for this mixer (reports carry it).
    pub room_epoch: u64,
    pub worker: WorkerRecord,
    pub video: VideoSpec,
    pub inputs: u32,
    pub reports: mpsc::Sender<MixerReport>,
    pub on_failure: FailureSink,
}

/// A room's mixer on a worker. Dropping it closes the connection: the worker kills the mixer.
pub struct RemoteMixer {
    room_epoch: u64,
    commands: mpsc::Sender<Command>,
    kill: Option<oneshot::Sender<()>>,
    /// Set when the room stops the mixer on purpose (its end is then not a failure).
    stopping: Arc<std::sync::atomic::AtomicBool>,
    info: Arc<Mutex<MixerInfo>>,
}

impl RemoteMixer {
    pub fn start(params: LinkParams) -> Self {
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let (kill, kill_rx) = oneshot::channel();
        let info = Arc::new(Mutex::new(MixerInfo {
            worker: Some(params.worker.worker_id.clone()),
            ..MixerInfo::default()
        }));
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let span = tracing::info_span!(
            parent: None, "mixer", room = %params.room_id, epoch = params.room_epoch,
            worker = %params.worker.worker_id
        );
        let room_epoch = params.room_epoch;
        tokio::spawn(
            run(params, command_rx, kill_rx, info.clone(), stopping.clone()).instrument(span),
        );
        Self {
            room_epoch,
            commands,
            kill: Some(kill),
            stopping,
            info,
        }
    }
}

impl MixerLink for RemoteMixer {
    fn epoch(&self) -> u64 {
        self.room_epoch
    }

    fn send(&self, command: Command) -> bool {
        match self.commands.try_send(command) {
            Ok(()) => true,
            Err(e) => {
                warn!(epoch = self.room_epoch, "mixer command dropped: {e}");
                false
            }
        }
    }

    fn stop(mut self: Box<Self>, grace: Duration) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.commands.try_send(Command::Shutdown);
        if let Some(kill) = self.kill.take() {
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                let _ = kill.send(());
            });
        }
    }

    fn info(&self) -> MixerInfo {
        self.info.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for RemoteMixer {
    fn drop(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
    }
}

/// How a link ended.
enum End {
    /// The room let go of it.
    Deliberate(String),
    Failed(String),
}

async fn run(
    params: LinkParams,
    commands: mpsc::Receiver<Command>,
    kill_rx: oneshot::Receiver<()>,
    info: Arc<Mutex<MixerInfo>>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
) {
    let worker_id = params.worker.worker_id.clone();
    let end = relay(&params, commands, kill_rx, &info).await;
    let reason = match end {
        End::Deliberate(reason) => reason,
        End::Failed(reason) if stopping.load(std::sync::atomic::Ordering::Relaxed) => reason,
        End::Failed(reason) => {
            warn!(%reason, "mixer on worker failed");
            (params.on_failure)(&params.room_id, &worker_id);
            reason
        }
    };
    info!(%reason, "remote mixer ended");
    let _ = params
        .reports
        .send(MixerReport::Exited {
            epoch: params.room_epoch,
            reason,
        })
        .await;
}

async fn relay(
    params: &LinkParams,
    mut commands: mpsc::Receiver<Command>,
    mut kill_rx: oneshot::Receiver<()>,
    info: &Mutex<MixerInfo>,
) -> End {
    let worker = &params.worker;
    let failed = |what: &str| End::Failed(format!("worker {}: {what}", worker.worker_id));
    // Claim the placement first: from the moment the lease names this epoch, a mixer of an
    // older placement (a worker that was only paused) stops at its next renewal.
    let epoch = match params.store.next_epoch(&params.room_id).await {
        Ok(epoch) => epoch,
        Err(e) => return failed(&format!("cannot number the placement: {e}")),
    };
    let lease = Lease {
        worker_id: worker.worker_id.clone(),
        epoch,
    };
    if let Err(e) = params
        .store
        .set_lease(&params.room_id, &lease, INITIAL_LEASE_TTL)
        .await
    {
        return failed(&format!("cannot take the room's lease: {e}"));
    }
    let stream = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect(worker.control_addr),
    )
    .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return failed(&format!("cannot connect to {}: {e}", worker.control_addr)),
        Err(_) => {
            return failed(&format!(
                "no answer from {} within {CONNECT_TIMEOUT:?}",
                worker.control_addr
            ))
        }
    };
    let _ = stream.set_nodelay(true);
    let mut lines = Framed::new(stream, LinesCodec::new_with_max_length(wire::MAX_LINE));
    let open = ToWorker::Open {
        protocol: wire::PROTOCOL,
        token: wire::placement_token(
            params.secret.as_deref(),
            &params.room_id,
            epoch,
            crate::access::unix_now(),
        ),
        room_id: params.room_id.clone(),
        epoch,
        video: params.video,
        inputs: params.inputs,
    };
    if let Err(e) = lines.send(wire::encode(&open).trim_end()).await {
        return failed(&format!("connection lost while opening the room: {e}"));
    }
    match tokio::time::timeout(OPEN_TIMEOUT, lines.next()).await {
        Ok(Some(Ok(line))) => match wire::decode::<FromWorker>(&line) {
            Ok(FromWorker::Opened {
                worker_id,
                pid,
                binary,
                warm,
                version,
                ..
            }) => {
                info!(%worker_id, epoch, ?pid, warm, %version, "mixer placed on worker");
                *info.lock().unwrap_or_else(|e| e.into_inner()) = MixerInfo {
                    pid,
                    binary: Some(binary),
                    warm: Some(warm),
                    worker: Some(worker_id),
                };
            }
            Ok(FromWorker::Refused { reason, .. }) => {
                return failed(&format!("refused the room: {reason}"))
            }
            Ok(_) | Err(_) => return failed("answered the opening with something else"),
        },
        Ok(Some(Err(e))) => return failed(&format!("unreadable answer: {e}")),
        Ok(None) => return failed("closed the connection while opening the room"),
        Err(_) => return failed(&format!("did not open the room within {OPEN_TIMEOUT:?}")),
    }
    // The worker stops a room whose serve has gone silent (a partition): say we are here.
    let mut ping = tokio::time::interval(PING);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ping.tick() => {
                let line = wire::encode(&ToWorker::Command { epoch, command: Command::Keepalive });
                if let Err(e) = lines.send(line.trim_end()).await {
                    return failed(&format!("connection lost: {e}"));
                }
            }
            command = commands.recv() => {
                let Some(command) = command else {
                    return End::Deliberate("the room let go of its mixer".into());
                };
                let line = wire::encode(&ToWorker::Command { epoch, command });
                if let Err(e) = lines.send(line.trim_end()).await {
                    return failed(&format!("connection lost: {e}"));
                }
            }
            line = lines.next() => match line {
                Some(Ok(line)) => match wire::decode::<FromWorker>(&line) {
                    Ok(FromWorker::Event { epoch: e, event }) if e == epoch => {
                        let report = MixerReport::Event { epoch: params.room_epoch, event };
                        if params.reports.send(report).await.is_err() {
                            return End::Deliberate("the room is gone".into());
                        }
                    }
                    Ok(FromWorker::Exited { epoch: e, reason }) if e == epoch => {
                        return End::Failed(format!("worker {}: {reason}", worker.worker_id));
                    }
                    Ok(other) => warn!(epoch, "ignoring a message of another placement: {other:?}"),
                    Err(e) => warn!("unreadable message from the worker ({e}): {line:.200}"),
                },
                Some(Err(e)) => return failed(&format!("connection broken: {e}")),
                None => return failed("connection closed (worker gone?)"),
            },
            // Unless the room is stopping it, a kill means the mixer went silent (a hung or
            // partitioned worker): a failure of that worker.
            _ = &mut kill_rx => return failed("killed by the room (the mixer went silent)"),
        }
    }
}
