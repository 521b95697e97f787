//! The room's look through the whole server: set with `PUT /api/v1/rooms/{id}/look` before
//! going live and while live, seen in the decoded output (the "starting soon" slate while nobody
//! publishes, an audio-only guest's slate, the background colour, name labels), and still there
//! after the mixer is killed and replaced. Real processes throughout: nginx-rtmp, serve, its
//! mixer, two `costream publish` guests (one with `--no-video`), ffmpeg.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, participants_in_mix, Api, Publisher, PublisherOptions, Room};
use costream_testkit::{close_to, mean_rgb, FrameReader, Nginx};
use serde_json::{json, Value};

/// Frames are read at a quarter of the 1280x720 canvas.
const W: u32 = 320;
const H: u32 = 180;
const RED: [u8; 3] = [255, 0, 0];
const OLIVE: [u8; 3] = [0x80, 0x80, 0x00];
/// `costream_mixer::looks::SLATE_ARGB` as RGB.
const SLATE: [u8; 3] = [0x1E, 0x2A, 0x38];
const TOL: u8 = 12;
/// Slate and black differ by only 56 in blue.
const SLATE_TOL: u8 = 12;

/// A check on one frame; regions in canvas (1280x720) pixels.
enum Want {
    Color((u32, u32, u32, u32), [u8; 3], u8),
    /// At least `n` light pixels (every channel > 120): white text.
    Text((u32, u32, u32, u32), usize),
}

fn holds(frame: &[u8], want: &Want) -> (bool, String) {
    match want {
        Want::Color((x, y, w, h), rgb, tol) => {
            let got = mean_rgb(frame, W, x / 4, y / 4, w / 4, h / 4);
            (close_to(got, *rgb, *tol), format!("{got:?}"))
        }
        Want::Text((x, y, w, h), n) => {
            let mut light = 0;
            for row in y / 4..(y + h) / 4 {
                for col in x / 4..(x + w) / 4 {
                    let i = ((row * W + col) * 3) as usize;
                    if frame
                        .get(i..i + 3)
                        .is_some_and(|p| p.iter().all(|c| *c > 120))
                    {
                        light += 1;
                    }
                }
            }
            (light >= *n, format!("{light} light pixels"))
        }
    }
}

/// Waits until a frame decoded from now on satisfies every want; how long that took.
async fn picture(
    reader: &FrameReader,
    what: &str,
    within: Duration,
    wants: &[Want],
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut last = Vec::new();
    let seen = tokio::task::block_in_place(|| {
        costream_testkit::wait_for(started + within, || {
            let frame = reader.frame_after(Instant::now() - Duration::from_millis(100))?;
            last = wants.iter().map(|w| holds(&frame, w)).collect::<Vec<_>>();
            last.iter().all(|(ok, _)| *ok).then(|| started.elapsed())
        })
    });
    seen.ok_or_else(|| anyhow::anyhow!("{what}: not within {within:?}; last frame {last:?}"))
}

async fn put_look(
    api: &Api,
    room: &Room,
    token: &str,
    look: Value,
) -> anyhow::Result<(u16, Value)> {
    let response = api
        .http()
        .put(api.url(&format!("/api/v1/rooms/{}/look", room.id)))
        .bearer_auth(token)
        .json(&look)
        .send()
        .await?;
    Ok((response.status().as_u16(), response.json().await?))
}

