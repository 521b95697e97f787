//! costream: real-time multi-party live-stream mixing server.
//!
//! `serve` terminates WebRTC (via `costream-ingest`), runs the API and owns rooms; each live
//! room gets a `costream mixer` child process (via `costream-mixer`) that composites everyone
//! and pushes RTMP. This crate is the only place that knows both libraries. With a fleet
//! (`serve --redis`), the mixers run on `costream worker`s instead, placed through Redis.

pub mod access;
pub mod api;
pub mod cli;
pub mod client_addr;
pub mod config;
pub mod fleet;
/// Fuzz harnesses (`fuzz/`, `tests/fuzz_smoke.rs`): not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod http_server;
pub mod nodes;
pub mod origin;
pub mod per_ip;
pub mod pool;
pub mod proc_stats;
pub mod publish;
pub mod recordings;
pub mod room;
pub mod serve;
pub mod store;
pub mod telemetry;
pub mod webhooks;
