//! `--replay-secs`: a short recording of the synthetic encoder's output sent in a loop, so
//! benchmark publishers stand in for remote browsers without running an encoder here.

use std::time::Duration;

use costream_mixer::synth::EncodedFrame;

/// The recorded frames and where the loop is.
pub struct ReplayLoop {
    frames: Vec<EncodedFrame>,
    next: usize,
}

impl ReplayLoop {
    /// Keeps `frames` from their first keyframe on (a loop must start where a decoder can);
    /// None if there is no keyframe.
    pub fn new(mut frames: Vec<EncodedFrame>) -> Option<ReplayLoop> {
        let first_key = frames.iter().position(|f| f.keyframe)?;
        frames.drain(..first_key);
        Some(ReplayLoop { frames, next: 0 })
    }

    /// The frame to send now; after the last one the loop starts over at the keyframe.
    pub fn next_frame(&mut self) -> &EncodedFrame {
        let frame = &self.frames[self.next];
        self.next = (self.next + 1) % self.frames.len();
        frame
    }

    /// Answer to a keyframe request: the next frame sent is the loop's first (a keyframe).
    pub fn restart(&mut self) {
        self.next = 0;
    }

    /// The recording's frame period (the keyframe's duration; the encoder's is constant).
    pub fn frame_duration(&self) -> Duration {
        self.frames[0].duration
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(id: u8, keyframe: bool) -> EncodedFrame {
        EncodedFrame {
            data: vec![id],
            duration: Duration::from_millis(33),
            keyframe,
        }
    }

    #[test]
    fn loops_from_the_first_keyframe_and_restarts_on_request() {
        let mut replay =
            ReplayLoop::new(vec![frame(0, false), frame(1, true), frame(2, false)]).unwrap();
        assert_eq!(replay.len(), 2);
        assert_eq!(replay.frame_duration(), Duration::from_millis(33));
        let sent: Vec<u8> = (0..5).map(|_| replay.next_frame().data[0]).collect();
        assert_eq!(sent, [1, 2, 1, 2, 1]);
        replay.restart();
        assert!(replay.next_frame().keyframe);
    }

    #[test]
    fn no_keyframe_no_loop() {
        assert!(ReplayLoop::new(vec![frame(0, false)]).is_none());
        assert!(ReplayLoop::new(Vec::new()).is_none());
    }
}
