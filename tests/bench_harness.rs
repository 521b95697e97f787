//! The end-to-end benchmark's harness (benches/e2e.py) works: its barcode reader agrees with
//! the timecode the publishers burn in (mixer/src/timecode.rs), and the documented command's
//! smoke mode runs every phase with the real binaries and writes every figure. No timing
//! assertions: benchmarks are not tests.

use std::process::Command;

use costream_mixer::timecode;

const W: usize = 1280;
const H: usize = 720;

fn script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/e2e.py")
}

/// Burns `ms` into a gray w x h picture (the Y plane of I420).
fn burnt(w: usize, h: usize, ms: u64) -> Vec<u8> {
    let mut y = vec![100u8; w * h];
    let mut u = vec![128u8; w * h / 4];
    let mut v = vec![128u8; w * h / 4];
    timecode::burn_i420([&mut y, &mut u, &mut v], [w, w / 2, w / 2], w, h, ms);
    y
}

#[test]
fn reader_decodes_host_and_pip_tile_timecodes() {
    let host_ms = 1_764_000_123_456u64;
    let guest_ms = 1_764_000_123_400u64;
    let mut frame = burnt(W, H, host_ms);
    // A guest's 640x360 picture shown as the first pip tile (320x180 at 936,516): scale by 2.
    let guest = burnt(640, 360, guest_ms);
    for row in 0..180 {
        for col in 0..320 {
            frame[(516 + row) * W + 936 + col] = guest[row * 2 * 640 + col * 2];
        }
    }
    let path = std::env::temp_dir().join(format!("costream-tc-{}.gray", std::process::id()));
    std::fs::write(&path, &frame).unwrap();
    let out = Command::new("python3")
        .arg(script())
        .arg("--decode-file")
        .arg(&path)
        .output()
        .expect("python3 runs");
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["host"], host_ms % timecode::MODULUS);
    assert_eq!(got["tiles"][0], guest_ms % timecode::MODULUS);
    assert!(
        got["tiles"][1].is_null(),
        "no guest in the second tile: {got}"
    );
}

/// Every figure issue 5 asks for, as written to results.json.
const KEYS: [&str; 12] = [
    "cpu_ratio_vs_bare",
    "cpu_ratio_vs_ffmpeg",
    "mixer_cpu_core_fraction",
    "mixer_latency_p50_ms",
    "mixer_latency_p95_ms",
    "glass_to_glass_p95_ms",
    "join_to_visible_p95_ms",
    "golive_first_byte_cold_ms",
    "golive_first_byte_warm_ms",
    "rooms_realtime",
    "mixer_rss_mb",
    "instructions_per_frame",
];

/// The documented command in its smoke mode (1 room, windows of 1-2 s) runs every phase end to
/// end with the real binaries and writes every figure as a finite number, plus the report.
/// The values themselves are not checked: benchmarks are not tests.
#[test]
fn smoke_run_writes_every_figure() {
    let out_dir = tempfile_dir();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("benches/run.sh"))
        .arg("--smoke")
        .env("COSTREAM_BIN", env!("CARGO_BIN_EXE_costream"))
        .env("BENCH_OUT", &out_dir)
        .current_dir(root)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "benches/run.sh --smoke failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(out_dir.join("results-smoke.json")).unwrap();
    let res: serde_json::Value = serde_json::from_str(&text).unwrap();
    for key in KEYS {
        assert!(
            res[key].as_f64().is_some_and(f64::is_finite),
            "{key} is not a finite number: {text}"
        );
    }
    assert!(
        res["machine"].is_string() && res["date"].is_string(),
        "{text}"
    );
    let report = std::fs::read_to_string(out_dir.join("RESULTS-smoke.md")).unwrap();
    for key in KEYS {
        assert!(report.contains(key), "RESULTS-smoke.md lacks {key}");
    }
    let _ = std::fs::remove_dir_all(&out_dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("costream-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