async fn output_live(api: &Api, room: &Room, not_pid: Option<u64>) -> anyhow::Result<u64> {
    eventually("output live", Duration::from_secs(20), || async {
        let status = api.status(room).await?;
        let pid = status["mixer"]["pid"].as_u64();
        let live = status["outputs"][0]["state"] == "live";
        Ok(pid.filter(|p| live && Some(*p) != not_pid))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_look_is_set_live_shows_slates_with_names_and_survives_a_mixer_crash(
) -> anyhow::Result<()> {
    let nginx = Nginx::start()?;
    let serve = common::Serve::start()?;
    let api = Api::new(&serve.base_url);
    let url = nginx.rtmp_url("looks");
    let room = api
        .create_room(json!({"name": "Looks demo", "outputs": [{"url": url}]}))
        .await?;

    // Before going live: only the host may set it, and a bad colour is named.
    let (code, body) = put_look(&api, &room, &room.guest_token, json!({"labels": true})).await?;
    assert_eq!(code, 403, "{body}");
    let (code, body) = put_look(
        &api,
        &room,
        &room.host_token,
        json!({"background": "olive"}),
    )
    .await?;
    assert_eq!(
        (code, body["error"].as_str()),
        (400, Some("invalid_look")),
        "{body}"
    );
    let (code, body) = put_look(
        &api,
        &room,
        &room.host_token,
        json!({"background": "#808000"}),
    )
    .await?;
    assert_eq!(code, 200, "{body}");

    // Live with nobody publishing: the "starting soon" slate, titled with the room name.
    let (code, body) = api.go_live(&room).await?;
    assert_eq!(code, 200, "{body}");
    let went_live = Instant::now();
    let first_mixer = output_live(&api, &room, None).await?;
    let reader = FrameReader::start(&url, W, H, 10)?;
    picture(
        &reader,
        "idle slate",
        Duration::from_secs(15),
        &[
            Want::Color((0, 0, 1280, 200), SLATE, SLATE_TOL),
            Want::Color((0, 520, 1280, 200), SLATE, SLATE_TOL),
            Want::Text((0, 260, 1280, 200), 20),
        ],
    )
    .await?;
    println!(
        "MEASURE golive_to_idle_slate_decoded_ms={}",
        went_live.elapsed().as_millis()
    );

    // A camera, then an audio-only guest: two tiles side by side (640x360 at y 180), the
    // background above and below, and Ann's tile is a slate with her name.
    let _red = Publisher::start(
        &room.whip_url,
        &room.guest_token,
        PublisherOptions::red_vp8(),
    )?;
    api.wait_for_tracks(&room, 2).await?;
    let ann_joined = Instant::now();
    let _ann = Publisher::start_with_args(
        &room.whip_url,
        &room.guest_token,
        PublisherOptions {
            name: "Ann",
            ..PublisherOptions::red_vp8()
        },
        &["--no-video"],
    )?;
    let two_tiles = [
        Want::Color((0, 180, 640, 300), RED, TOL),
        Want::Color((640, 190, 640, 100), SLATE, SLATE_TOL),
        Want::Text((640, 320, 640, 80), 4),
        Want::Color((0, 0, 1280, 170), OLIVE, TOL),
        Want::Color((0, 550, 1280, 170), OLIVE, TOL),
    ];
    picture(
        &reader,
        "red + Ann's slate",
        Duration::from_secs(20),
        &two_tiles,
    )
    .await?;
    println!(
        "MEASURE audio_only_join_to_slate_decoded_ms={}",
        ann_joined.elapsed().as_millis()
    );
    let status = api.status(&room).await?;
    assert_eq!(participants_in_mix(&status), 2, "{status}");

    // While live: name labels on, applied without a restart.
    let changed = Instant::now();
    let (code, body) = put_look(
        &api,
        &room,
        &room.host_token,
        json!({"labels": true, "background": "#808000"}),
    )
    .await?;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["look"],
        json!({"labels": true, "background": "#808000", "title": "", "has_logo": false})
    );
    // Red's label: the bottom-left of its tile (384x48 at (8, 484)), white text on dark.
    let labelled = [
        Want::Text((8, 484, 200, 48), 2),
        Want::Color((0, 180, 640, 240), RED, TOL),
        Want::Color((640, 190, 640, 100), SLATE, SLATE_TOL),
        Want::Color((0, 0, 1280, 170), OLIVE, TOL),
    ];
    picture(&reader, "labels", Duration::from_secs(10), &labelled).await?;
    println!(
        "MEASURE put_look_to_labels_decoded_ms={}",
        changed.elapsed().as_millis()
    );
    assert_eq!(
        api.status(&room).await?["mixer"]["pid"].as_u64(),
        Some(first_mixer),
        "a look change must not restart the mixer"
    );
    drop(reader);

    // kill -9 the mixer: the replacement gets the same look before any input.
    common::signal(first_mixer as u32, "KILL")?;
    let killed = Instant::now();
    output_live(&api, &room, Some(first_mixer)).await?;
    let reader = FrameReader::start(&url, W, H, 10)?;
    picture(
        &reader,
        "the look after a crash",
        Duration::from_secs(20),
        &labelled,
    )
    .await?;
    println!(
        "MEASURE kill9_to_look_back_decoded_ms={}",
        killed.elapsed().as_millis()
    );
    let status = api.status(&room).await?;
    assert_eq!(status["look"]["labels"], true, "{status}");
    assert_eq!(status["look"]["background"], "#808000", "{status}");
    Ok(())
}
