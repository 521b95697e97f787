//! One room placement on a worker: the connection from serve, the mixer process it runs, and
//! the fencing that stops that mixer when the room has moved on.
//!
//! The mixer stops at once when serve says [`ToWorker::Stop`] (the room stopped, or gave up on
//! this worker), or the room's lease in Redis names another placement (fenced). When serve is
//! lost instead (the connection closes without `Stop`, or serve is silent for
//! [`SERVE_SILENCE`]) the mixer keeps pushing, orphaned: the next serve takes it over
//! ([`ToWorker::Resume`]) and the CDN never sees the publisher leave. An orphan stops when the
//! lease moves on (a partitioned serve's room was placed elsewhere), when it cannot renew its
//! lease for [`LEASE_TTL`] less a renewal (nobody vouches for it any more: self-fencing), or when
//! no serve came back within the worker's orphan grace. A connected placement keeps running while
//! only Redis is away: nothing is torn down because the coordinator is.

use std::sync::Arc;
use std::time::Duration;

use costream_mixer::control::{Command, Event, VideoSpec};
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::{Framed, LinesCodec};
use tracing::{debug, info, warn, Instrument};

use super::record::Lease;
use super::resume::PlacementMemory;
use super::store::LeaseCheck;
use super::wire::{self, FromWorker, ToWorker};
use super::worker::WorkerCtx;
use crate::pool::{MixerProcess, MixerReport, Refusal};

/// The opening line must arrive this soon after connecting.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// serve pings every second; this long without a word means it cannot reach us any more.
pub const SERVE_SILENCE: Duration = Duration::from_secs(4);
/// How often the lease is renewed, and how long each renewal lasts.
const LEASE_RENEW: Duration = Duration::from_secs(1);
const LEASE_TTL: Duration = Duration::from_secs(5);
/// The mixer is told its parent is alive this often (see `WATCHDOG_ENV`).
const KEEPALIVE: Duration = Duration::from_secs(1);
/// After asking serve to move the room, how long this mixer stays on air although the lease
/// names its successor: serve stops it over this connection once the successor has taken over.
const MOVE_GRACE: Duration = Duration::from_secs(20);

/// One connection from serve, a JSON line each way.
pub type Lines = Framed<TcpStream, LinesCodec>;

/// Serves one connection from serve until the placement ends (or, for a `Resume`, until the
/// connection is handed to the orphaned placement). `unauthenticated` is the connection's slot
/// among those not yet authenticated: released once the opening checks out.
pub async fn serve_connection(
    ctx: Arc<WorkerCtx>,
    stream: TcpStream,
    unauthenticated: tokio::sync::OwnedSemaphorePermit,
) {
    let peer = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    // Before the opening is authenticated, lines are kept short.
    let mut lines = Framed::new(stream, LinesCodec::new_with_max_length(wire::MAX_OPEN_LINE));
    let open = match tokio::time::timeout(OPEN_TIMEOUT, lines.next()).await {
        Ok(Some(Ok(line))) => line,
        Ok(Some(Err(e))) => {
            warn!(?peer, "unreadable opening line: {e}");
            return;
        }
        Ok(None) => return,
        Err(_) => {
            debug!(?peer, "no opening line within {OPEN_TIMEOUT:?}");
            return;
        }
    };
    let checked = match accept(&ctx, &open) {
        Ok(Opening::Place(placing)) => check_lease(&ctx, placing).await.map(Opening::Place),
        Ok(Opening::Resume { room_id, epoch }) => check_resume_lease(&ctx, &room_id, epoch)
            .await
            .map(|()| Opening::Resume { room_id, epoch }),
        Err(reason) => Err(reason),
    };
    let opening = match checked {
        Ok(opening) => opening,
        Err(reason) => {
            warn!(?peer, %reason, "room refused");
            refuse(&mut lines, reason).await;
            return;
        }
    };
    drop(unauthenticated);
    let lines = lines.map_codec(|_| LinesCodec::new_with_max_length(wire::MAX_LINE));
    match opening {
        Opening::Place(placing) => {
            let span =
                tracing::info_span!("placement", room = %placing.room_id, epoch = placing.epoch);
            place(ctx, lines, placing).instrument(span).await;
        }
        Opening::Resume { room_id, epoch } => hand_over(&ctx, lines, &room_id, epoch).await,
    }
}

