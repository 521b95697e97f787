//! What the Rust benchmarks share: flags, percentiles, and recording their keys in
//! `benches/results.json` (other keys kept).
// Each bench is its own crate and uses only some of these.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

/// `--name VALUE` from the command line, or `default`.
pub fn flag<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    Ok(std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(default))
}

/// The `p`-th percentile (nearest rank) of `samples`.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Milliseconds with one decimal.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// Prints `results` and merges them into `benches/results.json`.
pub fn record(results: BTreeMap<String, Value>) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&results)?);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/results.json");
    let mut all: BTreeMap<String, Value> = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    all.extend(results);
    std::fs::write(path, serde_json::to_string_pretty(&all)? + "\n")?;
    Ok(())
}
