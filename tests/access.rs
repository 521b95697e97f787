//! Operator credentials with real processes: serve refuses to run open on a non-loopback
//! address, a keyed serve only creates rooms for a roomCreate token, and the command line
//! (`costream token create`, `costream room create`) mints tokens that work against it.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use common::{Api, Serve, BIN};
use serde_json::{json, Value};

const KEY: &str = "APIcli";
const SECRET: &str = "cli-test-secret-0123456789abcdefghijkl";

fn costream(args: &[&str]) -> anyhow::Result<std::process::Output> {
    Command::new(BIN)
        .args(args)
        .env("COSTREAM_API_KEY", KEY)
        .env("COSTREAM_API_SECRET", SECRET)
        .stdin(Stdio::null())
        .output()
        .context("run costream")
}

/// `costream ARGS` with the test's key, its stdout trimmed (off the async runtime's thread).
fn minted(args: &[&str]) -> anyhow::Result<String> {
    tokio::task::block_in_place(|| stdout(&costream(args)?))
}

fn stdout(output: &std::process::Output) -> anyhow::Result<String> {
    anyhow::ensure!(
        output.status.success(),
        "exit {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout.clone())?.trim().to_string())
}

/// `costream serve` on `listen` with only the credentials in `env` (none inherited).
fn serve_on(listen: &str, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args([
            "serve",
            "--listen",
            listen,
            "--origin-rtmp-listen",
            "127.0.0.1:0",
            // Its own room store: never the user's, nor another test's.
            "--no-store",
        ])
        .env_remove("COSTREAM_API_KEY")
        .env_remove("COSTREAM_API_SECRET")
        .env_remove("COSTREAM_OPEN")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    command
}

#[test]
fn serve_without_keys_refuses_a_public_address_unless_told_to_run_open() -> anyhow::Result<()> {
    let refused = serve_on("0.0.0.0:0", &[]).stdout(Stdio::null()).output()?;
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    for hint in ["auth.keys", "COSTREAM_API_KEY", "--open", "0.0.0.0"] {
        assert!(message.contains(hint), "{hint:?} missing from: {message}");
    }
    // A secret without its key is a mistake, not an open server.
    let half = serve_on("127.0.0.1:0", &[("COSTREAM_API_SECRET", SECRET)])
        .stdout(Stdio::null())
        .output()?;
    assert!(!half.status.success());
    assert!(String::from_utf8_lossy(&half.stderr).contains("without COSTREAM_API_KEY"));
    // Told to run open, or given a key, it starts.
    let open: &[(&str, &str)] = &[("COSTREAM_OPEN", "true")];
    let keyed: &[(&str, &str)] = &[("COSTREAM_API_KEY", KEY), ("COSTREAM_API_SECRET", SECRET)];
    for env in [open, keyed] {
        let mut child = serve_on("0.0.0.0:0", env)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut out = child.stdout.take().context("stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let mut buf = [0u8; 256];
            while let Ok(n) = std::io::Read::read(&mut out, &mut buf) {
                if n == 0 {
                    break;
                }
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
                if text.contains("costream listening on") {
                    let _ = tx.send(());
                }
            }
        });
        let started = rx.recv_timeout(Duration::from_secs(30)).is_ok();
        let _ = child.kill();
        let _ = child.wait();
        assert!(started, "serve with {env:?} did not start");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_server_works_with_tokens_from_the_command_line() -> anyhow::Result<()> {
    let serve = Serve::start_with_config(&format!("[auth]\nkeys = {{ {KEY} = \"{SECRET}\" }}\n"))?;
    let api = Api::new(&serve.base_url);
    // No token: 401, naming what to send.
    let response = api
        .http()
        .post(api.url("/api/v1/rooms"))
        .json(&json!({}))
        .send()
        .await?;
    assert_eq!(response.status(), 401);

    // `costream room create` mints a roomCreate token and creates the room.
    let created = minted(&[
        "room",
        "create",
        "--url",
        &serve.base_url,
        "--name",
        "cli show",
    ])?;
    let created: Value = serde_json::from_str(&created)?;
    let room_id = created["room_id"].as_str().context("room_id")?.to_string();
    assert!(created["host_token"]
        .as_str()
        .is_some_and(|t| t.split('.').count() == 3));

    // `costream token create --host` for that room: the studio's powers.
    let host = minted(&[
        "token",
        "create",
        "--room",
        &room_id,
        "--identity",
        "producer",
        "--host",
        "--ttl",
        "10m",
    ])?;
    let links = api.url(&format!("/api/v1/rooms/{room_id}/links"));
    let links_with = |token: String| {
        let request = api.http().get(&links).bearer_auth(token);
        async move { anyhow::Ok(request.send().await?.status()) }
    };
    assert_eq!(links_with(host).await?, 200);
    // A guest token for the same room cannot do the host's part.
    let guest = minted(&[
        "token",
        "create",
        "--room",
        &room_id,
        "--identity",
        "ann",
        "--name",
        "Ann",
    ])?;
    assert_eq!(links_with(guest).await?, 403);

    // A room creation link's token creates rooms over the API (what the start page sends).
    let creator = minted(&["token", "create", "--room-create", "--ttl", "5m"])?;
    let response = api
        .http()
        .post(api.url("/api/v1/rooms"))
        .bearer_auth(&creator)
        .json(&json!({"name": "from a link"}))
        .send()
        .await?;
    assert_eq!(response.status(), 201);
    let pool = api
        .http()
        .get(api.url("/api/v1/pool"))
        .bearer_auth(&creator)
        .send()
        .await?;
    assert_eq!(pool.status(), 200);

    // A short secret is refused before anything is minted.
    let short = Command::new(BIN)
        .args(["token", "create", "--room", "r", "--identity", "x"])
        .env("COSTREAM_API_KEY", KEY)
        .env("COSTREAM_API_SECRET", "short")
        .output()?;
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("32"));
    Ok(())
}

/// A LiveKit-layout token minted by an independent JWT library (PyJWT, Debian's python3-jwt)
/// from the key and secret alone: `exp_offset` seconds from now, for `room`.
fn pyjwt_token(room: &str, identity: &str, exp_offset: i64) -> anyhow::Result<String> {
    let script = r#"
import json, sys, time, jwt
key, secret, room, identity, exp_offset = sys.argv[1:6]
now = int(time.time())
claims = {"iss": key, "sub": identity, "name": identity.title(), "nbf": now - 5,
          "exp": now + int(exp_offset),
          "video": {"room": room, "roomJoin": True, "canPublish": True, "canSubscribe": True}}
print(jwt.encode(claims, secret, algorithm="HS256"))
"#;
    let output = Command::new("/usr/bin/python3")
        .args([
            "-c",
            script,
            KEY,
            SECRET,
            room,
            identity,
            &exp_offset.to_string(),
        ])
        .output()
        .context("run /usr/bin/python3 (python3-jwt is installed by scripts/setup.sh --test)")?;
    stdout(&output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_an_independent_jwt_library_join_with_their_identity() -> anyhow::Result<()> {
    let serve = Serve::start_with_config(&format!("[auth]\nkeys = {{ {KEY} = \"{SECRET}\" }}\n"))?;
    let api = Api::new(&serve.base_url);
    let created = minted(&["room", "create", "--url", &serve.base_url])?;
    let created: Value = serde_json::from_str(&created)?;
    let room_id = created["room_id"].as_str().context("room_id")?.to_string();
    let whip_url = created["whip_url"]
        .as_str()
        .context("whip_url")?
        .to_string();
    let host = created["host_token"]
        .as_str()
        .context("host_token")?
        .to_string();

    let token = tokio::task::block_in_place(|| pyjwt_token(&room_id, "dana", 600))?;
    let _dana = tokio::task::block_in_place(|| {
        common::Publisher::start(
            &whip_url,
            &token,
            common::PublisherOptions {
                name: "Dana on stage",
                ..common::PublisherOptions::red_vp8()
            },
        )
    })?;
    let status: Value = api
        .http()
        .get(api.url(&format!("/api/v1/rooms/{room_id}")))
        .bearer_auth(&host)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(status["participants"][0]["identity"], "dana", "{status}");

    // Expired (beyond the 30 s leeway) and other-room tokens from the same library: 401.
    let offer = |token: String| {
        let request = api
            .http()
            .post(&whip_url)
            .header("content-type", "application/sdp")
            .bearer_auth(token)
            .body("v=0\r\n");
        async move { anyhow::Ok(request.send().await?.status().as_u16()) }
    };
    let expired = tokio::task::block_in_place(|| pyjwt_token(&room_id, "dana", -120))?;
    assert_eq!(offer(expired).await?, 401);
    let elsewhere = tokio::task::block_in_place(|| pyjwt_token("another-room", "dana", 600))?;
    assert_eq!(offer(elsewhere).await?, 401);
    let tampered = format!("{token}x");
    assert_eq!(offer(tampered).await?, 401);
    Ok(())
}