/// Gives a `Resume`'s connection to the orphaned placement it names.
async fn hand_over(ctx: &WorkerCtx, mut lines: Lines, room_id: &str, epoch: u64) {
    let key = format!("{room_id}@{epoch}");
    let Some(takeover) = ctx.take_orphan(&key) else {
        let reason = if ctx.hosts(&key) {
            format!(
                "placement {key} {} (its serve is attached)",
                wire::NOT_ORPHANED
            )
        } else {
            format!("no placement {key} here (it ended)")
        };
        info!(room = %room_id, epoch, %reason, "takeover refused");
        refuse(&mut lines, reason).await;
        return;
    };
    if let Err(mpsc::error::SendError(mut lines)) = takeover.send(lines).await {
        refuse(&mut lines, format!("placement {key} ended just now")).await;
    }
}

async fn refuse(lines: &mut Lines, reason: String) {
    let refused = FromWorker::Refused {
        protocol: wire::PROTOCOL,
        reason,
    };
    let _ = send_line(lines, &refused).await;
}

/// serve placed the room here before connecting: the lease must say so (a replayed or forged
/// opening for a placement that is not current is refused).
async fn check_lease(ctx: &WorkerCtx, placing: Placing) -> Result<Placing, String> {
    let (room_id, epoch) = (&placing.room_id, placing.epoch);
    match ctx.store.lease(room_id).await {
        Ok(Some(lease)) if lease.worker_id == ctx.id && lease.epoch == epoch => Ok(placing),
        Ok(Some(lease)) => Err(format!(
            "placement {epoch} is not current: the room's lease names {}",
            lease.encode()
        )),
        Ok(None) => Err("the room holds no lease for this placement".into()),
        Err(e) => Err(format!("cannot check the room's lease: {e}")),
    }
}

/// A takeover is for the placement the lease names (or for no lease at all: it expired while
/// Redis was away, or Redis restarted empty; the orphan takes it back at its next renewal).
async fn check_resume_lease(ctx: &WorkerCtx, room_id: &str, epoch: u64) -> Result<(), String> {
    match ctx.store.lease(room_id).await {
        Ok(Some(lease)) if lease.worker_id != ctx.id || lease.epoch != epoch => Err(format!(
            "placement {epoch} is not current: the room's lease names {}",
            lease.encode()
        )),
        Ok(_) => Ok(()),
        // Redis away: the token vouches for serve, and the orphan's own renewals fence it.
        Err(e) => {
            debug!("cannot check the lease for a takeover ({e}); taking the token's word");
            Ok(())
        }
    }
}

async fn place(ctx: Arc<WorkerCtx>, mut lines: Lines, placing: Placing) {
    let Placing {
        room_id,
        epoch,
        video,
        inputs,
        resumable,
    } = placing;
    let key = format!("{room_id}@{epoch}");
    if !ctx.room_started(&key, &room_id, epoch) {
        refuse(&mut lines, "this placement is already open".into()).await;
        return;
    }
    // Admission by cost on this machine: serve's view of our free capacity may be a second old.
    if let Err(refusal) = ctx.pool.admit(&key, &video, inputs) {
        let reason = match refusal {
            Refusal::Draining => "this worker is draining".to_string(),
            other => other.to_string(),
        };
        ctx.room_ended(&key);
        refuse(&mut lines, reason).await;
        return;
    }
    let ended = run_placement(&ctx, lines, &room_id, epoch, &key, video, resumable).await;
    info!(reason = %ended, "placement ended");
    ctx.pool.release(&key);
    ctx.room_ended(&key);
    let lease = Lease {
        worker_id: ctx.id.clone(),
        epoch,
    };
    if let Err(e) = ctx.store.release_lease(&room_id, &lease).await {
        debug!("lease not released (it expires by itself): {e}");
    }
}

/// A write serve does not take within this long means it is gone.
async fn send_line(lines: &mut Lines, msg: &FromWorker) -> Result<(), String> {
    use super::link::{send_message, SendFailure};
    send_message(lines, msg)
        .await
        .map_err(|failure| match failure {
            SendFailure::Lost(e) => format!("connection to serve lost: {e}"),
            SendFailure::Stalled => "serve took no data (frozen or cut off?)".into(),
        })
}

/// A new placement's opening.
struct Placing {
    room_id: String,
    epoch: u64,
    video: VideoSpec,
    /// Participants at go-live.
    inputs: u32,
    /// The mixer may outlive its serve (see `ToWorker::Open`).
    resumable: bool,
}

/// What a connection's first line asks for.
enum Opening {
    Place(Placing),
    Resume { room_id: String, epoch: u64 },
}

