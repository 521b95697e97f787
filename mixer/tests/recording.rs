//! Recording the program, one mixer pipeline in-process: a stopped recording is a complete,
//! cleanly decodable MP4 (H.264 + AAC) of about the time it ran; a recording whose writes fail
//! (`/dev/full`: "no space left") fails alone while the broadcast and a second recording go on.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{input_of, opus_sender, video_input, vp8_sender, Events, HEAVY, SMALL};
use costream_mixer::control::{Codec, Event, RecordingState};
use costream_mixer::Mixer;
use costream_testkit::{decode_errors, duration_s, probe_stream, wait_for};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("costream-rec-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The last state the mixer reported for `id`, with its reason.
fn recording_state(events: &mut Events, id: &str) -> Option<(RecordingState, Option<String>)> {
    events.pump();
    events.seen.iter().rev().find_map(|e| match e {
        Event::Recording {
            recording_id,
            state,
            reason,
            ..
        } if recording_id == id => Some((*state, reason.clone())),
        _ => None,
    })
}

fn wait_recording(
    events: &mut Events,
    id: &str,
    want: RecordingState,
    timeout: Duration,
) -> Option<String> {
    let got = wait_for(Instant::now() + timeout, || {
        recording_state(events, id).filter(|(s, _)| *s == want)
    });
    match got {
        Some((_, reason)) => reason,
        None => panic!("recording {id} never {want:?}; events: {:?}", events.seen),
    }
}

#[test]
fn a_stopped_recording_is_a_complete_mp4_and_a_failing_one_leaves_the_broadcast_alone() {
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let dir = temp_dir("basic");
    let (mixer, rx) = Mixer::start(SMALL, Vec::new()).expect("mixer starts");
    let mut events = Events::new(rx);
    let vport = mixer.add_input(video_input("cam", Codec::Vp8, 96)).unwrap();
    let aport = mixer
        .add_input(input_of("mic", "cam", Codec::Opus, 111))
        .unwrap();
    let _video = vp8_sender(0x00ff00, vport);
    let _audio = opus_sender(aport);

    // Disk full from the first write: the recording fails with the system's reason.
    mixer
        .start_recording("full", PathBuf::from("/dev/full"))
        .unwrap();
    let reason = wait_recording(
        &mut events,
        "full",
        RecordingState::Failed,
        Duration::from_secs(10),
    )
    .expect("a failed recording says why");
    eprintln!("recording to /dev/full: {reason}");
    assert!(reason.contains("/dev/full"), "{reason}");

    // The program goes on, and so does a recording to a good file.
    let frames = || match mixer.heartbeat() {
        Event::Heartbeat { frames_out, .. } => frames_out,
        _ => 0,
    };
    let before = frames();
    let file = dir.join("room/part-1.mp4");
    let started = Instant::now();
    mixer.start_recording("good", file.clone()).unwrap();
    wait_recording(
        &mut events,
        "good",
        RecordingState::Recording,
        Duration::from_secs(5),
    );
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        frames() > before + 60,
        "the encoder keeps going after a failed recording"
    );
    mixer.stop_recording("good").unwrap();
    let reason = wait_recording(
        &mut events,
        "good",
        RecordingState::Stopped,
        Duration::from_secs(10),
    );
    assert_eq!(reason, None, "the stop wrote the last fragment");
    let ran = started.elapsed().as_secs_f64();

    let info = probe_stream(file.to_str().unwrap()).expect("ffprobe reads the recording");
    assert_eq!(info.video_codec, "h264");
    assert_eq!(info.audio_codec, "aac");
    assert_eq!((info.width, info.height), (SMALL.width, SMALL.height));
    let errors = decode_errors(&file);
    assert!(errors.trim().is_empty(), "decodes with errors:\n{errors}");
    let duration = duration_s(&file);
    eprintln!("recorded {duration:.2} s of {ran:.2} s");
    assert!(
        duration > 2.5 && duration <= ran + 0.5,
        "duration {duration} of {ran} s"
    );
    drop(mixer);
    let _ = std::fs::remove_dir_all(&dir);
}
