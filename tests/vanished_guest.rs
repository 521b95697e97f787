//! A guest that vanishes without leaving (`kill -9` of its `costream publish`, no WHIP DELETE)
//! is out of the mix and out of the room status within 5 s; the same guest reconnecting (a new
//! WHIP POST with the same token) is back in the mix. Real nginx-rtmp, serve, mixer, ffmpeg.

mod common;

use std::time::{Duration, Instant};

use common::{
    eventually, participant_id, participants_in_mix, Api, Publisher, PublisherOptions, Serve,
};
use costream_testkit::{close_to, mean_rgb, FrameReader, Nginx};
use serde_json::json;

const W: u32 = 160;
const H: u32 = 90;
const RED: [u8; 3] = [255, 0, 0];
const BLUE: [u8; 3] = [0, 0, 255];

fn contains_color(frame: &[u8], color: [u8; 3]) -> bool {
    (0..H / 10).any(|by| {
        (0..W / 10).any(|bx| close_to(mean_rgb(frame, W, bx * 10, by * 10, 10, 10), color, 16))
    })
}

/// Waits for a decoded output frame satisfying `want`; returns when it was seen.
async fn frame_where(
    reader: &FrameReader,
    what: &str,
    within: Duration,
    want: impl Fn(&[u8]) -> bool,
) -> anyhow::Result<Instant> {
    eventually(what, within, || async {
        let frame = tokio::task::block_in_place(|| reader.next_frame(Duration::from_secs(2)));
        Ok(frame.filter(|f| want(f)).map(|_| Instant::now()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_guest_leaves_the_mix_and_status_within_5_s_and_can_come_back(
) -> anyhow::Result<()> {
    let nginx = Nginx::start()?;
    let serve = Serve::start()?;
    let api = Api::new(&serve.base_url);
    let key = "vanished";
    let room = api
        .create_room(json!({"outputs": [{"url": nginx.rtmp_url(key)}]}))
        .await?;
    let blue = Publisher::start(
        &room.whip_url,
        &room.host_token,
        PublisherOptions {
            color: "blue",
            tone_hz: 880,
            codec: "vp8",
            name: "blue",
        },
    )?;
    let red = Publisher::start(
        &room.whip_url,
        &room.guest_token,
        PublisherOptions::red_vp8(),
    )?;
    let (code, body) = api.go_live(&room).await?;
    assert_eq!(code, 200, "{body}");
    eventually("both in the mix", Duration::from_secs(15), || async {
        Ok((participants_in_mix(&api.status(&room).await?) == 2).then_some(()))
    })
    .await?;
    let reader = FrameReader::start(&nginx.rtmp_url(key), W, H, 10)?;
    frame_where(
        &reader,
        "red and blue on air",
        Duration::from_secs(20),
        |f| contains_color(f, RED) && contains_color(f, BLUE),
    )
    .await?;

    // kill -9: no DELETE; only ICE consent can tell.
    let killed = Instant::now();
    red.kill()?;
    let out_of_status = eventually("red out of the status", Duration::from_secs(10), || async {
        let status = api.status(&room).await?;
        Ok(participant_id(&status, "red")
            .is_none()
            .then(|| killed.elapsed()))
    })
    .await?;
    let out_of_mix = frame_where(
        &reader,
        "red gone from the output",
        Duration::from_secs(10),
        |f| !contains_color(f, RED) && contains_color(f, BLUE),
    )
    .await?
    .saturating_duration_since(killed);
    println!(
        "MEASURE vanished_guest_out_of_status_ms={} out_of_output_ms={}",
        out_of_status.as_millis(),
        out_of_mix.as_millis()
    );
    assert!(
        out_of_status <= Duration::from_secs(5),
        "status: {out_of_status:?}"
    );
    assert!(
        out_of_mix <= Duration::from_secs(5),
        "output: {out_of_mix:?}"
    );

    // The same guest (same token) reconnects and is mixed again.
    let back = Instant::now();
    let red = Publisher::start(
        &room.whip_url,
        &room.guest_token,
        PublisherOptions::red_vp8(),
    )?;
    let on_air = frame_where(&reader, "red back on air", Duration::from_secs(15), |f| {
        contains_color(f, RED) && contains_color(f, BLUE)
    })
    .await?
    .saturating_duration_since(back);
    println!(
        "MEASURE reconnected_guest_back_on_air_ms={}",
        on_air.as_millis()
    );
    let status = api.status(&room).await?;
    assert!(participant_id(&status, "red").is_some(), "{status}");
    red.leave()?;
    blue.leave()?;
    Ok(())
}
