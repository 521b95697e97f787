//! A continuous sine tone in 20 ms frames (pure: no clock, no IO).

/// 48 kHz mono, 20 ms per frame: what Opus over WebRTC uses.
pub const SAMPLE_RATE: u32 = 48_000;
pub const FRAME_SAMPLES: usize = 960;

pub struct ToneGenerator {
    step: f32,
    phase: f32,
    amplitude: f32,
}

impl ToneGenerator {
    /// `frequency` 0 gives silence.
    pub fn new(frequency: f32, amplitude: f32) -> Self {
        Self {
            step: std::f32::consts::TAU * frequency / SAMPLE_RATE as f32,
            phase: 0.0,
            amplitude,
        }
    }

    /// The next 20 ms; the phase carries over so frames join without clicks.
    pub fn next_frame(&mut self) -> [i16; FRAME_SAMPLES] {
        let mut frame = [0i16; FRAME_SAMPLES];
        for sample in &mut frame {
            *sample = (self.phase.sin() * self.amplitude * i16::MAX as f32) as i16;
            self.phase = (self.phase + self.step) % std::f32::consts::TAU;
        }
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tone_has_its_frequency_and_is_continuous() {
        let mut tone = ToneGenerator::new(1000.0, 0.5);
        let a = tone.next_frame();
        let b = tone.next_frame();
        // 1 kHz over 20 ms = 20 periods = 40 sign changes per frame (± one at the edge).
        let crossings = a.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
        assert!((39..=41).contains(&crossings), "{crossings}");
        // No jump at the frame boundary: the step is at most one sample's slope.
        let jump = (b[0] as i32 - a[FRAME_SAMPLES - 1] as i32).abs();
        assert!(jump < 3000, "{jump}");
        assert!(a.iter().map(|s| s.unsigned_abs()).max().unwrap() > 16000);
    }

    #[test]
    fn zero_frequency_is_silence() {
        assert!(ToneGenerator::new(0.0, 1.0)
            .next_frame()
            .iter()
            .all(|&s| s == 0));
    }
}
