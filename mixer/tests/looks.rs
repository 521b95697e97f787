//! The room's look on the real pipeline, checked in pulled-back frames: the "starting soon"
//! slate while nobody publishes, a slate (not black) for an audio-only participant, the
//! background colour in an empty grid cell, name labels and a logo in the top-right corner; and
//! when everyone leaves, the slate comes back with no gap in the output's timestamps. Prints the
//! process CPU with and without labels + logo (text is rendered once, so it should barely move).

mod common;

use std::time::{Duration, Instant};

use common::*;
use costream_mixer::control::{Codec, Look, OutputSpec, OutputState, VideoSpec};
use costream_mixer::{InputSpec, Mixer};
use costream_testkit::{close_to, video_packets, wait_for, FrameReader, Nginx};
use gstreamer as gst;
use gstreamer::prelude::*;

/// `looks::SLATE_ARGB` as RGB.
const SLATE: [u8; 3] = [0x1E, 0x2A, 0x38];
const OLIVE: [u8; 3] = [0x80, 0x80, 0x00];
const MAGENTA: [u8; 3] = [255, 0, 255];
/// Tighter than the layouts' tolerance: slate and black differ by only 56 in blue.
const SLATE_TOL: u8 = 12;

/// A check on one pulled-back 320x180 frame (regions in 1280x720 canvas coordinates).
enum Want {
    /// The region's mean colour (middle half, see `tile_color`).
    Color((u32, u32, u32, u32), [u8; 3], u8),
    /// Text: at least `n` light pixels (every channel > 120) in the region.
    Text((u32, u32, u32, u32), usize),
    /// No text: fewer than 3 light pixels (every channel > 120) in the region.
    NoText((u32, u32, u32, u32)),
}

fn bright_pixels(frame: &[u8], (x, y, w, h): (u32, u32, u32, u32)) -> usize {
    let (x, y, w, h) = (x / 4, y / 4, w / 4, h / 4);
    let mut n = 0;
    for row in y..y + h {
        for col in x..x + w {
            let i = ((row * 320 + col) * 3) as usize;
            if frame
                .get(i..i + 3)
                .is_some_and(|p| p.iter().all(|c| *c > 120))
            {
                n += 1;
            }
        }
    }
    n
}

fn holds(frame: &[u8], want: &Want) -> (bool, String) {
    match want {
        Want::Color((x, y, w, h), rgb, tol) => {
            let got = tile_color(frame, *x, *y, *w, *h);
            (close_to(got, *rgb, *tol), format!("{got:?}"))
        }
        Want::Text(r, n) => {
            let got = bright_pixels(frame, *r);
            (got >= *n, format!("{got} bright"))
        }
        Want::NoText(r) => {
            let got = bright_pixels(frame, *r);
            (got < 3, format!("{got} bright"))
        }
    }
}

fn wait_for_picture(reader: &FrameReader, what: &str, wants: &[Want]) {
    let mut last = Vec::new();
    let mut last_frame = Vec::new();
    let seen = wait_for(Instant::now() + Duration::from_secs(8), || {
        let f = reader.frame_after(Instant::now() - Duration::from_millis(100))?;
        let results: Vec<(bool, String)> = wants.iter().map(|w| holds(&f, w)).collect();
        let ok = results.iter().all(|(ok, _)| *ok);
        last = results;
        last_frame = f;
        ok.then_some(())
    });
    if seen.is_none() {
        // Keep the evidence: a PPM anyone can open.
        let path = std::env::temp_dir().join("costream-looks-failed.ppm");
        let mut ppm = b"P6\n320 180\n255\n".to_vec();
        ppm.extend_from_slice(&last_frame);
        let _ = std::fs::write(&path, ppm);
        panic!("{what}: last frame {last:?} (saved to {})", path.display());
    }
}

fn named(id: &str, participant: &str, name: &str, codec: Codec, pt: u8) -> InputSpec {
    InputSpec {
        display_name: name.into(),
        ..input_of(id, participant, codec, pt)
    }
}

