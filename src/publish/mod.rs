//! `costream publish`: a real WebRTC (WHIP) publisher sending a solid color (VP8 or H.264, made
//! by GStreamer) and a tone (Opus). Tests and benchmarks use it as a participant; operators use
//! it to check a deployment end to end.

mod color;
mod reconnect;
mod replay;
mod tone;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use costream_ingest::{CodecName, IngestError, PublishMedia, WhipPublisher};
use costream_mixer::control::Codec;
use costream_mixer::synth::{Pattern, SynthVideo, SynthVideoSpec};
use tokio::sync::mpsc;

use reconnect::{is_permanent, Backoff};
use replay::ReplayLoop;

use crate::cli::PublishArgs;
pub use color::parse_color;
use tone::{ToneGenerator, FRAME_SAMPLES, SAMPLE_RATE};

/// How long a lost session's DELETE may take: it tells a removal (`403 removed`) from a server
/// that went away (refused or no answer), and must not hold up reconnecting for long.
const ASK_WHY_LOST: Duration = Duration::from_secs(1);

pub async fn run(args: PublishArgs) -> anyhow::Result<()> {
    // Installed first: a SIGTERM during set-up must still end in a clean WHIP DELETE.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let rgb = parse_color(&args.color).map_err(anyhow::Error::msg)?;
    let (ingest_codec, synth_codec) = match args.codec.to_ascii_lowercase().as_str() {
        "vp8" => (CodecName::Vp8, Codec::Vp8),
        "h264" => (CodecName::H264, Codec::H264),
        other => bail!("--codec {other:?}: use vp8 or h264"),
    };
    let pattern: Pattern = args.pattern.parse().map_err(anyhow::Error::msg)?;
    let whip_url = with_name(&args.whip, &args.name)?;
    let media = PublishMedia {
        video: (!args.no_video).then_some(ingest_codec),
        audio: true,
    };
    // The join-latency benchmark measures from this instant (the WHIP POST) to first sight.
    println!("whip_post_unix_ms {}", unix_ms());
    let publisher = WhipPublisher::connect(&whip_url, &args.token, media)
        .await
        .context("WHIP publish failed")?;
    // Keyframe requests of every session, one after the other, reach the one encoder.
    let (keyframe_tx, keyframe_requests) = mpsc::channel(1);
    let session = Session::default();
    session.install(publisher, &keyframe_tx);

    let mut tasks = tokio::task::JoinSet::new();
    if !args.no_video {
        let synth = Arc::new(
            SynthVideo::start(SynthVideoSpec {
                width: args.width,
                height: args.height,
                fps: args.fps,
                rgb,
                codec: synth_codec,
                pattern,
                scroll: args.scroll,
                timecode: args.timecode,
            })
            .context("cannot start the synthetic video source")?,
        );
        match args.replay_secs {
            Some(secs) => {
                let frames = (secs * f64::from(args.fps)).ceil().max(1.0) as usize;
                tasks.spawn(replay_video(
                    session.clone(),
                    synth,
                    frames,
                    keyframe_requests,
                ));
            }
            None => {
                tasks.spawn(send_video(session.clone(), synth, keyframe_requests));
            }
        }
    }
    tasks.spawn(send_tone(session.clone(), args.tone));
    tracing::info!("publishing to {}", args.whip);
    // Scripts (and the tests) wait for this stdout line.
    println!("publishing");

    let stop = async {
        match args.duration {
            Some(secs) => tokio::time::sleep(Duration::from_secs_f64(secs)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stop);
    loop {
        let current = session.current().context("no WHIP session")?;
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            Some(done) = tasks.join_next() => {
                done.context("sender task panicked")??;
                bail!("a media sender stopped unexpectedly");
            }
            lost = current.session_lost() => {
                if args.no_reconnect {
                    drop(current);
                    session.abandon();
                    bail!("the WHIP session was lost (connection {lost}); not reconnecting (--no-reconnect)");
                }
                // Removed by the host, or did the server go away? Only a removal is final.
                let asked = tokio::time::timeout(ASK_WHY_LOST, current.delete_session()).await;
                drop(current);
                session.abandon();
                if let Ok(Err(IngestError::Http { status: 403, body })) = &asked {
                    if body.contains("removed") {
                        bail!("the host removed this participant from the room; not reconnecting");
                    }
                }
                tracing::warn!(connection = %lost, "the WHIP session was lost; reconnecting");
                // Scripts (and the tests) follow these stdout lines.
                println!("reconnecting {} {lost}", unix_ms());
                let started = Instant::now();
                let publisher = tokio::select! {
                    publisher = reconnect(&whip_url, &args.token, media) => publisher?,
                    _ = &mut stop => break,
                    _ = tokio::signal::ctrl_c() => break,
                    _ = term.recv() => break,
                };
                session.install(publisher, &keyframe_tx);
                tracing::info!(
                    after_ms = started.elapsed().as_millis() as u64,
                    "reconnected to {}",
                    args.whip
                );
                println!("reconnected {}", unix_ms());
                println!("publishing");
            }
        }
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let Some(publisher) = session.take() else {
        return Ok(());
    };
    let publisher = Arc::try_unwrap(publisher)
        .map_err(|_| anyhow::anyhow!("publisher still in use at shutdown"))?;
    publisher.leave().await.context("WHIP DELETE failed")?;
    tracing::info!("left");
    Ok(())
}

/// POSTs the WHIP offer again (a new peer connection, the same token) until the server takes
/// it, with [`Backoff`] between attempts; gives up at once when the server says the token or
/// the room is gone.
async fn reconnect(
    whip_url: &str,
    token: &str,
    media: PublishMedia,
) -> anyhow::Result<WhipPublisher> {
    let mut backoff = Backoff::default();
    for attempt in 1u32.. {
        match WhipPublisher::connect(whip_url, token, media).await {
            Ok(publisher) => return Ok(publisher),
            Err(e) if is_permanent(&e) => {
                return Err(e).context("cannot reconnect: the server refused this token or room")
            }
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::info!(attempt, "reconnect failed ({e}); next try in {delay:?}");
                tokio::time::sleep(delay).await;
            }
        }
    }
    unreachable!("attempts are unbounded")
}

/// The WHIP session the media senders write to. Replaced on every reconnect and empty in
/// between: frames made meanwhile are dropped while the sources keep running, so the same
/// encoder and tone carry on into the new session.
#[derive(Clone, Default)]
struct Session(Arc<RwLock<Option<Arc<WhipPublisher>>>>);

impl Session {
    fn current(&self) -> Option<Arc<WhipPublisher>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn take(&self) -> Option<Arc<WhipPublisher>> {
        self.0.write().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Makes `publisher` the session; its keyframe requests go to `keyframes`, and one is
    /// asked for at once (the new server session needs one to show the video).
    fn install(&self, mut publisher: WhipPublisher, keyframes: &mpsc::Sender<()>) {
        let mut requests = publisher.keyframe_requests();
        let forward = keyframes.clone();
        // Ends when the session's RTCP reader does (its peer connection closed).
        tokio::spawn(async move {
            while requests.recv().await.is_some() {
                let _ = forward.try_send(());
            }
        });
        let _ = keyframes.try_send(());
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(publisher));
    }

    /// Drops a lost session: a DELETE in the background (a server that is back, or was only
    /// unreachable, frees the participant at once instead of after its ICE timeout); the
    /// peer connection closes either way.
    fn abandon(&self) {
        let Some(publisher) = self.take() else { return };
        tokio::spawn(async move {
            // A sender may hold it for the length of one write.
            let mut publisher = publisher;
            for _ in 0..20 {
                match Arc::try_unwrap(publisher) {
                    Ok(owned) => {
                        if let Err(e) = owned.leave().await {
                            tracing::debug!("DELETE of the lost session: {e}");
                        }
                        return;
                    }
                    Err(shared) => publisher = shared,
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
    }
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn with_name(whip: &str, name: &str) -> anyhow::Result<String> {
    let mut url = url::Url::parse(whip).with_context(|| format!("--whip {whip:?} is not a URL"))?;
    url.query_pairs_mut().append_pair("name", name);
    Ok(url.to_string())
}

/// Encoded frames come from a GStreamer appsink on a blocking thread; a small channel hands them
/// to the async writer. Keyframe requests (PLI) from the server go back to the encoder.
async fn send_video(
    session: Session,
    synth: Arc<SynthVideo>,
    mut keyframe_requests: mpsc::Receiver<()>,
) -> anyhow::Result<()> {
    let (frames_tx, mut frames) = mpsc::channel(8);
    let reader = synth.clone();
    std::thread::Builder::new()
        .name("synth-video".into())
        .spawn(move || {
            while let Some(frame) = reader.next_frame(Duration::from_secs(5)) {
                if frames_tx.blocking_send(frame).is_err() {
                    break;
                }
            }
        })?;
    loop {
        tokio::select! {
            frame = frames.recv() => {
                let Some(frame) = frame else { bail!("the synthetic video source stopped") };
                if let Some(publisher) = session.current() {
                    log_lost_write(publisher.write_video(&frame.data, frame.duration).await);
                }
            }
            Some(()) = keyframe_requests.recv() => synth.force_keyframe(),
        }
    }
}

/// Records `count` frames from the encoder, stops it, then sends the recording in a loop at
/// its own frame rate.
async fn replay_video(
    session: Session,
    synth: Arc<SynthVideo>,
    count: usize,
    mut keyframe_requests: mpsc::Receiver<()>,
) -> anyhow::Result<()> {
    let frames = tokio::task::spawn_blocking(move || {
        // The recording must start with a keyframe: ask for one now.
        synth.force_keyframe();
        let mut frames = Vec::with_capacity(count);
        while frames.len() < count {
            match synth.next_frame(Duration::from_secs(5)) {
                Some(frame) => frames.push(frame),
                None => break,
            }
        }
        // `synth` drops here, which stops the encoder.
        frames
    })
    .await?;
    let mut replay = ReplayLoop::new(frames).context("the synthetic encoder gave no keyframe")?;
    tracing::info!(frames = replay.len(), "replaying the recorded video");
    let mut ticker = tokio::time::interval(replay.frame_duration());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let frame = replay.next_frame();
                if let Some(publisher) = session.current() {
                    log_lost_write(publisher.write_video(&frame.data, frame.duration).await);
                }
            }
            Some(()) = keyframe_requests.recv() => replay.restart(),
        }
    }
}

async fn send_tone(session: Session, frequency: f32) -> anyhow::Result<()> {
    let mut encoder =
        opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Audio)?;
    let mut tone = ToneGenerator::new(frequency, 0.3);
    let frame_duration = Duration::from_millis(20);
    let mut ticker = tokio::time::interval(frame_duration);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut packet = vec![0u8; 4000];
    loop {
        ticker.tick().await;
        let pcm = tone.next_frame();
        debug_assert_eq!(pcm.len(), FRAME_SAMPLES);
        let len = encoder.encode(&pcm, &mut packet)?;
        if let Some(publisher) = session.current() {
            log_lost_write(publisher.write_audio(&packet[..len], frame_duration).await);
        }
    }
}

/// A write fails only on a session that is going away; the main loop notices the loss (and
/// reconnects), so the sender carries on with the next frame.
fn log_lost_write(result: Result<(), costream_ingest::IngestError>) {
    if let Err(e) = result {
        tracing::trace!("write to a lost session: {e}");
    }
}