/// Checks the opening line; returns what it asks for or why it is refused.
fn accept(ctx: &WorkerCtx, line: &str) -> Result<Opening, String> {
    let open = wire::decode::<ToWorker>(line).map_err(|e| format!("not an opening line: {e}"))?;
    let (protocol, token, room_id, epoch) = match &open {
        ToWorker::Open {
            protocol,
            token,
            room_id,
            epoch,
            ..
        }
        | ToWorker::Resume {
            protocol,
            token,
            room_id,
            epoch,
        } => (*protocol, token, room_id, *epoch),
        _ => return Err("the first line must open or resume a room".into()),
    };
    if protocol != wire::PROTOCOL {
        return Err(format!(
            "protocol mismatch: this worker ({}) speaks {}, serve speaks {protocol}; run the same costream version on both",
            ctx.version,
            wire::PROTOCOL
        ));
    }
    super::record::validate_id("room id", room_id)?;
    wire::verify_placement(ctx.secret.as_deref(), token, room_id, epoch, &ctx.id)?;
    match open {
        ToWorker::Open {
            room_id,
            epoch,
            video,
            inputs,
            resumable,
            ..
        } => {
            crate::config::validate_video(&video, "video").map_err(|e| e.to_string())?;
            if ctx.is_draining() {
                return Err("this worker is draining".into());
            }
            Ok(Opening::Place(Placing {
                room_id,
                epoch,
                video,
                inputs,
                resumable,
            }))
        }
        // A draining worker still hands its orphans back: their mixers are running here.
        ToWorker::Resume { room_id, epoch, .. } => Ok(Opening::Resume { room_id, epoch }),
        _ => unreachable!("matched above"),
    }
}

fn opened(ctx: &WorkerCtx, mixer: &MixerProcess, resumed: bool) -> FromWorker {
    FromWorker::Opened {
        protocol: wire::PROTOCOL,
        worker_id: ctx.id.clone(),
        version: ctx.version.clone(),
        pid: mixer.pid(),
        binary: mixer.binary().display().to_string(),
        warm: mixer.was_warm(),
        resumed,
    }
}

/// The placement's side of its connection to serve.
enum Attachment {
    Attached(Box<Lines>),
    /// serve was lost: no connection until a `Resume` brings one.
    Lost,
}

impl Attachment {
    fn is_attached(&self) -> bool {
        matches!(self, Attachment::Attached(_))
    }

    /// The next line from serve; never resolves while none is attached.
    async fn next_line(&mut self) -> Option<Result<String, tokio_util::codec::LinesCodecError>> {
        match self {
            Attachment::Attached(lines) => lines.next().await,
            Attachment::Lost => std::future::pending().await,
        }
    }

    /// Sends to serve if one is attached; `Err` says why the connection is lost.
    async fn send(&mut self, msg: &FromWorker) -> Result<(), String> {
        match self {
            Attachment::Attached(lines) => send_line(lines, msg).await,
            Attachment::Lost => Ok(()),
        }
    }
}

/// The mixer of one placement, and its serve while one is attached.
struct Running<'a> {
    ctx: &'a Arc<WorkerCtx>,
    key: &'a str,
    epoch: u64,
    video: VideoSpec,
    mixer: MixerProcess,
    memory: PlacementMemory,
    serve: Attachment,
    /// When serve was lost (the orphan grace counts from it).
    orphaned_since: Option<Instant>,
    /// Where a `Resume` hands over its connection.
    takeover_tx: mpsc::Sender<Lines>,
    /// The mixer may outlive its serve (see `ToWorker::Open`).
    resumable: bool,
    /// Set when the placement must end (serve lost and nobody will take it over).
    stop: Option<String>,
}

