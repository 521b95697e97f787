//! The mixer pool: where mixer processes come from. Today every live room spawns its own child
//! process on this machine; admission by cost and the warm pool build on this.

mod process;

pub use process::{MixerProcess, MixerReport, SpawnError};
