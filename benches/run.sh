#!/usr/bin/env bash
# The one command of the end-to-end benchmark (issue 5): builds the release binary, runs
# benches/e2e.py (real serve + mixer + WebRTC publishers + nginx-rtmp, bare gst-launch and
# ffmpeg baselines, capacity), benches/callgrind.sh (instruction count) and benches/report.py,
# which write benches/results.json and benches/RESULTS.md (+ chart.png).
#   bash benches/run.sh            full run (~15 min on 2 cores)
#   bash benches/run.sh --quick    short run (~4 min): results-quick.json / RESULTS-quick.md
#   bash benches/run.sh --smoke    under a minute, 1 room, numbers meaningless: proves the
#                                  harness works (tests/bench_harness.rs runs it)
# Environment: COSTREAM_BIN=path skips the build and uses that binary; BENCH_OUT=dir writes
# the results there instead of benches/. Extra flags go to e2e.py, e.g. --phases room,bare
# --max-rooms 3. Missing tools: scripts/setup.sh --test installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=""
for a in "$@"; do
  case "$a" in --quick | --smoke) MODE="$a" ;; esac
done
OUT="${BENCH_OUT:-benches}"
if [ -n "${COSTREAM_BIN:-}" ]; then
  BIN="$COSTREAM_BIN"
else
  cargo build --release --locked --bin costream
  BIN="${CARGO_TARGET_DIR:-target}/release/costream"
fi
for tool in nginx ffmpeg ffprobe gst-launch-1.0 valgrind python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/setup.sh --test"; exit 1; }
done

# The chart needs matplotlib: use a python3 that has it (pyenv shims may shadow the system
# one that apt's python3-matplotlib goes into), else install it.
PY=""
for p in python3 /usr/bin/python3; do
  if command -v "$p" >/dev/null && "$p" -c 'import matplotlib' 2>/dev/null; then PY="$p"; break; fi
done
if [ -z "$PY" ] && [ -z "$MODE" ]; then
  echo "installing matplotlib for the chart"
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-matplotlib >/dev/null || true
  fi
  /usr/bin/python3 -c 'import matplotlib' 2>/dev/null && PY=/usr/bin/python3
  if [ -z "$PY" ]; then
    python3 -m pip install --quiet --user matplotlib >/dev/null 2>&1 || true
    python3 -c 'import matplotlib' 2>/dev/null && PY=python3
  fi
  [ -n "$PY" ] || echo "matplotlib not available: RESULTS.md without the chart"
fi
PY="${PY:-python3}"

mkdir -p "$OUT"
if [ "$MODE" = "--smoke" ]; then
  # The instruction count does not depend on load, so in the smoke run it goes alongside
  # e2e.py to stay short.
  bash benches/callgrind.sh --smoke --out "$OUT" >"$OUT/callgrind-smoke.log" 2>&1 &
  CG=$!
  python3 benches/e2e.py --bin "$BIN" --out "$OUT" "$@"
  wait "$CG" || { cat "$OUT/callgrind-smoke.log"; exit 1; }
else
  python3 benches/e2e.py --bin "$BIN" --out "$OUT" "$@"
  bash benches/callgrind.sh $MODE --out "$OUT" ||
    echo "callgrind step failed: instructions_per_frame stays null"
fi
"$PY" benches/report.py $MODE --out "$OUT"
