//! One room placement on a worker: the connection from serve, the mixer process it runs, and
//! the fencing that stops that mixer when the room has moved on.
//!
//! The mixer stops at once when: serve closes the connection (the room stopped, or gave up on
//! this worker), serve goes silent for [`SERVE_SILENCE`] (a partition: serve has re-placed the
//! room by then), or the room's lease in Redis names another placement. It keeps running while
//! only Redis is away: nothing is torn down because the coordinator is.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use costream_mixer::control::{Command, Event, VideoSpec};
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{Framed, LinesCodec};
use tracing::{debug, info, warn, Instrument};

use super::record::Lease;
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

type Lines = Framed<TcpStream, LinesCodec>;

/// Serves one connection from serve until the placement ends. `unauthenticated` is the
/// connection's slot among those not yet authenticated: released once the opening checks out.
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
        Ok(opening) => check_lease(&ctx, opening).await,
        Err(reason) => Err(reason),
    };
    let (room_id, epoch, video, inputs) = match checked {
        Ok(opening) => opening,
        Err(reason) => {
            warn!(?peer, %reason, "room refused");
            refuse(&mut lines, reason).await;
            return;
        }
    };
    drop(unauthenticated);
    let mut lines = lines.map_codec(|_| LinesCodec::new_with_max_length(wire::MAX_LINE));
    let span = tracing::info_span!("placement", room = %room_id, epoch);
    place(ctx, &mut lines, room_id, epoch, video, inputs)
        .instrument(span)
        .await;
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
async fn check_lease(ctx: &WorkerCtx, opening: Opening) -> Result<Opening, String> {
    let (room_id, epoch) = (&opening.0, opening.1);
    match ctx.store.lease(room_id).await {
        Ok(Some(lease)) if lease.worker_id == ctx.id && lease.epoch == epoch => Ok(opening),
        Ok(Some(lease)) => Err(format!(
            "placement {epoch} is not current: the room's lease names {}",
            lease.encode()
        )),
        Ok(None) => Err("the room holds no lease for this placement".into()),
        Err(e) => Err(format!("cannot check the room's lease: {e}")),
    }
}