impl Running<'_> {
    /// serve is gone: the mixer goes on with slates, waiting for a serve to take it over.
    async fn serve_lost(&mut self, reason: &str) {
        if !self.serve.is_attached() {
            return;
        }
        self.serve = Attachment::Lost;
        if !self.resumable || !self.memory.started() {
            // No store behind that serve (or it never started the mixer): nobody will come
            // back for this mixer, so it stops as it always did.
            info!(%reason, "serve lost; its rooms do not outlive it: stopping the mixer");
            self.stop = Some(format!("{reason} (serve keeps no rooms across restarts)"));
            return;
        }
        warn!(%reason, grace_secs = self.ctx.orphan_grace.as_secs(),
            "serve lost: the mixer keeps pushing until a serve takes the room over");
        self.orphaned_since = Some(Instant::now());
        for command in self.memory.serve_lost() {
            self.mixer.send(command);
        }
        self.ctx.orphaned(self.key, self.takeover_tx.clone());
    }

    /// Sends to serve; a failure loses it.
    async fn tell_serve(&mut self, msg: &FromWorker) {
        if let Err(e) = self.serve.send(msg).await {
            self.serve_lost(&e).await;
        }
    }

    /// A serve's `Resume` brought `lines`.
    async fn taken_over(&mut self, lines: Lines) {
        info!("a serve took the room over: its mixer never stopped");
        self.serve = Attachment::Attached(Box::new(lines));
        self.orphaned_since = None;
        self.memory.taken_over(std::time::Instant::now());
        self.ctx.adopted(self.key);
        let opened = opened(self.ctx, &self.mixer, true);
        self.tell_serve(&opened).await;
    }

    /// A command of this placement from serve.
    async fn command(&mut self, command: Command) {
        let before = self.memory.participants();
        let handling = self.memory.command(command);
        if self.memory.participants() != before {
            let count = self.memory.participants();
            self.ctx.pool.resize(self.key, &self.video, count);
        }
        for command in handling.to_mixer {
            // serve's ping: passed on as the mixer's keepalive every second anyway.
            if !matches!(command, Command::Keepalive) {
                self.mixer.send(command);
            }
        }
        for event in handling.to_serve {
            let msg = FromWorker::Event {
                epoch: self.epoch,
                event,
            };
            self.tell_serve(&msg).await;
        }
    }
}

