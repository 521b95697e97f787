//! The soak in short (~2 min of the 60 the record takes): `benches/soak.py` against the test
//! build, two live rooms with guests churning, layout and look changes and an output added and
//! removed. Checks the harness produces its figures and the run stays healthy: both programs
//! keep going, no output reconnects, no mixer restarts, no fd leak. Growth per hour over two
//! minutes is too noisy to judge; the 60-minute run (`bash benches/soak.sh`) records it.

use std::process::Command;

use serde_json::Value;

#[test]
fn two_rooms_churning_for_two_minutes_stay_healthy() -> anyhow::Result<()> {
    let out = std::env::temp_dir().join(format!("costream-soak-{}.json", std::process::id()));
    let status = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/soak.py"))
        .args(["--binary", env!("CARGO_BIN_EXE_costream")])
        .args([
            "--minutes",
            "2",
            "--sample-secs",
            "5",
            "--warmup-secs",
            "20",
        ])
        .arg("--out")
        .arg(&out)
        .status()?;
    anyhow::ensure!(status.success(), "soak.py failed: {status}");
    let result: Value = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
    let _ = std::fs::remove_file(&out);
    for key in [
        "soak_serve_rss_growth_mb_per_h",
        "soak_mixer_rss_growth_mb_per_h",
        "soak_fd_growth",
    ] {
        assert!(result[key].is_number(), "{key} missing: {result}");
    }
    assert!(result["soak_samples"].as_u64() >= Some(20), "{result}");
    assert_eq!(result["soak_output_reconnects"], 0, "{result}");
    assert_eq!(result["soak_mixer_restarts"], 0, "{result}");
    // Compared between samples with the same guests present (soak.py); a leak grows with
    // every join and leave (a dozen of each here), a socket still closing is one or two.
    assert!(result["soak_fd_growth"].as_i64() <= Some(8), "{result}");
    let frames = result["soak_frames_out"].as_array().expect("frames");
    assert!(
        frames.iter().all(|f| f.as_u64() > Some(30 * 60)),
        "a program stalled: {result}"
    );
    Ok(())
}
