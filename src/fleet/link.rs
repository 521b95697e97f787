//! serve's end of a room's mixer on a fleet worker: a [`MixerLink`] over one TCP connection.
//!
//! Starting a link returns at once; a task claims the placement in Redis (a new epoch and the
//! room's lease: from then on any older placement is fenced off), connects to the worker, opens
//! the room and relays commands and events. A room whose mixer was orphaned on a worker when the
//! previous serve was lost takes that mixer over instead ([`ToWorker::Resume`]: same epoch, the
//! mixer never stopped pushing), and places a new one only if that fails. Every way the room
//! lets go of a link says [`ToWorker::Stop`], except a detach (serve shutting down with the room
//! stored), which leaves the mixer orphaned for the next serve. How it ends decides what the room
//! does next:
//! - the room stopped it: the mixer was asked to shut down and had `grace` to flush;
//! - the worker was lost (connection refused, reset or closed, silent for [`WORKER_SILENCE`],
//!   killed by the room for silence): reported as `worker_lost`, the room moves at once and the
//!   worker is avoided for new placements for a while;
//! - the mixer ended on the worker (crash, fatal error, fenced) or no placement could be made:
//!   reported as a crash, which the room retries with backoff and eventually gives up on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use costream_mixer::control::{Command, VideoSpec};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::codec::{Framed, LinesCodec};
use tracing::{debug, info, warn, Instrument};

use super::record::WorkerRecord;
use super::store::FleetStore;
use super::wire::{self, FromWorker, ToWorker};
use crate::pool::{MixerInfo, MixerLink, MixerReport};

/// Bounded so a wedged connection cannot make serve buffer without limit.
const COMMAND_QUEUE: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The worker answers `Open` as soon as a mixer process is attached (a cold one is forked, not
/// waited for).
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// A write the worker does not take within this long means it is gone (a full socket buffer to a
/// frozen or cut-off peer would otherwise block the relay until TCP gives up, minutes later).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// How often serve tells the worker it is still there (see `session::SERVE_SILENCE`).
const PING: Duration = Duration::from_secs(1);
/// The worker says `Alive` every second; this long without a line from it, it is lost (frozen,
/// partitioned). Shorter than the room's own 4 s heartbeat timeout, so a lost worker is a move,
/// not a crash.
pub const WORKER_SILENCE: Duration = Duration::from_secs(3);
/// A fresh lease outlives the mixer's start; the worker renews it every second from then on.
pub const INITIAL_LEASE_TTL: Duration = Duration::from_secs(10);

/// Tells the fleet a worker was lost for a room (so the next placements avoid it).
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
    pub on_worker_lost: FailureSink,
    /// The placement orphaned on `worker` by the previous serve, to take over first.
    pub resume: Option<u64>,
    /// No other mixer of the room is linked from this serve (not a move's successor): if the
    /// room's lease names a placement, it is a previous serve's, orphaned or about to be (the
    /// registry may not show it yet), and is taken over first.
    pub take_over_leased: bool,
    /// The registry as the fleet last read it (where a leased placement's worker is).
    pub workers: Vec<WorkerRecord>,
    /// Tells the fleet where the room's mixer runs, when that is not `worker`.
    pub on_placed: FailureSink,
    /// Tells the fleet the link ended.
    pub on_ended: Arc<dyn Fn(&str) + Send + Sync>,
    /// serve keeps rooms across restarts: the mixer may outlive it (see `ToWorker::Open`).
    pub resumable: bool,
}

/// A room's mixer on a worker. Dropping it tells the worker to stop the mixer (`Stop`).
pub struct RemoteMixer {
    room_id: String,
    worker_id: String,
    room_epoch: u64,
    commands: mpsc::Sender<Command>,
    kill: Option<oneshot::Sender<()>>,
    /// Set when the room stops the mixer on purpose (its end is then not a failure).
    stopping: Arc<AtomicBool>,
    /// Set when the link's task has ended (and reported why).
    ended: Arc<AtomicBool>,
    /// Set when serve lets go without stopping the mixer (it shuts down; the room is stored).
    detaching: Arc<AtomicBool>,
    info: Arc<Mutex<MixerInfo>>,
    on_worker_lost: FailureSink,
}

