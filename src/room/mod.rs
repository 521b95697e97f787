//! Rooms: pure state ([`state`]), its JSON view ([`status`]), tokens, and the actor that does
//! the IO for one room.

pub mod actor;
pub mod durable;
pub mod guest_list;
pub mod join_requests;
pub mod lifetime;
mod media;
pub mod meter;
pub mod quality;
mod recorder;
pub mod recovery;
pub mod registry;
pub mod state;
pub mod status;
pub mod tokens;

pub use actor::{EventStreamSlot, RecordingsAccess, RoomHandle, RoomRuntime};
pub use recorder::{Recorder, RecordingPhase, RecordingStatus};
pub use registry::Rooms;
