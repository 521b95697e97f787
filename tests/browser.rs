//! The pages in a real browser: Debian's Chromium, headless with a fake camera and microphone,
//! driven by `tests/browser/scenario.mjs` (npm `playwright-core`, pinned; never a downloaded
//! browser) against a real `costream serve`. The host starts a room from `/` and goes live, a
//! guest joins from the invite link, both see and hear each other, a viewer watches the mix
//! from the built-in origin, the guest leaves and is removed, the viewer asks to join and the
//! host accepts it on air, the host stops and ends the room.
//! Screenshots and console logs land in `tests/artifacts/browser/`.
//!
//! Needs `node`, `/usr/bin/chromium` and `npm ci` in tests/browser: `scripts/setup.sh --test`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use common::Serve;
use serde_json::Value;

/// The whole scenario takes ~30 s when everything works; failures wait out their deadlines.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(300);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn artifact_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/artifacts/browser")
}

/// Runs the node scenario (with a room creation token on a keyed server); returns its RESULT
/// json. Its progress lines go to the test output.
fn run_scenario(
    base_url: &str,
    artifacts: &Path,
    creation_token: Option<&str>,
) -> anyhow::Result<Value> {
    let dir = browser_dir();
    if !dir.join("node_modules/playwright-core").exists() {
        bail!(
            "{} has no node_modules: run `bash scripts/setup.sh --test` (npm ci there)",
            dir.display()
        );
    }
    let mut child = Command::new("node")
        .arg("scenario.mjs")
        .arg(base_url)
        .arg(artifacts)
        .args(creation_token)
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot run node (install nodejs: scripts/setup.sh --test)")?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut result = None;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            match line.strip_prefix("RESULT ") {
                Some(json) => result = Some(json.to_string()),
                None => eprintln!("browser: {line}"),
            }
        }
        let _ = tx.send(result);
    });
    let deadline = Instant::now() + SCENARIO_TIMEOUT;
    let result = loop {
        if let Ok(result) = rx.recv_timeout(Duration::from_millis(200)) {
            break result;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the browser scenario did not finish within {SCENARIO_TIMEOUT:?}");
        }
    };
    let status = child.wait()?;
    let json = result.with_context(|| format!("the scenario printed no RESULT (exit {status})"))?;
    Ok(serde_json::from_str(&json)?)
}

/// Two Chromiums with a live room each would not fit two cores: one scenario at a time.
static ONE_BROWSER: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn host_guest_and_viewer_pages_in_chromium() -> anyhow::Result<()> {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let serve = Serve::start()?;
    check_scenario(&serve, &artifact_dir(), None)
}

/// The same on a server with API keys, where the host starts from a room creation link.
#[test]
fn on_a_keyed_server_the_host_starts_from_a_room_creation_link() -> anyhow::Result<()> {
    const KEY: &str = "APIbrowser";
    const SECRET: &str = "browser-test-secret-0123456789abcdefgh";
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let serve = Serve::start_with_config(&format!("[auth]\nkeys = {{ {KEY} = \"{SECRET}\" }}\n"))?;
    let minted = Command::new(common::BIN)
        .args(["token", "create", "--room-create", "--ttl", "10m"])
        .env("COSTREAM_API_KEY", KEY)
        .env("COSTREAM_API_SECRET", SECRET)
        .output()?;
    anyhow::ensure!(minted.status.success(), "token create failed");
    let token = String::from_utf8(minted.stdout)?.trim().to_string();
    check_scenario(&serve, &artifact_dir().join("keyed"), Some(&token))
}

fn check_scenario(
    serve: &Serve,
    artifacts: &Path,
    creation_token: Option<&str>,
) -> anyhow::Result<()> {
    let artifacts = artifacts.to_path_buf();
    std::fs::create_dir_all(&artifacts)?;
    let result = run_scenario(&serve.base_url, &artifacts, creation_token)?;
    std::fs::write(
        artifacts.join("result.json"),
        serde_json::to_string_pretty(&result)?,
    )?;
    eprintln!("metrics: {}", result["metrics"]);
    eprintln!("screenshots: {}", result["screenshots"]);

    let checks = result["checks"].as_object().context("no checks")?;
    let failed: Vec<String> = checks
        .iter()
        .filter(|(_, c)| c["ok"] != true)
        .map(|(name, c)| format!("{name}: {}", c["error"]))
        .collect();
    assert!(
        failed.is_empty(),
        "browser checks failed (see tests/artifacts/browser/):\n  {}",
        failed.join("\n  ")
    );
    // Every step ran (a scenario that stopped early must not pass by having fewer checks).
    for name in [
        "host creates a room from /",
        "host publishes over WHIP",
        "viewer page plays the mix from the built-in origin",
        "hls.js plays the LL-HLS and the plain HLS stream (latency measured)",
        "the mix shows the camera in its own colours (within 6 per channel)",
        "studio shows the output live with bitrate and duration",
        "host records the program from the studio and the part is listed complete",
        "host switches camera and mutes the mic while live, without renegotiation",
        "guest joins from the invite link",
        "host page plays the guest video",
        "guest page plays the host video",
        "host hears the guest (inbound audio bytes growing)",
        "guest hears the host (inbound audio bytes growing)",
        "guest token on host-only endpoints is 403",
        "guest's event stream has no output URLs",
        "studio quality panel: mixer latency, moving program, guest on air and A/V offset",
        "guest leaves and the studio updates within 5 s",
        "host removes a guest; the guest page shows removed",
        "a viewer asks from the watch page, the studio accepts, the viewer comes on air",
        "no token in any URL the pages requested",
        "host ends the room",
    ] {
        assert!(checks.contains_key(name), "check {name:?} did not run");
    }
    for shot in ["index", "host", "guest", "watch"] {
        let path = artifacts.join(format!("{shot}.png"));
        assert!(path.exists(), "no screenshot {}", path.display());
    }
    Ok(())
}