impl RemoteMixer {
    pub fn start(params: LinkParams) -> Self {
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let (kill, kill_rx) = oneshot::channel();
        let info = Arc::new(Mutex::new(MixerInfo {
            worker: Some(params.worker.worker_id.clone()),
            ..MixerInfo::default()
        }));
        let stopping = Arc::new(AtomicBool::new(false));
        let ended = Arc::new(AtomicBool::new(false));
        let detaching = Arc::new(AtomicBool::new(false));
        let span = tracing::info_span!(
            parent: None, "mixer", room = %params.room_id, epoch = params.room_epoch,
            worker = %params.worker.worker_id
        );
        let link = Self {
            room_id: params.room_id.clone(),
            worker_id: params.worker.worker_id.clone(),
            room_epoch: params.room_epoch,
            commands,
            kill: Some(kill),
            stopping: stopping.clone(),
            ended: ended.clone(),
            detaching: detaching.clone(),
            info: info.clone(),
            on_worker_lost: params.on_worker_lost.clone(),
        };
        let flags = Flags {
            stopping,
            ended,
            detaching,
        };
        tokio::spawn(run(params, command_rx, kill_rx, info, flags).instrument(span));
        link
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
        self.stopping.store(true, Ordering::Relaxed);
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

    fn detach(mut self: Box<Self>, _grace: Duration) {
        self.detaching.store(true, Ordering::Relaxed);
        self.stopping.store(true, Ordering::Relaxed);
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
    }
}

impl Drop for RemoteMixer {
    fn drop(&mut self) {
        if let Some(kill) = self.kill.take() {
            // Dropped without `stop` while still running: the room killed a mixer that went
            // silent. Blame the worker now, before the room's next launch picks a worker.
            if !self.stopping.load(Ordering::Relaxed) && !self.ended.load(Ordering::Relaxed) {
                // The worker the mixer was found on (a takeover may have moved it).
                let worker = self.info().worker.unwrap_or_else(|| self.worker_id.clone());
                (self.on_worker_lost)(&self.room_id, &worker);
            }
            let _ = kill.send(());
        }
    }
}

/// How a link ended.
enum End {
    /// The room let go of it.
    Deliberate(String),
    /// The mixer ended on the worker, or no placement could be made.
    MixerEnded(String),
    /// The worker is gone, frozen or cut off.
    WorkerLost(String),
}

/// Shared between a link and its task.
struct Flags {
    stopping: Arc<AtomicBool>,
    ended: Arc<AtomicBool>,
    detaching: Arc<AtomicBool>,
}

async fn run(
    mut params: LinkParams,
    commands: mpsc::Receiver<Command>,
    kill_rx: oneshot::Receiver<()>,
    info: Arc<Mutex<MixerInfo>>,
    flags: Flags,
) {
    let end = relay(&mut params, commands, kill_rx, &info, &flags).await;
    (params.on_ended)(&params.room_id);
    let worker_id = params.worker.worker_id.clone();
    flags.ended.store(true, Ordering::Relaxed);
    let stopped = flags.stopping.load(Ordering::Relaxed);
    let (reason, worker_lost) = match end {
        End::Deliberate(reason) => (reason, false),
        End::MixerEnded(reason) => (reason, false),
        End::WorkerLost(reason) if stopped => (reason, false),
        End::WorkerLost(reason) => {
            warn!(%reason, "worker lost; the room moves");
            (params.on_worker_lost)(&params.room_id, &worker_id);
            (reason, true)
        }
    };
    info!(%reason, "remote mixer ended");
    let _ = params
        .reports
        .send(MixerReport::Exited {
            epoch: params.room_epoch,
            reason,
            worker_lost,
        })
        .await;
}

type Lines = Framed<TcpStream, LinesCodec>;

/// Why a control line could not be sent.
pub(super) enum SendFailure {
    Lost(tokio_util::codec::LinesCodecError),
    /// The peer took nothing for [`SEND_TIMEOUT`].
    Stalled,
}

/// Sends one control message (either direction), giving up after [`SEND_TIMEOUT`].
pub(super) async fn send_message<T: serde::Serialize>(
    lines: &mut Framed<TcpStream, LinesCodec>,
    msg: &T,
) -> Result<(), SendFailure> {
    let line = wire::encode(msg);
    match tokio::time::timeout(SEND_TIMEOUT, lines.send(line.trim_end())).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(SendFailure::Lost(e)),
        Err(_) => Err(SendFailure::Stalled),
    }
}

