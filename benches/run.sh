#!/usr/bin/env bash
# The one command of the end-to-end benchmark (issue 5): builds the release binary, runs
# benches/e2e.py (real serve + mixer + WebRTC publishers + nginx-rtmp, bare gst-launch and
# ffmpeg baselines, capacity), then benches/callgrind.sh (instruction count) and
# benches/report.py, which write benches/results.json and benches/RESULTS.md (+ chart.png).
#   bash benches/run.sh            full run (~10 min on 2 cores)
#   bash benches/run.sh --quick    short smoke run (~2 min): results-quick.json / RESULTS-quick.md
# Extra flags go to e2e.py, e.g. --phases room,bare --max-rooms 3.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin costream
BIN="${CARGO_TARGET_DIR:-target}/release/costream"
for tool in nginx ffmpeg ffprobe gst-launch-1.0; do
  command -v "$tool" >/dev/null || { echo "missing $tool (see README: test packages)"; exit 1; }
done
if ! python3 -c 'import matplotlib' 2>/dev/null; then
  # The chart only; everything else runs without it.
  (apt-get install -y python3-matplotlib >/dev/null 2>&1 || true)
fi
QUICK=""
for a in "$@"; do [ "$a" = "--quick" ] && QUICK="--quick"; done
python3 benches/e2e.py --bin "$BIN" "$@"
if command -v valgrind >/dev/null; then
  bash benches/callgrind.sh "$BIN" $QUICK || echo "callgrind step failed: instructions_per_frame stays null"
fi
python3 benches/report.py $QUICK
