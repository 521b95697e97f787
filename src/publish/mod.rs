//! `costream publish`: a real WebRTC (WHIP) publisher sending a solid color (VP8 or H.264, made
//! by GStreamer) and a tone (Opus). Tests and benchmarks use it as a participant; operators use
//! it to check a deployment end to end.

mod color;
mod replay;
mod tone;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use costream_ingest::{CodecName, PublishMedia, WhipPublisher};
use costream_mixer::control::Codec;
use costream_mixer::synth::{Pattern, SynthVideo, SynthVideoSpec};
use tokio::sync::mpsc;

use replay::ReplayLoop;

use crate::cli::PublishArgs;
pub use color::parse_color;
use tone::{ToneGenerator, FRAME_SAMPLES, SAMPLE_RATE};

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
    let mut publisher = WhipPublisher::connect(&whip_url, &args.token, media)
        .await
        .context("WHIP publish failed")?;
    let keyframe_requests = publisher.keyframe_requests();
    let publisher = Arc::new(publisher);

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
                    publisher.clone(),
                    synth,
                    frames,
                    keyframe_requests,
                ));
            }
            None => {
                tasks.spawn(send_video(publisher.clone(), synth, keyframe_requests));
            }
        }
    }
    tasks.spawn(send_tone(publisher.clone(), args.tone));
    tracing::info!("publishing to {}", args.whip);
    // Scripts (and the tests) wait for this stdout line.
    println!("publishing");

    let stop = async {
        match args.duration {
            Some(secs) => tokio::time::sleep(Duration::from_secs_f64(secs)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = stop => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        Some(done) = tasks.join_next() => {
            done.context("sender task panicked")??;
            bail!("a media sender stopped unexpectedly");
        }
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let publisher = Arc::try_unwrap(publisher)
        .map_err(|_| anyhow::anyhow!("publisher still in use at shutdown"))?;
    publisher.leave().await.context("WHIP DELETE failed")?;
    tracing::info!("left");
    Ok(())
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
    publisher: Arc<WhipPublisher>,
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
                publisher.write_video(&frame.data, frame.duration).await?;
            }
            Some(()) = keyframe_requests.recv() => synth.force_keyframe(),
        }
    }
}

/// Records `count` frames from the encoder, stops it, then sends the recording in a loop at
/// its own frame rate.
async fn replay_video(
    publisher: Arc<WhipPublisher>,
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
                publisher.write_video(&frame.data, frame.duration).await?;
            }
            Some(()) = keyframe_requests.recv() => replay.restart(),
        }
    }
}

async fn send_tone(publisher: Arc<WhipPublisher>, frequency: f32) -> anyhow::Result<()> {
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
        publisher
            .write_audio(&packet[..len], frame_duration)
            .await?;
    }
}