async fn send_line(lines: &mut Lines, msg: &ToWorker) -> Result<(), String> {
    send_message(lines, msg)
        .await
        .map_err(|failure| match failure {
            SendFailure::Lost(e) => format!("connection lost: {e}"),
            SendFailure::Stalled => format!("took no data for {SEND_TIMEOUT:?}"),
        })
}

/// Takes the orphaned mixer over if there is one, else claims a new placement, connects and
/// opens the room. `Err` says how it failed.
async fn open(params: &mut LinkParams, info: &Mutex<MixerInfo>) -> Result<(Lines, u64), End> {
    if let Some(epoch) = params.resume {
        match resume(params, &params.worker, info, epoch).await {
            Ok(lines) => return Ok((lines, epoch)),
            Err(End::Deliberate(reason) | End::MixerEnded(reason) | End::WorkerLost(reason)) => {
                info!(epoch, %reason, "the orphaned mixer cannot be taken over; placing a new one");
            }
        }
    } else if params.take_over_leased {
        if let Some(taken) = take_over_leased(params, info).await {
            return Ok(taken);
        }
    }
    // Claim the placement first: from the moment the lease names this epoch, a mixer of an
    // older placement (a worker that was only paused, an orphan) stops at its next renewal.
    let lease = params
        .store
        .place(&params.room_id, &params.worker.worker_id, INITIAL_LEASE_TTL)
        .await
        .map_err(|e| End::MixerEnded(format!("cannot place the room (Redis): {e}")))?;
    let epoch = lease.epoch;
    let mut lines = connect(&params.worker).await?;
    let opening = ToWorker::Open {
        protocol: wire::PROTOCOL,
        token: token(params, &params.worker.worker_id, epoch),
        room_id: params.room_id.clone(),
        epoch,
        video: params.video,
        inputs: params.inputs,
        resumable: params.resumable,
    };
    handshake(&mut lines, &opening, &params.worker, info).await?;
    Ok((lines, epoch))
}

/// Takes over placement `epoch` on `worker`, orphaned there when the previous serve was lost.
async fn resume(
    params: &LinkParams,
    worker: &WorkerRecord,
    info: &Mutex<MixerInfo>,
    epoch: u64,
) -> Result<Lines, End> {
    let mut lines = connect(worker).await?;
    let opening = ToWorker::Resume {
        protocol: wire::PROTOCOL,
        token: token(params, &worker.worker_id, epoch),
        room_id: params.room_id.clone(),
        epoch,
    };
    handshake(&mut lines, &opening, worker, info).await?;
    info!(epoch, worker = %worker.worker_id, "took over the mixer the previous serve left running");
    Ok(lines)
}

/// How often, and how far apart, a leased placement is asked for: a serve that stopped a
/// moment ago may have let go of it before the worker noticed.
const LEASED_TRIES: u32 = 4;
const LEASED_RETRY: Duration = Duration::from_millis(250);
/// One attempt at a leased placement gets this long (a live worker answers in milliseconds).
const LEASED_ATTEMPT: Duration = Duration::from_millis(1500);

