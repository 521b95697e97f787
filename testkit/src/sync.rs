//! A/V sync of a pulled-back stream: a synthetic source flashes white and beeps at the same
//! instants; ffmpeg reports per-frame brightness and per-5 ms loudness with their timestamps, and
//! the onsets are paired up. FLV carries audio and video on one millisecond timeline.

use std::process::Command;
use std::time::Duration;

use anyhow::Context;

/// Brightness (luma mean, 0–255) above which a frame counts as the flash.
const FLASH_LUMA: f64 = 128.0;
/// Loudness (RMS dBFS) above which a 5 ms chunk counts as the beep.
const BEEP_DB: f64 = -30.0;

/// Flash and beep onset times (seconds, stream timeline) in `seconds` of `url`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Onsets {
    pub flashes: Vec<f64>,
    pub beeps: Vec<f64>,
}

impl Onsets {
    /// Audio minus video for each flash with a beep within half a second (positive: the sound
    /// comes late).
    pub fn offsets(&self) -> Vec<f64> {
        self.flashes
            .iter()
            .filter_map(|&flash| {
                self.beeps
                    .iter()
                    .map(|&beep| beep - flash)
                    .filter(|d| d.abs() < 0.5)
                    .min_by(|a, b| a.abs().total_cmp(&b.abs()))
            })
            .collect()
    }
}

pub fn av_onsets(url: &str, seconds: u32) -> anyhow::Result<Onsets> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let video_log = dir.path().join("video.txt");
    let audio_log = dir.path().join("audio.txt");
    let graph = format!(
        "[0:v]scale=64:36,signalstats,metadata=print:key=lavfi.signalstats.YAVG:file={}[v];\
         [0:a]asetnsamples=n=240,astats=metadata=1:reset=1,\
         ametadata=print:key=lavfi.astats.Overall.RMS_level:file={}[a]",
        video_log.display(),
        audio_log.display()
    );
    let duration = seconds.to_string();
    let mut child = Command::new("ffmpeg")
        .args(["-v", "error", "-i", url, "-t", &duration])
        .args(["-filter_complex", &graph, "-map", "[v]", "-map", "[a]"])
        .args(["-f", "null", "-"])
        .spawn()
        .context("spawn ffmpeg")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(u64::from(seconds) + 30);
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::ensure!(status.success(), "ffmpeg failed: {status}");
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("ffmpeg did not finish");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let video = std::fs::read_to_string(&video_log).context("video metadata")?;
    let audio = std::fs::read_to_string(&audio_log).context("audio metadata")?;
    Ok(Onsets {
        flashes: rising_edges(&parse_metadata(&video), FLASH_LUMA),
        beeps: rising_edges(&parse_metadata(&audio), BEEP_DB),
    })
}

/// `(pts_time, value)` pairs from ffmpeg's `metadata=print` output: a `frame:… pts_time:T` line
/// followed by `key=value`.
fn parse_metadata(text: &str) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut time = None;
    for line in text.lines() {
        if let Some(pos) = line.find("pts_time:") {
            time = line[pos + "pts_time:".len()..]
                .split_whitespace()
                .next()
                .and_then(|t| t.parse::<f64>().ok());
        } else if let (Some(t), Some((_, v))) = (time, line.split_once('=')) {
            // "-inf" (digital silence) parses as -inf: below any threshold, as it should be.
            if let Ok(v) = v.trim().parse::<f64>() {
                out.push((t, v));
            }
        }
    }
    out
}

/// Times where the value crosses `threshold` upwards.
fn rising_edges(samples: &[(f64, f64)], threshold: f64) -> Vec<f64> {
    samples
        .windows(2)
        .filter(|w| w[0].1 <= threshold && w[1].1 > threshold)
        .map(|w| w[1].0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_metadata_and_pairs_onsets() {
        let video = "frame:0    pts:0       pts_time:0\nlavfi.signalstats.YAVG=16\n\
                     frame:1    pts:33      pts_time:0.033\nlavfi.signalstats.YAVG=235\n\
                     frame:2    pts:66      pts_time:0.066\nlavfi.signalstats.YAVG=235\n";
        let audio = "frame:0 pts:0 pts_time:0.02\nlavfi.astats.Overall.RMS_level=-inf\n\
                     frame:1 pts:1 pts_time:0.045\nlavfi.astats.Overall.RMS_level=-12.5\n";
        let onsets = Onsets {
            flashes: rising_edges(&parse_metadata(video), FLASH_LUMA),
            beeps: rising_edges(&parse_metadata(audio), BEEP_DB),
        };
        assert_eq!(onsets.flashes, vec![0.033]);
        assert_eq!(onsets.beeps, vec![0.045]);
        let offsets = onsets.offsets();
        assert!((offsets[0] - 0.012).abs() < 1e-9, "{offsets:?}");
    }
}
