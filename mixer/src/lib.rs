//! costream-mixer: everything GStreamer. One `costream mixer` process per live room receives the
//! room's RTP inputs, composites and mixes them, encodes once and pushes FLV over RTMP to every
//! output. serve drives it with the [`control`] protocol over stdio ([`process::run_stdio`]);
//! tests drive a [`Mixer`] in-process.

pub mod active_speaker;
pub mod bus;
pub mod colour;
mod connect_check;
pub mod control;
pub mod destination;
pub mod encoding;
pub mod error;
mod gst_util;
pub mod inputs;
pub mod keyframe;
pub mod layout;
pub mod looks;
pub mod mixer;
pub mod output_state;
mod outputs;
mod pipeline;
pub mod process;
pub mod program_quality;
mod quality_probe;
pub mod recording;
pub mod redact;
pub mod retry;
mod scene;
mod srt_output;
pub mod srt_url;
mod stills;
pub mod synth;
pub mod timecode;
pub mod timecode_probe;

pub use error::MixerError;
pub use inputs::InputSpec;
pub use mixer::Mixer;
pub use process::run_stdio;
pub use synth::{EncodedFrame, SynthVideo, SynthVideoSpec};
