//! `GET /api/v1/openapi.json` checked against a real `costream serve` by an independent tool:
//! schemathesis (pinned; `scripts/setup.sh --test` installs it) generates requests for every
//! operation from the document, valid and invalid, and fails on any `5xx`, any status the
//! document does not list and any response that does not match its schema.
//!
//! WHIP and WHEP bodies are `application/sdp`, which schemathesis sends as text through
//! `tests/openapi/hooks.py`. Every `{room_id}` operation runs against one real room with its host token, so the room
//! status, layout, look, outputs, invites, links and go-live answer for real (not only `404`);
//! ending a room runs against a second room. Bounded: a few examples per operation and a hard
//! timeout, so the test takes about a minute on two cores.

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use common::{Api, Serve};
use serde_json::json;

/// The version `scripts/setup.sh --test` installs (into a venv of its own, see there).
const SCHEMATHESIS_VERSION: &str = "4.32.5";
/// Test cases per operation and phase.
const MAX_EXAMPLES: &str = "20";
/// schemathesis is killed (and the test fails) after this long.
const HARD_TIMEOUT: Duration = Duration::from_secs(150);

fn schemathesis() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME unset")?;
    let bin = PathBuf::from(home)
        .join(".cache/costream")
        .join(format!("schemathesis-{SCHEMATHESIS_VERSION}"))
        .join("bin/schemathesis");
    if !bin.exists() {
        bail!(
            "schemathesis {SCHEMATHESIS_VERSION} is not installed at {}: run scripts/setup.sh --test",
            bin.display()
        );
    }
    Ok(bin)
}

/// Rate limits out of the way: schemathesis sends hundreds of requests from one address, and
/// a `429` everywhere would hide what the handlers answer. No warm mixer: only go-live starts
/// one.
const CONFIG: &str = r#"
[pool]
warm = 0
[limits]
room_creations_per_minute_per_ip = 100000
sessions_per_minute_per_ip = 100000
invites_per_minute_per_ip = 100000
"#;

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_the_document_true() -> anyhow::Result<()> {
    let bin = schemathesis()?;
    let serve = Serve::start_with_config(CONFIG)?;
    let api = Api::new(&serve.base_url);
    let room = api.create_room(json!({"name": "openapi"})).await?;
    let doomed = api.create_room(json!({})).await?;

    let dir = std::env::temp_dir().join(format!("costream-openapi-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // The first `[[operations]]` entry an operation matches applies to it.
    let config = format!(
        r#"
hooks = "{hooks}"
headers = {{ Authorization = "Bearer {host}" }}

[[operations]]
include-path = "/api/v1/rooms/{{room_id}}"
include-method = "DELETE"
headers = {{ Authorization = "Bearer {doomed_host}" }}
parameters = {{ "path.room_id" = "{doomed}" }}

[[operations]]
include-path-regex = "^/(api/v1/rooms|whip|whep)/\\{{room_id\\}}"
parameters = {{ "path.room_id" = "{room}" }}
"#,
        hooks = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openapi/hooks.py"),
        host = room.host_token,
        room = room.id,
        doomed = doomed.id,
        doomed_host = doomed.host_token,
    );
    let config_path = dir.join("schemathesis.toml");
    std::fs::write(&config_path, config)?;

    let started = Instant::now();
    let mut child = Command::new(&bin)
        .arg("--config-file")
        .arg(&config_path)
        .arg("--no-color")
        .arg("run")
        .arg(format!("{}/api/v1/openapi.json", serve.base_url))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            MAX_EXAMPLES,
            "--workers",
            "2",
            "--request-timeout",
            "10",
            "--seed",
            "1",
            "--generation-database",
            "none",
            // The stateful phase follows links the document does not declare, unbounded.
            "--phases",
            "examples,coverage,fuzzing",
        ])
        .arg("--report-dir")
        .arg(&dir)
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {}", bin.display()))?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > HARD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            let out = reader.join().unwrap_or_default();
            bail!("schemathesis still running after {HARD_TIMEOUT:?}:\n{out}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let out = reader.join().unwrap_or_default();
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut err);
    }
    eprintln!("{out}\n{err}\nschemathesis took {:?}", started.elapsed());
    assert!(
        status.success(),
        "schemathesis found problems ({status}); see its report above"
    );
    // Every operation of the document was exercised: all selected, all tested. (schemathesis
    // 4.32 counts the document's 31 operations as 30 or 31 from run to run, so the total is
    // compared with a margin of one.)
    let document: serde_json::Value =
        reqwest::get(format!("{}/api/v1/openapi.json", serve.base_url))
            .await?
            .json()
            .await?;
    let operations: usize = document["paths"]
        .as_object()
        .context("paths")?
        .values()
        .map(|item| item.as_object().map_or(0, |m| m.len()))
        .sum();
    let figure = |label: &str| -> Option<String> {
        let line = out.lines().find(|l| l.trim_start().starts_with(label))?;
        Some(line.trim_start()[label.len()..].trim().to_string())
    };
    let selected = figure("Selected:").context("no Selected: line")?;
    let tested: usize = figure("Tested:").context("no Tested: line")?.parse()?;
    let (chosen, total) = selected.split_once('/').context("Selected: a/b")?;
    let (chosen, total): (usize, usize) = (chosen.parse()?, total.parse()?);
    assert!(
        chosen == total && tested == total && total + 1 >= operations,
        "expected all {operations} operations to be tested (selected {selected}, tested {tested})"
    );
    // The room survived (only the second room was ended) and still answers.
    let (code, _) = api
        .send(
            reqwest::Method::GET,
            &format!("/api/v1/rooms/{}", room.id),
            None,
        )
        .await?;
    assert_eq!(code, 200);
    Ok(())
}
