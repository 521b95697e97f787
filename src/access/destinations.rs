//! Where a room may push its program: [`DestinationPolicy`] and the classification of
//! non-public addresses. They live in the mixer crate (`costream_mixer::destination`), which
//! applies the same policy again before every connection of an output (DNS may have changed
//! since the API checked it); this crate re-exports them, and uses them when an output is
//! added (`api::rooms`, the addresses resolved by the caller).

pub use costream_mixer::destination::{non_public, DestinationPolicy};
