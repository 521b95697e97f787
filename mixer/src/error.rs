//! The one error type of the mixer crate boundary.

/// Everything that can go wrong building or driving a mixer pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MixerError {
    /// GStreamer itself failed to initialise.
    #[error("GStreamer init failed: {0}")]
    Init(String),
    /// A GStreamer element factory is not installed (which plugin package is missing).
    #[error("GStreamer element `{factory}` is missing (install the plugin that provides it)")]
    MissingElement { factory: &'static str },
    /// Linking two elements or pads failed (caps mismatch or wrong pad).
    #[error("cannot link {from} -> {to}")]
    Link { from: String, to: String },
    /// A state change was refused or timed out.
    #[error("state change of {element} to {state} failed")]
    StateChange { element: String, state: String },
    /// An input id was used twice, or an unknown one was removed.
    #[error("input `{input_id}`: {reason}")]
    Input { input_id: String, reason: String },
    /// A request that makes no sense for the current state (e.g. a second Start).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Anything else GStreamer reported.
    #[error("GStreamer: {0}")]
    Gst(String),
}

impl From<gstreamer::glib::BoolError> for MixerError {
    fn from(e: gstreamer::glib::BoolError) -> Self {
        MixerError::Gst(e.to_string())
    }
}