async fn run_placement(
    ctx: &Arc<WorkerCtx>,
    mut lines: Lines,
    room_id: &str,
    epoch: u64,
    key: &str,
    video: VideoSpec,
    resumable: bool,
) -> String {
    let child = match ctx.pool.take() {
        Ok(child) => child,
        Err(e) => {
            refuse(&mut lines, e.to_string()).await;
            return e.to_string();
        }
    };
    let (reports_tx, mut reports) = mpsc::channel::<MixerReport>(256);
    let mixer: MixerProcess = child.attach(room_id, epoch, reports_tx);
    ctx.mixer_attached(key, mixer.pid());
    if let Err(e) = send_line(&mut lines, &opened(ctx, &mixer, false)).await {
        return e;
    }
    let (takeover_tx, mut takeovers) = mpsc::channel::<Lines>(1);
    let mut run = Running {
        ctx,
        key,
        epoch,
        video,
        mixer,
        memory: PlacementMemory::default(),
        serve: Attachment::Attached(Box::new(lines)),
        orphaned_since: None,
        takeover_tx,
        resumable,
        stop: None,
    };
    let lease = Lease {
        worker_id: ctx.id.clone(),
        epoch,
    };
    let mut renew = tokio::time::interval(LEASE_RENEW);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_word = Instant::now();
    let mut last_renewed = Instant::now();
    let mut renewing: Option<tokio::task::JoinHandle<Result<LeaseCheck, String>>> = None;
    let mut move_requests = ctx.move_requests();
    let mut moving_since: Option<Instant> = None;
    let mut watching_moves = true;
    loop {
        if let Some(reason) = run.stop.take() {
            return reason;
        }
        let hold_deadline = run.memory.next_deadline();
        tokio::select! {
            changed = move_requests.changed(),
                if moving_since.is_none() && watching_moves && run.serve.is_attached() =>
            {
                if changed.is_err() {
                    watching_moves = false;
                    continue;
                }
                if !*move_requests.borrow_and_update() {
                    continue;
                }
                info!("asking serve to move the room (make before break)");
                moving_since = Some(Instant::now());
                run.tell_serve(&FromWorker::Moving { epoch }).await;
            }
            line = run.serve.next_line() => match line {
                Some(Ok(line)) => {
                    last_word = Instant::now();
                    match wire::decode::<ToWorker>(&line) {
                        Ok(ToWorker::Command { epoch: e, command }) if e == epoch => {
                            run.command(command).await;
                        }
                        // The room stopped or moved: stop pushing now.
                        Ok(ToWorker::Stop { epoch: e }) if e == epoch => {
                            return "serve stopped the placement".into();
                        }
                        Ok(ToWorker::Command { epoch: e, .. } | ToWorker::Stop { epoch: e }) => {
                            warn!(stale = e, "ignoring a message of another placement");
                        }
                        Ok(ToWorker::Open { .. } | ToWorker::Resume { .. }) => {
                            warn!("ignoring a second opening");
                        }
                        Err(e) => warn!("unreadable line from serve ({e}); ignored"),
                    }
                }
                Some(Err(e)) => run.serve_lost(&format!("connection from serve broken: {e}")).await,
                None => run.serve_lost("serve closed the connection").await,
            },
            Some(lines) = takeovers.recv(), if !run.serve.is_attached() => {
                last_word = Instant::now();
                run.taken_over(lines).await;
                // A move asked of the lost serve is asked again of this one.
                moving_since = None;
                if *move_requests.borrow() {
                    info!("asking the new serve to move the room (make before break)");
                    moving_since = Some(Instant::now());
                    run.tell_serve(&FromWorker::Moving { epoch }).await;
                }
            }
            report = reports.recv() => {
                let reason = match report {
                    Some(MixerReport::Event { event, .. }) => {
                        if matches!(event, Event::Hello { .. }) {
                            continue;
                        }
                        if let Some(event) = run.memory.event(event) {
                            run.tell_serve(&FromWorker::Event { epoch, event }).await;
                        }
                        continue;
                    }
                    Some(MixerReport::Exited { reason, .. }) => reason,
                    // A local process never asks to move.
                    Some(MixerReport::MoveRequested { .. }) => continue,
                    None => "the mixer's reports ended".into(),
                };
                run.tell_serve(&FromWorker::Exited { epoch, reason: reason.clone() }).await;
                return reason;
            }
            _ = async {
                match hold_deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            } => {
                for command in run.memory.expire(std::time::Instant::now()) {
                    run.mixer.send(command);
                }
            }
            _ = keepalive.tick() => {
                run.mixer.send(Command::Keepalive);
                if run.serve.is_attached() {
                    if last_word.elapsed() > SERVE_SILENCE {
                        run.serve_lost(&format!("no word from serve for {SERVE_SILENCE:?}")).await;
                    } else {
                        run.tell_serve(&FromWorker::Alive).await;
                    }
                }
                if let Some(since) = run.orphaned_since {
                    if since.elapsed() >= ctx.orphan_grace {
                        warn!("no serve took the room over: stopping the mixer");
                        return format!("orphaned: no serve took the room over within {:?}", ctx.orphan_grace);
                    }
                    // Nobody vouches for an orphan but its lease: stop before it can expire.
                    if last_renewed.elapsed() >= LEASE_TTL - LEASE_RENEW {
                        warn!("orphaned and the lease cannot be renewed: stopping the mixer (self-fenced)");
                        return "orphaned and the lease could not be renewed (self-fenced)".into();
                    }
                }
            }
            _ = renew.tick(), if renewing.is_none() => {
                let store = ctx.store.clone();
                let (room, lease) = (room_id.to_string(), lease.clone());
                renewing = Some(tokio::spawn(async move {
                    store.renew_lease(&room, &lease, LEASE_TTL).await.map_err(|e| e.to_string())
                }));
            }
            checked = async { renewing.as_mut().expect("guarded").await }, if renewing.is_some() => {
                renewing = None;
                match checked {
                    Ok(Ok(LeaseCheck::Renewed)) => last_renewed = Instant::now(),
                    Ok(Ok(LeaseCheck::Reclaimed)) => {
                        last_renewed = Instant::now();
                        info!("lease was gone (Redis restarted?); taken back");
                    }
                    // The successor serve started for the move holds it: serve stops us.
                    Ok(Ok(LeaseCheck::Lost { holder }))
                        if moving_since.is_some_and(|t| t.elapsed() < MOVE_GRACE)
                            && run.serve.is_attached() =>
                    {
                        debug!(%holder, "the room's successor holds the lease; on air until serve stops this mixer");
                    }
                    Ok(Ok(LeaseCheck::Lost { holder })) => {
                        warn!(%holder, "the room was placed elsewhere: stopping this mixer (fenced)");
                        let reason = format!("fenced: the room is now held by {holder}");
                        run.tell_serve(&FromWorker::Exited { epoch, reason: reason.clone() }).await;
                        return reason;
                    }
                    // Redis away: the room keeps streaming; serve's connection is our authority.
                    Ok(Err(e)) => debug!("lease not renewed (Redis away?): {e}"),
                    Err(e) => debug!("lease renewal task failed: {e}"),
                }
            }
        }
    }
    // Dropping the mixer on return kills the process at once: a fenced mixer must stop pushing.
}
