//! Pull back what reached the RTMP server with ffprobe/ffmpeg and inspect it.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Deserialize;

/// What ffprobe saw in a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamInfo {
    /// ffprobe codec_name, e.g. "h264".
    pub video_codec: String,
    pub width: u32,
    pub height: u32,
    /// From avg_frame_rate (or r_frame_rate when avg is 0/0).
    pub fps: f64,
    /// e.g. "aac"; empty when there is no audio stream.
    pub audio_codec: String,
    /// Audio sample rate in Hz, 0 without audio.
    pub audio_rate: u32,
    /// The video's colour description (from the H.264 VUI).
    pub colour: ColourTags,
}

/// A stream's colour description as ffprobe names it; empty where the stream says nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ColourTags {
    /// `tv` (limited) or `pc` (full).
    pub range: String,
    /// Matrix coefficients (ffprobe's `color_space`), e.g. `bt709`, `smpte170m`.
    pub matrix: String,
    pub transfer: String,
    pub primaries: String,
}

impl ColourTags {
    /// Limited range with the same name for matrix, transfer and primaries, e.g. `bt709`.
    pub fn limited(name: &str) -> ColourTags {
        ColourTags {
            range: "tv".into(),
            matrix: name.into(),
            transfer: name.into(),
            primaries: name.into(),
        }
    }
}

#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    streams: Vec<ProbeStream>,
}

#[derive(Deserialize)]
struct ProbeStream {
    codec_type: String,
    #[serde(default)]
    codec_name: String,
    #[serde(default)]
    width: u32,
    #[serde(default)]
    height: u32,
    #[serde(default)]
    avg_frame_rate: String,
    #[serde(default)]
    r_frame_rate: String,
    #[serde(default)]
    sample_rate: String,
    #[serde(default)]
    color_range: String,
    #[serde(default)]
    color_space: String,
    #[serde(default)]
    color_transfer: String,
    #[serde(default)]
    color_primaries: String,
}

/// Runs ffprobe on `url` (30 s at most) and returns its first video and audio stream.
pub fn probe_stream(url: &str) -> anyhow::Result<StreamInfo> {
    let out = run_with_timeout(
        Command::new("ffprobe").args([
            "-v",
            "error",
            "-analyzeduration",
            "6000000",
            "-show_streams",
            "-of",
            "json",
            url,
        ]),
        Duration::from_secs(30),
    )?;
    parse_probe(&out)
}

fn parse_probe(json: &[u8]) -> anyhow::Result<StreamInfo> {
    let probe: Probe = serde_json::from_slice(json).context("ffprobe json")?;
    let video = probe
        .streams
        .iter()
        .find(|s| s.codec_type == "video")
        .context("no video stream")?;
    let audio = probe.streams.iter().find(|s| s.codec_type == "audio");
    let fps = parse_rate(&video.avg_frame_rate)
        .filter(|f| *f > 0.0)
        .or_else(|| parse_rate(&video.r_frame_rate))
        .unwrap_or(0.0);
    Ok(StreamInfo {
        video_codec: video.codec_name.clone(),
        width: video.width,
        height: video.height,
        fps,
        audio_codec: audio.map(|a| a.codec_name.clone()).unwrap_or_default(),
        audio_rate: audio.and_then(|a| a.sample_rate.parse().ok()).unwrap_or(0),
        colour: ColourTags {
            range: video.color_range.clone(),
            matrix: video.color_space.clone(),
            transfer: video.color_transfer.clone(),
            primaries: video.color_primaries.clone(),
        },
    })
}

fn parse_rate(r: &str) -> Option<f64> {
    let (n, d) = r.split_once('/')?;
    let (n, d): (f64, f64) = (n.parse().ok()?, d.parse().ok()?);
    (d != 0.0).then_some(n / d)
}

/// What `ffmpeg -v error` says decoding the whole file: empty when it decodes cleanly.
pub fn decode_errors(file: &std::path::Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(file)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The container's duration in seconds, as ffprobe reads it (0 when it cannot).
pub fn duration_s(file: &std::path::Path) -> f64 {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(file)
        .output()
        .expect("ffprobe runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0.0)
}

/// The ffmpeg filter that turns a decoded stream into `width`x`height` RGB as a player would:
/// by the colour description the stream signals (its VUI), not by ffmpeg's guess. Why: ffmpeg
/// 5.1's swscale converts YUV to RGB with BT.601 unless it happens to take a path that reads the
/// frame's tags (it does when scaling to 320x180, not to 4x4), so a BT.709 program would read
/// as shifted by up to 25 per channel, or a mis-signalled one as right. `colorspace` converts the
/// matrix the stream declares to BT.601 (gamma and primaries left alone, as players do), which
/// the RGB conversion then applies. A stream without a colour description fails here.
pub fn rgb_filter(width: u32, height: u32) -> String {
    format!("colorspace=all=bt470bg:fast=1:format=yuv420p,scale={width}:{height}")
}

/// Decodes one frame of `url` as packed RGB24 scaled to `width`x`height` (20 s at most),
/// converted by the stream's own colour description (see [`rgb_filter`]).
pub fn grab_frame_rgb(url: &str, width: u32, height: u32) -> anyhow::Result<Vec<u8>> {
    let scale = rgb_filter(width, height);
    let out = run_with_timeout(
        Command::new("ffmpeg").args([
            "-v",
            "error",
            "-i",
            url,
            "-frames:v",
            "1",
            "-vf",
            &scale,
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ]),
        Duration::from_secs(20),
    )?;
    let want = (width * height * 3) as usize;
    if out.len() < want {
        bail!("ffmpeg gave {} bytes, wanted {want}", out.len());
    }
    Ok(out[..want].to_vec())
}

/// Decodes `seconds` of `url`'s audio as 48 kHz mono signed 16-bit samples.
pub fn grab_audio_s16(url: &str, seconds: u32) -> anyhow::Result<Vec<i16>> {
    let duration = seconds.to_string();
    let out = run_with_timeout(
        Command::new("ffmpeg").args([
            "-v", "error", "-i", url, "-t", &duration, "-vn", "-f", "s16le", "-ac", "1", "-ar",
            "48000", "-",
        ]),
        Duration::from_secs(u64::from(seconds) + 20),
    )?;
    Ok(out
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect())
}

/// RMS level of samples in dBFS (-inf for digital silence).
pub fn rms_dbfs(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return f64::NEG_INFINITY;
    }
    let sum: f64 = samples
        .iter()
        .map(|&s| (f64::from(s) / 32768.0).powi(2))
        .sum();
    10.0 * (sum / samples.len() as f64).log10()
}

/// One packet as ffprobe saw it on the wire.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Packet {
    pub video: bool,
    /// Presentation time in seconds.
    pub pts: f64,
    pub keyframe: bool,
}