/// A solid `argb` PNG made by GStreamer's pngenc, as a data URI.
fn png_data_uri(argb: u32, size: u32) -> String {
    gst::init().unwrap();
    let p = gst::parse::launch(&format!(
        "videotestsrc num-buffers=1 pattern=solid-color foreground-color={argb:#010x} ! \
         video/x-raw,format=RGBA,width={size},height={size} ! pngenc ! \
         appsink name=sink sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = p
        .by_name("sink")
        .unwrap()
        .downcast::<gstreamer_app::AppSink>()
        .unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let sample = sink.pull_sample().expect("a PNG");
    let bytes = sample.buffer().unwrap().map_readable().unwrap().to_vec();
    p.set_state(gst::State::Null).unwrap();
    format!("data:image/png;base64,{}", base64(&bytes))
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// This process's CPU time (user + system), from /proc/self/stat, in clock ticks (1/100 s).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the ")" of the command name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// CPU use of this process over `secs`, in percent of one core.
fn cpu_percent(secs: u64) -> f64 {
    let (t0, c0) = (Instant::now(), cpu_ticks());
    std::thread::sleep(Duration::from_secs(secs));
    (cpu_ticks() - c0) as f64 / t0.elapsed().as_secs_f64()
}

#[test]
fn slates_labels_background_and_logo_show_and_the_idle_slate_keeps_the_output_going() {
    let _guard = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let nginx = Nginx::start().expect("nginx");
    let url = nginx.rtmp_url("looks");
    let (mixer, rx) = Mixer::start(
        VideoSpec::default(),
        vec![OutputSpec::new("out0", url.clone())],
    )
    .expect("mixer starts");
    let mut events = Events::new(rx);
    events.wait_output("out0", OutputState::Live, Duration::from_secs(15));
    let reader = FrameReader::start(&url, 320, 180, 10).expect("ffmpeg reader");

    // Nobody here: the slate fills the canvas, with its text in the middle, not black.
    wait_for_picture(
        &reader,
        "idle slate",
        &[
            Want::Color((0, 0, 1280, 200), SLATE, SLATE_TOL),
            Want::Color((0, 520, 1280, 200), SLATE, SLATE_TOL),
            Want::Text((0, 260, 1280, 200), 20),
        ],
    );
    let idle_cpu = cpu_percent(4);

    // Two cameras and an audio-only guest: a 2x2 grid whose third cell is Ann's slate.
    let mut senders = Vec::new();
    for (who, rgb) in [("red", 0xFF0000), ("blue", 0x0000FF)] {
        let port = mixer
            .add_input(named(&format!("{who}-cam"), who, who, Codec::Vp8, 96))
            .unwrap();
        senders.push(vp8_sender(rgb, port));
    }
    let port = mixer
        .add_input(named("ann-mic", "ann", "Ann", Codec::Opus, 111))
        .unwrap();
    senders.push(tone_sender(port, "silence"));
    let ann_top = (0, 360, 640, 120); // above the name in the middle of the tile
    wait_for_picture(
        &reader,
        "grid with Ann's slate",
        &[
            Want::Color((0, 0, 640, 360), RED, TOL),
            Want::Color((640, 0, 640, 360), BLUE, TOL),
            Want::Color(ann_top, SLATE, SLATE_TOL),
            Want::Text((0, 500, 640, 80), 4),
            // The empty fourth cell: the background, black by default.
            Want::Color((640, 360, 640, 360), [0, 0, 0], SLATE_TOL),
            // No labels yet.
            Want::NoText((0, 300, 320, 60)),
        ],
    );
    let plain_cpu = cpu_percent(5);

    let look = Look {
        labels: true,
        background: "#808000".into(),
        logo: Some(png_data_uri(0xFFFF_00FF, 64)),
        title: "Demo".into(),
    };
    mixer.set_look(look).unwrap();
    // The label box: the bottom-left of red's tile, 384x48 at (8, 304); white text in it.
    wait_for_picture(
        &reader,
        "labels, background, logo",
        &[
            Want::Text((8, 304, 200, 48), 2),
            Want::Color((640, 360, 640, 360), OLIVE, TOL),
            // The logo's box is 212x120 at (1048, 20); a square logo sits in its middle.
            Want::Color((1104, 30, 100, 100), MAGENTA, TOL),
            // The rest of red's tile is still red.
            Want::Color((0, 0, 640, 240), RED, TOL),
        ],
    );
    let looks_cpu = cpu_percent(5);
    eprintln!(
        "CPU of the test process (mixer + 3 RTP senders), % of one core: idle slate \
         {idle_cpu:.0}, 3 participants (1 slate) {plain_cpu:.0}, + labels + logo {looks_cpu:.0}"
    );

    // A bad logo is refused before it reaches the pipeline.
    let bad = mixer.set_look(Look {
        logo: Some("file:///etc/passwd".into()),
        ..Look::default()
    });
    assert!(bad.is_err());

    // Everyone leaves while the wire is watched: the titled slate returns, the output goes on.
    let probe_url = url.clone();
    let packets = std::thread::spawn(move || video_packets(&probe_url, 8));
    std::thread::sleep(Duration::from_secs(1)); // ffprobe connects and starts reading
    for id in ["red-cam", "blue-cam", "ann-mic"] {
        mixer.remove_input(id).unwrap();
    }
    drop(senders);
    wait_for_picture(
        &reader,
        "idle slate again (with title and logo)",
        &[
            Want::Color((0, 520, 1280, 200), SLATE, SLATE_TOL),
            Want::Text((0, 260, 1280, 200), 20),
            Want::Color((1104, 30, 100, 100), MAGENTA, TOL),
        ],
    );
    let packets = packets.join().unwrap().expect("ffprobe packets");
    assert!(packets.len() > 150, "only {} packets in 8 s", packets.len());
    let longest_gap = packets
        .windows(2)
        .map(|w| w[1].pts - w[0].pts)
        .fold(0.0f64, f64::max);
    eprintln!(
        "everyone left: {} packets, longest pts gap {:.0} ms",
        packets.len(),
        longest_gap * 1000.0
    );
    assert!(
        longest_gap < 0.07,
        "output gap of {longest_gap:.3} s when everyone left"
    );
    events.pump();
    assert_eq!(
        events.output_state("out0").map(|(s, _)| s),
        Some(OutputState::Live),
        "the output must stay live"
    );
    mixer.shutdown();
}
