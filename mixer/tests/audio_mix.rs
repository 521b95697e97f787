//! The program's audio: loud voices together never clip (limiter), and the host's per-participant
//! gain and mute take effect live. Checked by decoding what reached the RTMP server.

mod common;

use std::time::{Duration, Instant};

use common::*;
use costream_mixer::control::{AudioMix, Codec, OutputSpec, OutputState, VideoSpec};
use costream_mixer::Mixer;
use costream_testkit::{grab_audio_s16, rms_dbfs, wait_for, Nginx};

fn peak(samples: &[i16]) -> f64 {
    let max = samples.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
    f64::from(max) / 32768.0
}

/// Waits (≤ 15 s) until one second of program audio satisfies `ok`; returns the last samples.
fn wait_for_audio(url: &str, what: &str, ok: impl Fn(&[i16]) -> bool) -> Vec<i16> {
    let mut last = Vec::new();
    let got = wait_for(Instant::now() + Duration::from_secs(15), || {
        last = grab_audio_s16(url, 1).ok()?;
        (last.len() > 24_000 && ok(&last)).then(|| last.clone())
    });
    got.unwrap_or_else(|| {
        panic!(
            "{what}: last second had rms {:.1} dBFS, peak {:.2}",
            rms_dbfs(&last),
            peak(&last)
        )
    })
}

#[test]
fn loud_voices_do_not_clip_and_gain_and_mute_apply_live() {
    let _guard = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let nginx = Nginx::start().expect("nginx");
    let url = nginx.rtmp_url("audio");
    let small = VideoSpec {
        width: 640,
        height: 360,
        fps: 30,
        bitrate_kbps: 800,
    };
    let (mixer, rx) = Mixer::start(
        small,
        vec![OutputSpec {
            output_id: "out0".into(),
            url: url.clone(),
        }],
    )
    .expect("mixer starts");
    let mut events = Events::new(rx);
    events.wait_output("out0", OutputState::Live, Duration::from_secs(15));

    // Two full-scale tones: their sum peaks at twice full scale.
    let mut senders = Vec::new();
    for (who, freq) in [("a", 440), ("b", 660)] {
        let port = mixer
            .add_input(input_of(&format!("{who}-mic"), who, Codec::Opus, 111))
            .unwrap();
        senders.push(loud_tone_sender(port, "sine", freq, 1.0));
    }
    let both = wait_for_audio(&url, "two loud tones", |s| rms_dbfs(s) > -12.0);
    eprintln!(
        "two full-scale tones: rms {:.1} dBFS, peak {:.2} of full scale",
        rms_dbfs(&both),
        peak(&both)
    );
    // Unlimited, the sum (peak 2.0) is clipped flat at full scale before the encoder and
    // decodes with peaks of ~0.95; the limiter maps 2.0 to 0.74.
    assert!(
        peak(&both) < 0.88,
        "peak {:.2}: the sum reached full scale",
        peak(&both)
    );

    let muted = AudioMix {
        gain: 1.0,
        muted: true,
    };
    mixer.set_audio("a", muted).unwrap();
    mixer.set_audio("b", muted).unwrap();
    let silent = wait_for_audio(&url, "both muted", |s| rms_dbfs(s) < -60.0);
    eprintln!("both muted: rms {:.1} dBFS", rms_dbfs(&silent));

    // b alone at a quarter: a sine of peak 0.25 has an RMS of -15 dBFS.
    let quarter = AudioMix {
        gain: 0.25,
        muted: false,
    };
    mixer.set_audio("b", quarter).unwrap();
    let quiet = wait_for_audio(&url, "b at gain 0.25", |s| {
        (-18.0..-12.0).contains(&rms_dbfs(s))
    });
    eprintln!("b at gain 0.25: rms {:.1} dBFS", rms_dbfs(&quiet));

    let loud = AudioMix {
        gain: 5.0,
        muted: false,
    };
    assert!(
        mixer.set_audio("b", loud).is_err(),
        "gain above 4 must be refused"
    );
    mixer.shutdown();
}
