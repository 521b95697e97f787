//! The seam between a room and wherever its mixer runs.
//!
//! A room asks a [`MixerBackend`] for capacity (admission by cost) and for a mixer
//! ([`MixerBackend::launch`]), and then talks to that mixer through a [`MixerLink`]. Two
//! backends implement it: the embedded pool ([`super::MixerPool`], mixers are children of serve,
//! the default) and the fleet (`crate::fleet`, mixers run on `costream worker`s placed through
//! Redis). The room never knows which: its events arrive as [`MixerReport`]s either way, tagged
//! with the epoch the room gave the launch, and a link that goes quiet or away is a crash the
//! room already knows how to recover from.

use std::time::Duration;

use costream_mixer::control::{Command, VideoSpec};
use tokio::sync::{mpsc, watch};

use super::{MixerReport, PoolView, Refusal};

/// Capacity and mixers for rooms. Shared by every room of a server.
pub trait MixerBackend: Send + Sync + 'static {
    /// Admission: whether `room_id` may go live with `video` and `inputs` participants now; if
    /// so its cost (millicores) is held for it until [`MixerBackend::release`]. Never blocks on
    /// the network: a fleet decides from its last view of the workers.
    fn admit(&self, room_id: &str, video: &VideoSpec, inputs: u32) -> Result<u64, Refusal>;

    /// Re-charges a live room whose participants changed (never refused).
    fn resize(&self, room_id: &str, video: &VideoSpec, inputs: u32);

    /// The room stopped being live: its share is free again.
    fn release(&self, room_id: &str);

    /// Cores held by `room_id` while it is live.
    fn cost_of(&self, room_id: &str) -> Option<f64>;

    /// A mixer for an admitted room. Returns at once; a mixer that cannot be had (no process,
    /// no worker) reports [`MixerReport::Exited`] with the reason, like a crash.
    fn launch(
        &self,
        room_id: &str,
        epoch: u64,
        reports: mpsc::Sender<MixerReport>,
    ) -> Result<Box<dyn MixerLink>, LaunchError>;

    /// `GET /api/v1/pool`.
    fn view(&self) -> PoolView;

    /// Stops admitting (SIGTERM): `/readyz` says 503, creating rooms and going live too.
    fn start_draining(&self);

    fn is_draining(&self) -> bool;

    /// The number of rooms holding capacity (drain waits for 0).
    fn live_rooms(&self) -> watch::Receiver<usize>;

    /// Ends idle resources (warm mixers) at shutdown.
    fn shutdown(&self);
}

/// A room's mixer, wherever it runs. Dropping the link kills the mixer (no orphans).
pub trait MixerLink: Send {
    /// The room's epoch for this mixer: every report from it carries this number.
    fn epoch(&self) -> u64;

    /// Queues a command; false when the mixer is gone or hopelessly behind.
    fn send(&self, command: Command) -> bool;

    /// Asks the mixer to shut down cleanly, and kills it if it has not after `grace`.
    fn stop(self: Box<Self>, grace: Duration);

    /// serve is shutting down and the room is stored: a mixer that can outlive this process (on
    /// a fleet worker) is left running for the next serve to take over. A local mixer cannot
    /// (it dies with serve): it is stopped.
    fn detach(self: Box<Self>, grace: Duration) {
        self.stop(grace);
    }

    /// What the room status shows about this mixer.
    fn info(&self) -> MixerInfo;
}

/// Identity of a running mixer, for the room status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MixerInfo {
    /// OS process id (on the worker's machine, for a fleet).
    pub pid: Option<u32>,
    pub binary: Option<String>,
    /// Came warm from a pool (false: started cold for this room).
    pub warm: Option<bool>,
    /// The fleet worker running it (`None`: embedded in this serve).
    pub worker: Option<String>,
}

/// Why no mixer could be started for a room.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Spawn(#[from] super::SpawnError),
    /// A fleet had no worker for the room.
    #[error("{0}")]
    NoWorker(String),
}
