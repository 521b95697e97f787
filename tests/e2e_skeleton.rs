//! End to end, all real: nginx-rtmp on loopback, `costream serve`, two `costream publish`
//! WebRTC publishers (red VP8 + 440 Hz, blue H.264 + 880 Hz) over WHIP, a mixer process, and
//! ffprobe/ffmpeg pulling the mix back from nginx.

mod common;

use std::time::{Duration, Instant};

use common::{
    cpu_seconds, eventually, participants_in_mix, Api, Publisher, PublisherOptions, Serve,
};
use costream_testkit::{close_to, mean_rgb, probe_stream, FrameReader, Nginx};
use serde_json::json;

/// Frames are checked scaled down to 320x180 (a 4x downscale of the 1280x720 output).
const W: u32 = 320;
const H: u32 = 180;
const RED: [u8; 3] = [255, 0, 0];
const BLUE: [u8; 3] = [0, 0, 255];
/// Colors go through VP8/H.264, YUV 4:2:0 and x264 (2-3 per channel) and a BT.601 -> BT.709
/// conversion (up to ~7 for saturated colours); a matrix mix-up moves red by 25 and blue by 15.
const TOLERANCE: u8 = 12;

/// Mean color of the central block of a 2-up grid tile (0 = left, 1 = right). Two tiles of a
/// 1280x720 canvas are 640x360 each, side by side and centered vertically.
fn tile_color(frame: &[u8], tile: u32) -> [u8; 3] {
    let center_x = W / 4 + tile * W / 2;
    mean_rgb(frame, W, center_x - 25, H / 2 - 12, 50, 24)
}

fn contains_color(frame: &[u8], color: [u8; 3]) -> bool {
    // Any 20x20 block of the color counts.
    (0..H / 20).any(|by| {
        (0..W / 20).any(|bx| {
            close_to(
                mean_rgb(frame, W, bx * 20, by * 20, 20, 20),
                color,
                TOLERANCE,
            )
        })
    })
}

fn next_frame(reader: &FrameReader) -> anyhow::Result<Vec<u8>> {
    tokio::task::block_in_place(|| reader.next_frame(Duration::from_secs(5)))
        .ok_or_else(|| anyhow::anyhow!("no frame decoded from the output within 5 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_publishers_are_mixed_into_one_rtmp_stream_and_leaving_empties_the_tile(
) -> anyhow::Result<()> {
    let nginx = Nginx::start()?;
    let serve = Serve::start()?;
    let api = Api::new(&serve.base_url);
    let key = "e2e-skeleton";
    let room = api
        .create_room(json!({"name": "e2e", "outputs": [{"url": nginx.rtmp_url(key)}]}))
        .await?;
    for field in ["host_url", "guest_url", "watch_url"] {
        assert!(
            room.created[field]
                .as_str()
                .is_some_and(|u| u.starts_with("http")),
            "{field}: {}",
            room.created
        );
    }

    // The red publisher joins before the room goes live.
    let red = Publisher::start(
        &room.whip_url,
        &room.guest_token,
        PublisherOptions::red_vp8(),
    )?;
    api.wait_for_tracks(&room, 2).await?;

    let went_live = Instant::now();
    let (code, body) = api.go_live(&room).await?;
    assert_eq!(code, 200, "{body}");
    let first_bytes = eventually(
        "first FLV bytes at nginx",
        Duration::from_secs(15),
        || async {
            Ok(nginx
                .publisher_bytes_in(key)
                .filter(|&b| b > 0)
                .map(|_| went_live.elapsed()))
        },
    )
    .await?;
    println!(
        "MEASURE golive_to_first_flv_bytes_ms={}",
        first_bytes.as_millis()
    );

    // The blue publisher joins while live, with the other codec.
    let blue = Publisher::start(
        &room.whip_url,
        &room.guest_token,
        PublisherOptions {
            color: "blue",
            tone_hz: 880,
            codec: "h264",
            name: "blue",
        },
    )?;
    eventually(
        "both publishers in the mix",
        Duration::from_secs(15),
        || async { Ok((participants_in_mix(&api.status(&room).await?) == 2).then_some(())) },
    )
    .await?;

    let url = nginx.rtmp_url(key);
    let info = tokio::task::spawn_blocking({
        let url = url.clone();
        move || probe_stream(&url)
    })
    .await??;
    assert_eq!(info.video_codec, "h264", "{info:?}");
    assert_eq!((info.width, info.height), (1280, 720), "{info:?}");
    assert!((info.fps - 30.0).abs() < 1.0, "{info:?}");
    assert_eq!(info.audio_codec, "aac", "{info:?}");

    let reader = FrameReader::start(&url, W, H, 5)?;
    let frame = eventually(
        "red left tile and blue right tile",
        Duration::from_secs(20),
        || async {
            let frame = next_frame(&reader)?;
            let ok = close_to(tile_color(&frame, 0), RED, TOLERANCE)
                && close_to(tile_color(&frame, 1), BLUE, TOLERANCE);
            Ok(ok.then_some(frame))
        },
    )
    .await?;
    assert!(!close_to(tile_color(&frame, 0), BLUE, TOLERANCE));

    let status = api.status(&room).await?;
    assert_eq!(status["broadcast"], "live", "{status}");
    assert_eq!(status["outputs"][0]["state"], "live", "{status}");
    assert!(
        status["outputs"][0]["bytes_sent"].as_u64().unwrap_or(0) > 0,
        "{status}"
    );
    assert!(
        !status.to_string().contains(key),
        "stream key leaked in status: {status}"
    );

    // Mixer CPU for the two-publisher room, over a few seconds of steady state.
    if let Some(pid) = status["mixer"]["pid"].as_u64() {
        let (cpu0, t0) = (cpu_seconds(pid as u32)?, Instant::now());
        tokio::time::sleep(Duration::from_secs(5)).await;
        let share = (cpu_seconds(pid as u32)? - cpu0) / t0.elapsed().as_secs_f64();
        println!("MEASURE mixer_cpu_percent_of_one_core={:.1}", share * 100.0);
    }

    // Blue leaves (WHIP DELETE): within 5 s no blue anywhere, red still there, stream goes on.
    blue.leave()?;
    let left = Instant::now();
    eventually("blue gone from the mix", Duration::from_secs(5), || async {
        let frame = next_frame(&reader)?;
        Ok((!contains_color(&frame, BLUE) && contains_color(&frame, RED)).then_some(()))
    })
    .await?;
    println!(
        "MEASURE leave_to_tile_empty_ms={}",
        left.elapsed().as_millis()
    );
    // The stream goes on: fresh frames keep coming, red only.
    for _ in 0..3 {
        let frame = next_frame(&reader)?;
        assert!(contains_color(&frame, RED) && !contains_color(&frame, BLUE));
    }
    let status = api.status(&room).await?;
    assert_eq!(
        status["participants"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
    assert_eq!(status["outputs"][0]["state"], "live", "{status}");

    red.leave()?;
    let (code, _) = api.end_room(&room).await?;
    assert_eq!(code, 204);
    eventually(
        "publisher gone from nginx",
        Duration::from_secs(10),
        || async { Ok(nginx.publisher_bytes_in(key).is_none().then_some(())) },
    )
    .await?;
    Ok(())
}
