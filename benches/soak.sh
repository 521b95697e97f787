#!/usr/bin/env bash
# Soak (issue 14): two live rooms with guests churning, layout/look changes and an output added
# and removed, sampling serve's and the mixers' RSS, fds and threads (benches/soak.py).
#   bash benches/soak.sh                 60 min on the release binary; records soak_* keys in
#                                        benches/results.json
#   bash benches/soak.sh --minutes 2     a short run (figures printed, not recorded)
# Environment: COSTREAM_BIN=path skips the build. Extra flags go to soak.py (--out FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${COSTREAM_BIN:-}" ]; then
  BIN="$COSTREAM_BIN"
else
  cargo build --release --locked --bin costream
  BIN="${CARGO_TARGET_DIR:-target}/release/costream"
fi
for tool in nginx python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/setup.sh --test"; exit 1; }
done
if [ "$#" -eq 0 ]; then
  exec python3 benches/soak.py --binary "$BIN" --minutes 60 --record
fi
exec python3 benches/soak.py --binary "$BIN" "$@"
