#!/usr/bin/env bash
# Installs everything costream needs on a fresh Debian 12 machine. Idempotent: a machine that
# already has every package does no apt work at all, so the README commands stay fast.
#   scripts/setup.sh          build + runtime packages (what `costream serve` needs)
#   scripts/setup.sh --test   also the test tools (nginx-rtmp, ffmpeg, valgrind, python3, Chromium
#                             + the pinned playwright-core in tests/browser via `npm ci`, the
#                             pinned schemathesis in a venv under ~/.cache/costream)
set -euo pipefail

build_and_runtime=(
  pkg-config cmake build-essential libssl-dev
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-nice gstreamer1.0-tools
  gstreamer1.0-x fonts-dejavu-core
  libopus-dev
)
# redis-server: the fleet tests (each runs its own throwaway server; the fleet is opt-in).
# valgrind + python3: the benchmark (tests/bench_harness.rs runs its smoke mode); the chart
# needs python3-matplotlib, which benches/run.sh installs itself for a full run.
# python3-venv: schemathesis (tests/openapi.rs) gets a venv of its own.
test_tools=(nginx libnginx-mod-rtmp ffmpeg chromium valgrind python3 python3-jwt python3-venv redis-server)

testing=false
[[ "${1:-}" == "--test" ]] && testing=true

wanted=("${build_and_runtime[@]}")
if $testing; then
  wanted+=("${test_tools[@]}")
  # The browser tests' driver runs on node; any node >= 20 already here will do.
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    wanted+=(nodejs npm)
  fi
fi

# The browser tests drive Debian's Chromium with the npm package pinned in
# tests/browser/package-lock.json (never `playwright install`: no browser download).
install_browser_driver() {
  local dir
  dir="$(cd "$(dirname "$0")/.." && pwd)/tests/browser"
  local stamp="$dir/node_modules/.costream-lock"
  if [[ -f "$stamp" ]] && cmp -s "$dir/package-lock.json" "$stamp"; then
    return
  fi
  echo "setup: npm ci in tests/browser"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$dir/package-lock.json" "$stamp"
}

missing=()
for pkg in "${wanted[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

# tests/k8s_manifests.rs validates docker/k8s/ against the Kubernetes API models of the
# `kubernetes` Python package (pinned; from PyPI).
install_k8s_models() {
  local want="37.0.2"
  if python3 -c "import kubernetes, sys; sys.exit(kubernetes.__version__ != '$want')" 2>/dev/null; then
    return
  fi
  echo "setup: pip install kubernetes==$want"
  python3 -m pip install --quiet --disable-pip-version-check "kubernetes==$want" 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages "kubernetes==$want"
}

# tests/openapi.rs checks GET /api/v1/openapi.json against a running serve with schemathesis
# (pinned; from PyPI), in a venv of its own so its dependencies never touch the system's Python.
# The test looks for it at exactly this path.
install_schemathesis() {
  local want="4.32.5"
  local venv="$HOME/.cache/costream/schemathesis-$want"
  if "$venv/bin/schemathesis" --version 2>/dev/null | grep -qF "$want"; then
    return
  fi
  echo "setup: pip install schemathesis==$want into $venv"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$want"
}

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#wanted[@]} packages present"
  if $testing; then install_browser_driver; install_k8s_models; install_schemathesis; fi
  exit 0
fi

echo "setup: installing ${missing[*]}"
sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
# nginx's Debian package starts a system service on port 80; tests run their own nginx.
if command -v systemctl >/dev/null && systemctl is-active --quiet nginx 2>/dev/null; then
  "${sudo_cmd[@]}" systemctl stop nginx || true
fi
# So does redis-server's, on 6379; the fleet tests and scripts/fleet.sh start their own.
if command -v systemctl >/dev/null && systemctl is-active --quiet redis-server 2>/dev/null; then
  "${sudo_cmd[@]}" systemctl stop redis-server || true
fi
if $testing; then install_browser_driver; install_k8s_models; install_schemathesis; fi
echo "setup: done"