async fn place(
    ctx: Arc<WorkerCtx>,
    lines: &mut Lines,
    room_id: String,
    epoch: u64,
    video: VideoSpec,
    inputs: u32,
) {
    let key = format!("{room_id}@{epoch}");
    if !ctx.room_started(&key, &room_id, epoch) {
        refuse(lines, "this placement is already open".into()).await;
        return;
    }
    // Admission by cost on this machine: serve's view of our free capacity may be a second old.
    if let Err(refusal) = ctx.pool.admit(&key, &video, inputs) {
        let reason = match refusal {
            Refusal::Draining => "this worker is draining".to_string(),
            other => other.to_string(),
        };
        ctx.room_ended(&key);
        refuse(lines, reason).await;
        return;
    }
    let ended = run_placement(&ctx, lines, &room_id, epoch, &key, video).await;
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

/// (room, epoch, video, participants) of an opening.
type Opening = (String, u64, VideoSpec, u32);

/// Checks the opening; returns (room, epoch, video, inputs) or why it is refused.
fn accept(ctx: &WorkerCtx, line: &str) -> Result<Opening, String> {
    let open = wire::decode::<ToWorker>(line).map_err(|e| format!("not an opening line: {e}"))?;
    let ToWorker::Open {
        protocol,
        token,
        room_id,
        epoch,
        video,
        inputs,
    } = open
    else {
        return Err("the first line must open a room".into());
    };
    if protocol != wire::PROTOCOL {
        return Err(format!(
            "protocol mismatch: this worker ({}) speaks {}, serve speaks {protocol}; run the same costream version on both",
            ctx.version,
            wire::PROTOCOL
        ));
    }
    super::record::validate_id("room id", &room_id)?;
    wire::verify_placement(ctx.secret.as_deref(), &token, &room_id, epoch, &ctx.id)?;
    crate::config::validate_video(&video, "video").map_err(|e| e.to_string())?;
    if ctx.is_draining() {
        return Err("this worker is draining".into());
    }
    Ok((room_id, epoch, video, inputs))
}

async fn run_placement(
    ctx: &Arc<WorkerCtx>,
    lines: &mut Lines,
    room_id: &str,
    epoch: u64,
    key: &str,
    video: VideoSpec,
) -> String {
    let child = match ctx.pool.take() {
        Ok(child) => child,
        Err(e) => {
            refuse(lines, e.to_string()).await;
            return e.to_string();
        }
    };
    let (reports_tx, mut reports) = mpsc::channel::<MixerReport>(256);
    let mixer: MixerProcess = child.attach(room_id, epoch, reports_tx);
    ctx.mixer_attached(key, mixer.pid());
    let opened = FromWorker::Opened {
        protocol: wire::PROTOCOL,
        worker_id: ctx.id.clone(),
        version: ctx.version.clone(),
        pid: mixer.pid(),
        binary: mixer.binary().display().to_string(),
        warm: mixer.was_warm(),
    };
    if let Err(e) = send_line(lines, &opened).await {
        return e;
    }
    let lease = Lease {
        worker_id: ctx.id.clone(),
        epoch,
    };
    let mut participants = Participants::default();
    let mut renew = tokio::time::interval(LEASE_RENEW);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_word = tokio::time::Instant::now();
    let mut renewing: Option<tokio::task::JoinHandle<Result<LeaseCheck, String>>> = None;
    let mut move_requests = ctx.move_requests();
    let mut moving_since: Option<tokio::time::Instant> = None;
    let mut watching_moves = true;
    loop {
        tokio::select! {
            changed = move_requests.changed(), if moving_since.is_none() && watching_moves => {
                if changed.is_err() {
                    watching_moves = false;
                    continue;
                }
                if !*move_requests.borrow_and_update() {
                    continue;
                }
                info!("asking serve to move the room (make before break)");
                moving_since = Some(tokio::time::Instant::now());
                if let Err(e) = send_line(lines, &FromWorker::Moving { epoch }).await {
                    return e;
                }
            }
            line = lines.next() => match line {
                Some(Ok(line)) => {
                    last_word = tokio::time::Instant::now();
                    match wire::decode::<ToWorker>(&line) {
                        Ok(ToWorker::Command { epoch: e, command }) if e == epoch => {
                            if participants.apply(&command) {
                                ctx.pool.resize(key, &video, participants.count());
                            }
                            if matches!(command, Command::Keepalive) {
                                // serve's ping: passed on as the mixer's keepalive below.
                                continue;
                            }
                            mixer.send(command);
                        }
                        Ok(ToWorker::Command { epoch: e, .. }) => {
                            warn!(stale = e, "ignoring a command of another placement");
                        }
                        Ok(ToWorker::Open { .. }) => warn!("ignoring a second opening"),
                        Err(e) => warn!("unreadable line from serve ({e}); ignored"),
                    }
                }
                Some(Err(e)) => return format!("connection from serve broken: {e}"),
                // serve stopped the room or let go of this placement: stop pushing now.
                None => return "serve closed the placement".into(),
            },
            report = reports.recv() => {
                let reason = match report {
                    Some(MixerReport::Event { event, .. }) => {
                        if !matches!(event, Event::Hello { .. }) {
                            if let Err(e) = send_line(lines, &FromWorker::Event { epoch, event }).await {
                                return e;
                            }
                        }
                        continue;
                    }
                    Some(MixerReport::Exited { reason, .. }) => reason,
                    // A local process never asks to move.
                    Some(MixerReport::MoveRequested { .. }) => continue,
                    None => "the mixer's reports ended".into(),
                };
                let _ = send_line(lines, &FromWorker::Exited { epoch, reason: reason.clone() }).await;
                return reason;
            }
            _ = keepalive.tick() => {
                if last_word.elapsed() > SERVE_SILENCE {
                    warn!("no word from serve for {SERVE_SILENCE:?}: stopping the mixer (the room is being moved)");
                    return "serve went silent".into();
                }
                mixer.send(Command::Keepalive);
                if let Err(e) = send_line(lines, &FromWorker::Alive).await {
                    return e;
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
                    Ok(Ok(LeaseCheck::Renewed)) => {}
                    Ok(Ok(LeaseCheck::Reclaimed)) => info!("lease was gone (Redis restarted?); taken back"),
                    // The successor serve started for the move holds it: serve stops us.
                    Ok(Ok(LeaseCheck::Lost { holder }))
                        if moving_since.is_some_and(|t| t.elapsed() < MOVE_GRACE) =>
                    {
                        debug!(%holder, "the room's successor holds the lease; on air until serve stops this mixer");
                    }
                    Ok(Ok(LeaseCheck::Lost { holder })) => {
                        warn!(%holder, "the room was placed elsewhere: stopping this mixer (fenced)");
                        let reason = format!("fenced: the room is now held by {holder}");
                        let _ = send_line(lines, &FromWorker::Exited { epoch, reason: reason.clone() }).await;
                        return reason;
                    }
                    // Redis away: the room keeps streaming; serve's connection is our authority.
                    Ok(Err(e)) => debug!("lease not renewed (Redis away?): {e}"),
                    Err(e) => debug!("lease renewal task failed: {e}"),
                }
            }
        }
    }
    // Dropping `mixer` on return kills the process at once: a fenced mixer must stop pushing.
}

/// Participants mixed, counted from the commands that pass (the worker's own admission charge).
#[derive(Default)]
struct Participants {
    inputs: HashMap<String, String>,
}

impl Participants {
    /// Applies a command; true when the count of participants changed.
    fn apply(&mut self, command: &Command) -> bool {
        let before = self.count();
        match command {
            Command::AddInput {
                input_id,
                participant_id,
                ..
            } => {
                self.inputs.insert(input_id.clone(), participant_id.clone());
            }
            Command::RemoveInput { input_id } => {
                self.inputs.remove(input_id);
            }
            _ => return false,
        }
        self.count() != before
    }

    fn count(&self) -> u32 {
        let distinct: std::collections::HashSet<&String> = self.inputs.values().collect();
        u32::try_from(distinct.len()).unwrap_or(u32::MAX)
    }
}
