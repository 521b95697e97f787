//! `--log-format json`: serve's and its mixers' log lines are JSON objects, each with the
//! spans it was written in, so a request id or a room id finds every line about it. A mixer's
//! lines come through serve's log, tagged with the room and the mixer's pid.

mod common;

use std::time::Duration;

use anyhow::Context;
use common::{eventually, Api, Publisher, PublisherOptions, Serve};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_is_json_and_names_its_request_and_room() -> anyhow::Result<()> {
    let serve = Serve::start_capturing_json_log()?;
    let api = Api::new(&serve.base_url);
    let room = api.create_room(json!({"name": "json"})).await?;
    let _publisher = Publisher::start(
        &room.whip_url,
        &room.guest_token,
        PublisherOptions::red_vp8(),
    )?;
    let response = api
        .http()
        .post(api.url(&format!("/api/v1/rooms/{}/live", room.id)))
        .bearer_auth(&room.host_token)
        .header("x-request-id", "test-request-42")
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-request-id"],
        "test-request-42",
        "the id comes back"
    );
    // A request without an id gets one.
    let response = api.http().get(api.url("/healthz")).send().await?;
    let generated = response.headers()["x-request-id"].to_str()?.to_string();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");

    eventually("the output live", Duration::from_secs(30), || async {
        let status = api.status(&room).await?;
        Ok((status["outputs"][0]["state"] == "live").then_some(()))
    })
    .await?;
    api.end_room(&room).await?;

    // "input added" is the mixer's own line (another process, re-emitted by serve).
    let log = eventually("the mixer's lines", Duration::from_secs(10), || async {
        let log = serve.log()?;
        Ok(log.contains("input added").then_some(log))
    })
    .await?;
    let lines: Vec<Value> = log
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).with_context(|| format!("not JSON: {line}")))
        .collect::<anyhow::Result<_>>()?;
    assert!(lines.len() > 10, "{} lines", lines.len());
    for line in &lines {
        assert!(
            line["timestamp"].is_string() && line["level"].is_string(),
            "{line}"
        );
    }
    let in_span = |line: &Value, field: &str, value: &str| {
        line["spans"]
            .as_array()
            .is_some_and(|spans| spans.iter().any(|span| span[field] == value))
    };
    let input_added = lines
        .iter()
        .find(|line| {
            line["fields"]["message"]
                .as_str()
                .is_some_and(|message| message.starts_with("input added input="))
        })
        .context("the mixer's \"input added\" is not in serve's log")?;
    assert_eq!(input_added["level"], "INFO", "{input_added}");
    assert_eq!(
        input_added["fields"]["room"],
        room.id.as_str(),
        "{input_added}"
    );
    assert!(
        input_added["fields"]["epoch"].is_u64() && input_added["fields"]["mixer_pid"].is_u64(),
        "{input_added}"
    );
    // Written once, by serve: no mixer line is wrapped raw into another.
    assert!(
        !lines.iter().any(|line| line["fields"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("\"timestamp\""))),
        "a mixer line was not parsed"
    );
    let going_live = lines
        .iter()
        .find(|line| line["fields"]["message"] == "going live")
        .context("no \"going live\" line")?;
    assert!(
        in_span(going_live, "request_id", "test-request-42"),
        "{going_live}"
    );
    assert!(
        lines.iter().any(|line| in_span(line, "room", &room.id)),
        "no line in the room's span"
    );
    Ok(())
}
