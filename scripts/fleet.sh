#!/usr/bin/env bash
# A whole fleet on this one machine, for a demo or for poking at failover: a throwaway
# redis-server, N `costream worker`s on 127.0.0.2, 127.0.0.3, … (each loopback address stands in
# for a machine) and `costream serve --redis` on http://127.0.0.1:8080. Ctrl-C stops everything.
#   bash scripts/fleet.sh            3 workers
#   WORKERS=2 bash scripts/fleet.sh  2 workers
# Environment: REDIS_PORT (default 6390), WORKER_CORES (cores each worker offers, default 1),
# COSTREAM_BIN (skip the build, use that binary). Extra arguments go to `costream serve`.
# Try: `kill -9` a worker's pid (printed below) while a room is live, and watch the room's
# status name another worker (`mixer.worker`) within a second or two.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS="${WORKERS:-3}"
REDIS_PORT="${REDIS_PORT:-6390}"
WORKER_CORES="${WORKER_CORES:-1}"
bash scripts/setup.sh
if ! command -v redis-server >/dev/null; then
  echo "fleet.sh: installing redis-server"
  sudo_cmd=(); [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends redis-server
  # Debian starts a system Redis on 6379; this script runs its own.
  if command -v systemctl >/dev/null; then "${sudo_cmd[@]}" systemctl stop redis-server 2>/dev/null || true; fi
fi
if [[ -n "${COSTREAM_BIN:-}" ]]; then
  BIN="$COSTREAM_BIN"
else
  cargo build --release --locked --bin costream
  BIN="${CARGO_TARGET_DIR:-target}/release/costream"
fi

DIR="$(mktemp -d)"
pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -CONT "$pid" 2>/dev/null || true; kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  --dir "$DIR" >"$DIR/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
REDIS="redis://127.0.0.1:$REDIS_PORT"
echo "fleet.sh: redis $REDIS (pid ${pids[0]})"

for i in $(seq 1 "$WORKERS"); do
  ip="127.0.0.$((i + 1))"
  "$BIN" worker --redis "$REDIS" --advertise-ip "$ip" --worker-id "worker-$i" \
    --capacity-cores "$WORKER_CORES" --warm 1 &
  pids+=($!)
  echo "fleet.sh: worker-$i on $ip (pid $!)"
done

"$BIN" serve --redis "$REDIS" "$@" &
serve_pid=$!
pids+=("$serve_pid")
echo "fleet.sh: serve (pid $serve_pid); the fleet: curl -s http://127.0.0.1:8080/api/v1/pool"
# Workers may be killed on purpose (that is the demo); the fleet ends with serve or Ctrl-C.
wait "$serve_pid" || true
echo "fleet.sh: serve exited; stopping the fleet"