/// The room's lease names a placement: another serve's (it was stopped, or died, a moment
/// ago). Takes its mixer over if it is orphaned (or becomes so within a second).
async fn take_over_leased(
    params: &mut LinkParams,
    info: &Mutex<MixerInfo>,
) -> Option<(Lines, u64)> {
    let lease = params.store.lease(&params.room_id).await.ok()??;
    let worker = params
        .workers
        .iter()
        .find(|w| w.worker_id == lease.worker_id && w.protocol == wire::PROTOCOL)?
        .clone();
    for attempt in 1..=LEASED_TRIES {
        // A frozen worker would hold each attempt for the whole opening timeout.
        let attempt_result =
            tokio::time::timeout(LEASED_ATTEMPT, resume(params, &worker, info, lease.epoch))
                .await
                .unwrap_or_else(|_| {
                    Err(End::WorkerLost(format!(
                        "no answer within {LEASED_ATTEMPT:?}"
                    )))
                });
        match attempt_result {
            Ok(lines) => {
                if worker.worker_id != params.worker.worker_id {
                    (params.on_placed)(&params.room_id, &worker.worker_id);
                    params.worker = worker;
                }
                return Some((lines, lease.epoch));
            }
            Err(End::Deliberate(reason) | End::MixerEnded(reason) | End::WorkerLost(reason)) => {
                debug!(attempt, %reason, "the leased placement cannot be taken over");
                // Only a placement still attached to the serve that let go is worth waiting
                // for (the worker's refusal names it); an unreachable worker is not.
                if !reason.contains(wire::NOT_ORPHANED) {
                    break;
                }
            }
        }
        tokio::time::sleep(LEASED_RETRY).await;
    }
    info!(epoch = lease.epoch, worker = %lease.worker_id, "the room's leased mixer cannot be taken over; placing a new one");
    None
}

fn token(params: &LinkParams, worker_id: &str, epoch: u64) -> String {
    wire::placement_token(
        params.secret.as_deref(),
        &params.room_id,
        epoch,
        worker_id,
        crate::access::unix_now(),
    )
}

fn worker_lost(worker: &WorkerRecord, what: String) -> End {
    End::WorkerLost(format!("worker {}: {what}", worker.worker_id))
}

async fn connect(worker: &WorkerRecord) -> Result<Lines, End> {
    let stream = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect(worker.control_addr),
    )
    .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            return Err(worker_lost(
                worker,
                format!("cannot connect to {}: {e}", worker.control_addr),
            ))
        }
        Err(_) => {
            return Err(worker_lost(
                worker,
                format!(
                    "no answer from {} within {CONNECT_TIMEOUT:?}",
                    worker.control_addr
                ),
            ))
        }
    };
    let _ = stream.set_nodelay(true);
    Ok(Framed::new(
        stream,
        LinesCodec::new_with_max_length(wire::MAX_LINE),
    ))
}

/// Sends the opening line and waits for `Opened`.
async fn handshake(
    lines: &mut Lines,
    opening: &ToWorker,
    worker: &WorkerRecord,
    info: &Mutex<MixerInfo>,
) -> Result<(), End> {
    let lost = |what: String| worker_lost(worker, what);
    send_line(lines, opening).await.map_err(lost)?;
    loop {
        let line = match tokio::time::timeout(OPEN_TIMEOUT, lines.next()).await {
            Ok(Some(Ok(line))) => line,
            Ok(Some(Err(e))) => return Err(lost(format!("unreadable answer: {e}"))),
            Ok(None) => return Err(lost("closed the connection while opening the room".into())),
            Err(_) => {
                return Err(lost(format!(
                    "did not open the room within {OPEN_TIMEOUT:?}"
                )))
            }
        };
        match wire::decode::<FromWorker>(&line) {
            Ok(FromWorker::Opened {
                worker_id,
                pid,
                binary,
                warm,
                version,
                resumed,
                ..
            }) => {
                info!(%worker_id, ?pid, warm, resumed, %version, "mixer placed on worker");
                *info.lock().unwrap_or_else(|e| e.into_inner()) = MixerInfo {
                    pid,
                    binary: Some(binary),
                    warm: Some(warm),
                    worker: Some(worker_id),
                };
                return Ok(());
            }
            // Refused (draining, full, protocol): not lost, but not for this room now either.
            Ok(FromWorker::Refused { reason, .. }) => {
                return Err(lost(format!("refused the room: {reason}")))
            }
            Ok(FromWorker::Alive) => {}
            Ok(_) | Err(_) => return Err(lost("answered the opening with something else".into())),
        }
    }
}

/// Tells the worker to stop the placement's mixer now (the room let go of it), best effort:
/// a worker that cannot be told fences the mixer off when the lease moves on.
async fn stop_placement(lines: &mut Lines, epoch: u64) {
    if let Err(e) = send_line(lines, &ToWorker::Stop { epoch }).await {
        debug!(epoch, "could not tell the worker to stop the mixer: {e}");
    }
}

