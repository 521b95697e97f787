//! SRT outputs against a real SRT listener (`ffmpeg -i srt://…?mode=listener`), one mixer
//! pipeline in-process: the listener receives decodable H.264 + AAC in MPEG-TS, encrypted with
//! the URL's passphrase; it stops and starts again and the output comes back on its own; an
//! output with no listener (or the wrong passphrase) fails fast with a reason that holds no
//! secret; one still in its handshake is removed without waiting for it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{input_of, opus_sender, video_input, vp8_sender, Events, HEAVY, SMALL};
use costream_mixer::control::{Codec, OutputSpec, OutputState};
use costream_mixer::Mixer;
use costream_testkit::{decode_errors, free_port, probe_stream, wait_until};

const PASSPHRASE: &str = "s3cret-pass-phrase";
const STREAM_ID: &str = "room-7f3a-secret-id";

/// An `ffmpeg` SRT listener copying what it receives into an MPEG-TS file.
struct Listener {
    child: Child,
    file: PathBuf,
}

impl Listener {
    fn start(port: u16, passphrase: &str, file: &Path) -> Listener {
        let url = format!("srt://127.0.0.1:{port}?mode=listener&passphrase={passphrase}");
        let child = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i"])
            .arg(&url)
            .args(["-c", "copy", "-f", "mpegts"])
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ffmpeg runs");
        Listener {
            child,
            file: file.to_path_buf(),
        }
    }

    fn size(&self) -> u64 {
        std::fs::metadata(&self.file).map(|m| m.len()).unwrap_or(0)
    }

    /// Stops the listener as an operator would (SIGINT: ffmpeg closes the SRT socket and the
    /// file) and returns the file.
    fn stop(mut self) -> PathBuf {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return self.file.clone();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.file.clone()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assert_decodable(file: &Path) {
    let info = probe_stream(file.to_str().unwrap()).expect("ffprobe reads the recording");
    assert_eq!(info.video_codec, "h264", "{file:?}");
    assert_eq!(info.audio_codec, "aac", "{file:?}");
    assert_eq!((info.width, info.height), (SMALL.width, SMALL.height));
    let errors = decode_errors(file);
    assert!(
        errors.trim().is_empty(),
        "{file:?} decodes with errors:\n{errors}"
    );
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("costream-srt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn srt_url(port: u16, passphrase: &str) -> String {
    format!("srt://127.0.0.1:{port}?streamid={STREAM_ID}&passphrase={passphrase}&latency=200")
}

fn assert_no_secret(reason: &str) {
    for secret in [PASSPHRASE, STREAM_ID, "wrong-pass-phrase"] {
        assert!(!reason.contains(secret), "reason leaks {secret}: {reason}");
    }
}

#[test]
fn srt_listener_gets_decodable_h264_aac_and_the_output_survives_a_listener_restart() {
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let dir = temp_dir("restart");
    let port = free_port().unwrap();
    let first = Listener::start(port, PASSPHRASE, &dir.join("first.ts"));
    let (mixer, rx) = Mixer::start(
        SMALL,
        vec![OutputSpec::new("srt", srt_url(port, PASSPHRASE))],
    )
    .expect("mixer starts");
    let mut events = Events::new(rx);
    let vport = mixer.add_input(video_input("cam", Codec::Vp8, 96)).unwrap();
    let aport = mixer
        .add_input(input_of("mic", "cam", Codec::Opus, 111))
        .unwrap();
    let _video = vp8_sender(0xff0000, vport);
    let _audio = opus_sender(aport);

    events.wait_output("srt", OutputState::Live, Duration::from_secs(15));
    assert!(
        wait_until(Instant::now() + Duration::from_secs(10), || first.size()
            > 200_000),
        "the listener receives the stream"
    );
    let first = first.stop();
    let reason = events
        .wait_output("srt", OutputState::Reconnecting, Duration::from_secs(10))
        .unwrap_or_default();
    assert_no_secret(&reason);

    // The listener comes back on the same port: the output follows without being told.
    std::thread::sleep(Duration::from_secs(2));
    let second = Listener::start(port, PASSPHRASE, &dir.join("second.ts"));
    let back_at = Instant::now();
    events.wait_output("srt", OutputState::Live, Duration::from_secs(15));
    let reconnect = back_at.elapsed();
    eprintln!("SRT output live again {reconnect:?} after the listener restarted");
    assert!(reconnect < Duration::from_secs(6), "{reconnect:?}");
    assert!(
        wait_until(Instant::now() + Duration::from_secs(10), || second.size()
            > 200_000),
        "the restarted listener receives the stream"
    );
    let second = second.stop();

    assert_decodable(&first);
    assert_decodable(&second);
    drop(mixer);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn srt_output_without_a_listener_or_with_a_wrong_passphrase_fails_fast_without_secrets() {
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let dir = temp_dir("fail");
    let nobody = free_port().unwrap();
    let wrong_port = free_port().unwrap();
    let _wrong = Listener::start(wrong_port, "wrong-pass-phrase", &dir.join("wrong.ts"));
    let started = Instant::now();
    let (_mixer, rx) = Mixer::start(
        SMALL,
        vec![
            OutputSpec::new("nobody", srt_url(nobody, PASSPHRASE)),
            OutputSpec::new("wrong", srt_url(wrong_port, PASSPHRASE)),
        ],
    )
    .expect("mixer starts");
    let mut events = Events::new(rx);
    for id in ["nobody", "wrong"] {
        let reason = events
            .wait_output(id, OutputState::Failed, Duration::from_secs(10))
            .expect("a failed output says why");
        eprintln!("{id}: failed after {:?}: {reason}", started.elapsed());
        assert!(!reason.is_empty());
        assert_no_secret(&reason);
    }
    // Failed for good: no endless retry.
    std::thread::sleep(Duration::from_secs(2));
    for id in ["nobody", "wrong"] {
        assert_eq!(
            events.output_state(id).map(|(s, _)| s),
            Some(OutputState::Failed)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_srt_output_still_connecting_is_removed_at_once() {
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let (mixer, rx) = Mixer::start(SMALL, Vec::new()).expect("mixer starts");
    let mut events = Events::new(rx);
    // srtsink blocks its streaming thread in the handshake for up to 3 s: removing the output
    // meanwhile must not wait for that (it holds the mixer's lock).
    let nobody = free_port().unwrap();
    mixer
        .add_output(OutputSpec::new("nobody", srt_url(nobody, PASSPHRASE)))
        .expect("output added");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        events.output_state("nobody").map(|(s, _)| s),
        Some(OutputState::Connecting)
    );
    let started = Instant::now();
    mixer.remove_output("nobody").expect("output removed");
    let took = started.elapsed();
    eprintln!("removing a connecting SRT output took {took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    // A bad URL never gets a branch.
    assert!(mixer
        .add_output(OutputSpec::new("bad", "srt://127.0.0.1:9?passphrase=short"))
        .is_err());
}