/// Reads `seconds` of `url`'s video packets (timestamps and keyframe flags, no decoding).
pub fn video_packets(url: &str, seconds: u32) -> anyhow::Result<Vec<Packet>> {
    Ok(packets(url, seconds)?
        .into_iter()
        .filter(|p| p.video)
        .collect())
}

/// Reads `seconds` of `url`'s audio and video packets, in file order.
pub fn packets(url: &str, seconds: u32) -> anyhow::Result<Vec<Packet>> {
    let interval = format!("%+{seconds}");
    let out = run_with_timeout(
        Command::new("ffprobe").args([
            "-v",
            "error",
            "-show_entries",
            "packet=codec_type,pts_time,flags",
            "-of",
            "csv=p=0",
            "-read_intervals",
            &interval,
            url,
        ]),
        Duration::from_secs(u64::from(seconds) + 30),
    )?;
    Ok(parse_packets(&String::from_utf8_lossy(&out)))
}

fn parse_packets(csv: &str) -> Vec<Packet> {
    csv.lines()
        .filter_map(|line| {
            let mut fields = line.trim().split(',');
            let kind = fields.next()?;
            let pts = fields.next()?.parse().ok()?;
            let flags = fields.next()?;
            Some(Packet {
                video: kind == "video",
                pts,
                keyframe: flags.starts_with('K'),
            })
        })
        .collect()
}

/// Mean colour of the `w`x`h` region at (`x`,`y`) of a packed RGB24 frame `width` pixels wide.
pub fn mean_rgb(frame: &[u8], width: u32, x: u32, y: u32, w: u32, h: u32) -> [u8; 3] {
    let mut sum = [0u64; 3];
    let mut n = 0u64;
    for row in y..y + h {
        for col in x..x + w {
            let i = ((row * width + col) * 3) as usize;
            if i + 2 >= frame.len() {
                continue;
            }
            for (c, s) in sum.iter_mut().enumerate() {
                *s += u64::from(frame[i + c]);
            }
            n += 1;
        }
    }
    let n = n.max(1);
    [(sum[0] / n) as u8, (sum[1] / n) as u8, (sum[2] / n) as u8]
}

/// Whether every channel of `rgb` is within `tol` of `expected`.
pub fn close_to(rgb: [u8; 3], expected: [u8; 3], tol: u8) -> bool {
    rgb.iter().zip(expected).all(|(a, b)| a.abs_diff(b) <= tol)
}

#[cfg(test)]
mod packet_tests {
    #[test]
    fn parses_ffprobe_packet_csv() {
        let got = super::parse_packets(
            "video,0.033000,K__\naudio,0.040000,K_,\nvideo,0.066000,___\ngarbage\n",
        );
        assert_eq!(got.len(), 3);
        assert!(got[0].video && got[0].keyframe && !got[1].video && !got[2].keyframe);
        assert!((got[2].pts - 0.066).abs() < 1e-9);
    }
}

/// Runs a command, kills it after `timeout`, returns stdout on success.
fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> anyhow::Result<Vec<u8>> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn")?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut stderr = child.stderr.take().context("stderr")?;
    // Read both pipes on threads so a chatty child cannot block on a full pipe.
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = String::new();
        let _ = stderr.read_to_string(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("timed out after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    if !status.success() {
        bail!("exited with {status}: {}", err.trim());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ffprobe_json() {
        let json = br#"{"streams":[
            {"codec_type":"video","codec_name":"h264","width":1280,"height":720,
             "avg_frame_rate":"30/1","r_frame_rate":"30/1"},
            {"codec_type":"audio","codec_name":"aac","sample_rate":"48000"}]}"#;
        let info = parse_probe(json).unwrap();
        assert_eq!(info.video_codec, "h264");
        assert_eq!((info.width, info.height), (1280, 720));
        assert!((info.fps - 30.0).abs() < 1e-9);
        assert_eq!((info.audio_codec.as_str(), info.audio_rate), ("aac", 48000));
    }

    #[test]
    fn samples_a_region() {
        // 2x2 frame: red, green / blue, white.
        let frame = [255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255];
        assert_eq!(mean_rgb(&frame, 2, 0, 0, 1, 1), [255, 0, 0]);
        assert_eq!(mean_rgb(&frame, 2, 0, 1, 2, 1), [127, 127, 255]);
        assert!(close_to([250, 5, 3], [255, 0, 0], 10));
        assert!(!close_to([200, 5, 3], [255, 0, 0], 10));
    }
}
