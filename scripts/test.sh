#!/usr/bin/env bash
# README command 2: set up this machine (including the test tools: nginx-rtmp, ffmpeg) and run
# the whole test suite: formatting, lints, unit, pipeline and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo test --locked --workspace --no-fail-fast
