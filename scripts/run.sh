#!/usr/bin/env bash
# README command 1: set up this machine, build, and start `costream serve` on
# http://127.0.0.1:8080 with the embedded defaults. Extra arguments go to `costream serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked --bin costream
exec ./target/release/costream serve "$@"