async fn relay(
    params: &mut LinkParams,
    mut commands: mpsc::Receiver<Command>,
    mut kill_rx: oneshot::Receiver<()>,
    info: &Mutex<MixerInfo>,
    flags: &Flags,
) -> End {
    let stopping = &flags.stopping;
    // A link the room let go of while it was still being set up must not go on to claim the
    // lease or start a mixer: that would fence off the room's newer placement.
    let (mut lines, epoch) = tokio::select! {
        opened = open(params, info) => match opened {
            Ok(opened) => opened,
            Err(end) => return end,
        },
        _ = &mut kill_rx => return End::Deliberate("let go before it was placed".into()),
    };
    let params = &*params;
    let worker_id = &params.worker.worker_id;
    // The worker stops a room whose serve has gone silent (a partition): say we are here.
    let mut ping = tokio::time::interval(PING);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_word = Instant::now();
    let mut commands_open = true;
    loop {
        tokio::select! {
            _ = ping.tick() => {
                if last_word.elapsed() > WORKER_SILENCE {
                    return End::WorkerLost(format!(
                        "worker {worker_id}: silent for {:.1} s (frozen or cut off?)",
                        last_word.elapsed().as_secs_f64()
                    ));
                }
                let keepalive = ToWorker::Command { epoch, command: Command::Keepalive };
                if let Err(e) = send_line(&mut lines, &keepalive).await {
                    return End::WorkerLost(format!("worker {worker_id}: {e}"));
                }
            }
            command = commands.recv(), if commands_open => {
                let Some(command) = command else {
                    if stopping.load(Ordering::Relaxed) {
                        // Stopping: the worker passes Shutdown on and says when the mixer has
                        // flushed (Exited); the room's grace timer ends the wait otherwise.
                        commands_open = false;
                        continue;
                    }
                    stop_placement(&mut lines, epoch).await;
                    return End::Deliberate("the room let go of its mixer".into());
                };
                if let Err(e) = send_line(&mut lines, &ToWorker::Command { epoch, command }).await {
                    return End::WorkerLost(format!("worker {worker_id}: {e}"));
                }
            }
            line = lines.next() => match line {
                Some(Ok(line)) => {
                    last_word = Instant::now();
                    match wire::decode::<FromWorker>(&line) {
                        Ok(FromWorker::Event { epoch: e, event }) if e == epoch => {
                            let report = MixerReport::Event { epoch: params.room_epoch, event };
                            if params.reports.send(report).await.is_err() {
                                if !flags.detaching.load(Ordering::Relaxed) {
                                    stop_placement(&mut lines, epoch).await;
                                }
                                return End::Deliberate("the room is gone".into());
                            }
                        }
                        Ok(FromWorker::Exited { epoch: e, reason }) if e == epoch => {
                            return End::MixerEnded(format!("worker {worker_id}: {reason}"));
                        }
                        Ok(FromWorker::Moving { epoch: e }) if e == epoch => {
                            info!("the worker is draining: moving the room (make before break)");
                            let report = MixerReport::MoveRequested { epoch: params.room_epoch };
                            if params.reports.send(report).await.is_err() {
                                if !flags.detaching.load(Ordering::Relaxed) {
                                    stop_placement(&mut lines, epoch).await;
                                }
                                return End::Deliberate("the room is gone".into());
                            }
                        }
                        Ok(FromWorker::Alive) => {}
                        Ok(other) => warn!(epoch, "ignoring a message of another placement: {other:?}"),
                        Err(e) => warn!("unreadable message from the worker ({e}): {line:.200}"),
                    }
                }
                Some(Err(e)) => return End::WorkerLost(format!("worker {worker_id}: connection broken: {e}")),
                None => return End::WorkerLost(format!("worker {worker_id}: connection closed (worker gone?)")),
            },
            _ = &mut kill_rx => {
                // serve shuts down with the room stored: the mixer stays for the next serve.
                if flags.detaching.load(Ordering::Relaxed) {
                    return End::Deliberate("detached: left running for the next serve".into());
                }
                // Unless the room is stopping it, a kill means the mixer went silent (a hung or
                // partitioned worker).
                stop_placement(&mut lines, epoch).await;
                return End::WorkerLost(format!("worker {worker_id}: killed by the room (the mixer went silent)"));
            }
        }
    }
}
