#!/usr/bin/env python3
"""End-to-end capacity and latency benchmark of costream (issue 5).

What it measures, and why: users choose a mixer by what a room costs and by how late the
picture is, so this drives the REAL release `costream serve` + `costream mixer` processes with
real WebRTC (WHIP) publishers (`costream publish`) into a loopback nginx-rtmp, and compares the
mixer with the two pipelines people would otherwise run (a bare `gst-launch-1.0` doing the same
depay/decode/composite/encode/mux, and an ffmpeg `filter_complex` + libx264 command), fed with
the same kind of media, in the same run.

Reference room R4: host 1280x720 + 3 guests 640x360, VP8 + Opus, picture-in-picture (host
pinned), output 1280x720@30 x264 veryfast zerolatency CBR 2.5 Mbit/s, 2 s GOP, AAC 128 kbit/s,
FLV over RTMP. Publishers send a scrolling SMPTE pattern (solid colours are almost free to
encode) with the capture time burnt in as a block barcode (mixer/src/timecode.rs); a reader
(ffmpeg decoding the RTMP output at nginx) decodes it and compares it with the clock.

Phases (each prints what it does; numbers go to benches/results.json, see benches/RESULTS.md):
  golive   go live -> first FLV byte at nginx (/stat bytes_in), cold (pool.warm = 0) and warm
  room     one R4 room built guest by guest: join->visible per guest, mixer CPU and latency
           per number of guests (the chart), then a steady R4 window: CPU, RSS, latency
  bare     the same composite as a bare gst-launch pipeline fed RTP by a generator process
  ffmpeg   the same composite as an ffmpeg filter_complex + libx264 pipeline, same generator
  capacity 1..N concurrent R4 rooms, output frames counted at nginx; the largest N with
           < 0.1 % frames missing or late

Usage: benches/e2e.py --bin target/release/costream [--quick | --smoke] [--out benches]
Run it through `bash benches/run.sh [--quick | --smoke]`, which builds release first.
  (full)   windows of 30 s, 5 go-live samples, 10 join samples, capacity up to --max-rooms
  --quick  windows of 5 s, 1-2 rooms (~3 min): results-quick.json
  --smoke  windows of 1-2 s, 1 room (well under a minute): results-smoke.json; proves the
           harness runs end to end (tests/bench_harness.rs); its numbers mean little
"""

import argparse
import datetime
import glob
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

# --- the barcode (must match mixer/src/timecode.rs) -------------------------------------------
BLOCKS, DATA_BITS, CHECK_BITS, STRIP_DIVISOR = 32, 24, 6, 12
MODULUS = 1 << DATA_BITS

W, H, FPS = 1280, 720, 30
GUEST_W, GUEST_H = 640, 360
# pip tiles for 3 guests on 1280x720 (mixer/src/layout/pip.rs: 320x180, margin 24, right to left)
TILES = [(936, 516, 320, 180), (592, 516, 320, 180), (248, 516, 320, 180)]
SCROLL = 4  # px per frame of motion
REPLAY_SECS = 4  # capacity publishers: seconds encoded once, then looped


def checksum(v):
    """CRC-6 (x^6 + x + 1) of the 24-bit value, as mixer/src/timecode.rs."""
    crc = 0
    for i in range(DATA_BITS - 1, -1, -1):
        top = ((crc >> 5) & 1) ^ ((v >> i) & 1)
        crc = (crc << 1) & 0x3F
        if top:
            crc ^= 0x03
    return crc


def decode_strip(frame, x0, y0, w, h):
    """Decodes the barcode of a picture shown at (x0, y0, w, h) in a gray W x H frame."""
    strip_h = max(2, h // STRIP_DIVISOR)
    y = y0 + strip_h // 2
    bw = w / BLOCKS
    lum = []
    for b in range(BLOCKS):
        x = int(x0 + b * bw + bw / 2)
        row = y * W
        lum.append((frame[row + x - 1] + frame[row + x] + frame[row + x + 1]) / 3.0)
    white, black = lum[0], lum[1]
    if white - black < 60:
        return None
    thr = (white + black) / 2
    bits = [1 if v > thr else 0 for v in lum]
    value = 0
    for i in range(DATA_BITS):
        value = value << 1 | bits[2 + i]
    check = 0
    for i in range(CHECK_BITS):
        check = check << 1 | bits[2 + DATA_BITS + i]
    return value if check == checksum(value) else None


def now_ms():
    return time.time() * 1000.0


def age_ms(value, at_ms):
    """Age of a timecode `value` (ms mod 2^24) seen at wall time `at_ms`."""
    return (int(at_ms) - value) % MODULUS


def plausible(value, at_ms):
    """A decoded timecode only counts if it is at most 10 s old: a 6-bit CRC alone lets
    about 1 in 64 random pictures (SMPTE bars under a tile) through."""
    if value is None or age_ms(value, at_ms) > 10_000:
        return None
    return value


def pct(xs, p):
    if not xs:
        return None
    s = sorted(xs)
    k = min(len(s) - 1, max(0, int(round(p / 100.0 * (len(s) - 1)))))
    return round(s[k], 1)


def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, cond, timeout, step=0.02):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


# --- /proc ------------------------------------------------------------------------------------
CLK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """user+sys CPU seconds of a process (threads included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def rss_peak_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return None


class CpuWindow:
    def __init__(self, pids):
        self.pids = pids
        self.t0 = time.time()
        self.c0 = {p: cpu_seconds(p) for p in pids}

    def cores(self):
        """Cores used per wall (= media) second since start, per pid."""
        dt = time.time() - self.t0
        return {p: (cpu_seconds(p) - self.c0[p]) / dt for p in self.pids}


# --- nginx-rtmp -------------------------------------------------------------------------------
class Nginx:
    def __init__(self, tmp):
        self.dir = tempfile.mkdtemp(prefix="nginx-", dir=tmp)
        os.makedirs(f"{self.dir}/logs")
        self.rtmp_port, self.http_port = free_port(), free_port()
        conf = f"""load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off; master_process off; worker_processes 1;
pid {self.dir}/nginx.pid; error_log {self.dir}/logs/error.log warn;
events {{ worker_connections 1024; }}
rtmp {{ server {{ listen 127.0.0.1:{self.rtmp_port}; chunk_size 4096;
  application live {{ live on; record off; }} }} }}
http {{ access_log off; client_body_temp_path {self.dir}/b; proxy_temp_path {self.dir}/p;
  fastcgi_temp_path {self.dir}/f; uwsgi_temp_path {self.dir}/u; scgi_temp_path {self.dir}/s;
  server {{ listen 127.0.0.1:{self.http_port}; location /stat {{ rtmp_stat all; }} }} }}
"""
        with open(f"{self.dir}/nginx.conf", "w") as f:
            f.write(conf)
        self.proc = subprocess.Popen(
            ["nginx", "-c", f"{self.dir}/nginx.conf", "-p", self.dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def up():
            try:
                socket.create_connection(("127.0.0.1", self.rtmp_port), 0.2).close()
                return True
            except OSError:
                return False

        wait_until("nginx", up, 10)

    def url(self, key):
        return f"rtmp://127.0.0.1:{self.rtmp_port}/live/{key}"

    def bytes_in(self, key):
        try:
            xml = urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}/stat", timeout=2
            ).read().decode()
        except OSError:
            return 0
        m = re.search(
            r"<stream>\s*<name>" + re.escape(key) + r"</name>.*?<bytes_in>(\d+)</bytes_in>",
            xml,
            re.S,
        )
        return int(m.group(1)) if m else 0

    def stop(self):
        self.proc.terminate()
        self.proc.wait(5)


# --- costream serve + API ---------------------------------------------------------------------
class Serve:
    def __init__(self, binary, tmp, warm, capacity_cores, timecode_dir=None):
        self.binary = binary
        cfg = f"{tmp}/serve-warm{warm}.toml"
        with open(cfg, "w") as f:
            f.write(
                f"[pool]\nwarm = {warm}\ncapacity_cores = {capacity_cores}\n"
                "[origin]\nenabled = false\n"
            )
        self.log = open(f"{tmp}/serve-warm{warm}.log", "w")
        self.proc = subprocess.Popen(
            # Its own data dir: the room store must not restore another run's (or the user's) rooms.
            [binary, "serve", "--config", cfg, "--listen", "127.0.0.1:0",
             "--data-dir", f"{tmp}/data-warm{warm}"],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn"),
                 # Mixers inherit it: they log each decoded input frame's timecode there
                 # (mixer/src/timecode_probe.rs), which separates the mixer's own latency.
                 **({"COSTREAM_TIMECODE_LOG": timecode_dir} if timecode_dir else {})},
        )
        deadline = time.time() + 30
        self.base = None
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith("costream listening on "):
                self.base = line.split("costream listening on ", 1)[1].strip()
                break
        if not self.base:
            raise RuntimeError(f"serve did not start; see {self.log.name}")
        threading.Thread(target=lambda: self.proc.stdout.read(), daemon=True).start()

    def api(self, method, path, body=None, token=None, ok=(200, 201, 204)):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                text = r.read().decode()
                return json.loads(text) if text else None
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{method} {path}: {e.code} {e.read().decode()}") from None

    def stop(self):
        self.proc.send_signal(signal.SIGINT)  # second signal below stops a draining server
        time.sleep(0.3)
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Publisher:
    """A `costream publish` process; records the instant of its WHIP POST."""

    def __init__(self, binary, room, token, name, width, height, tone, replay=False):
        # Replay: 4 s encoded once, then looped: no encoder on this machine, like a remote
        # browser (no timecode then: it would repeat).
        timing = ["--replay-secs", str(REPLAY_SECS)] if replay else ["--timecode"]
        self.proc = subprocess.Popen(
            [
                binary, "publish", "--whip", room["whip_url"], "--name", name,
                "--width", str(width), "--height", str(height), "--pattern", "smpte",
                "--scroll", str(SCROLL), "--tone", str(tone),
            ] + timing,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "COSTREAM_TOKEN": token, "RUST_LOG": "error"},
        )
        self.post_ms = None
        deadline = time.time() + 30
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"publisher {name} exited")
            if line.startswith("whip_post_unix_ms "):
                self.post_ms = float(line.split()[1])
            if line.startswith("publishing"):
                break
        threading.Thread(target=lambda: self.proc.stdout.read(), daemon=True).start()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Room:
    """An R4 room (or part of it) pushing to nginx."""

    def __init__(self, serve, nginx, key):
        self.serve, self.nginx, self.key = serve, nginx, key
        self.info = serve.api("POST", "/api/v1/rooms",
                              {"name": key, "outputs": [{"url": nginx.url(key)}]})
        self.id = self.info["room_id"]
        self.pubs = []

    def status(self):
        # The host's view: the mixer's pid and the outputs' details are not public.
        return self.serve.api("GET", f"/api/v1/rooms/{self.id}", None, self.info["host_token"])

    def join(self, name, host, replay=False):
        w, h = (W, H) if host else (GUEST_W, GUEST_H)
        token = self.info["host_token" if host else "guest_token"]
        # Only the host's tone is audible: the active speaker must not move the pip around
        # (it is pinned anyway).
        pub = Publisher(self.serve.binary, self.info, token, name, w, h, 440 if host else 0,
                        replay)
        self.pubs.append(pub)
        want = len(self.pubs)
        wait_until(f"{name} tracks", lambda: sum(
            1 for p in self.status()["participants"] if len(p["tracks"]) >= 2) >= want, 30)
        return pub

    def pin_host(self):
        host = [p for p in self.status()["participants"] if p["role"] == "host"][0]
        self.serve.api("PUT", f"/api/v1/rooms/{self.id}/layout",
                       {"type": "pip", "pin": host["participant_id"]}, self.info["host_token"])

    def go_live(self):
        """POST live; returns ms until nginx saw the first FLV byte."""
        t0 = time.time()
        self.serve.api("POST", f"/api/v1/rooms/{self.id}/live", {}, self.info["host_token"])
        wait_until("first FLV byte", lambda: self.nginx.bytes_in(self.key) > 0, 30, 0.01)
        return (time.time() - t0) * 1000.0

    def stop_live(self):
        self.serve.api("DELETE", f"/api/v1/rooms/{self.id}/live", None, self.info["host_token"])
        wait_until("stream gone", lambda: self.nginx.bytes_in(self.key) == 0, 15, 0.05)

    def mixer_pid(self):
        return wait_until("mixer pid", lambda: self.status()["mixer"].get("pid"), 30)

    def end(self):
        for p in self.pubs:
            p.stop()
        try:
            self.serve.api("DELETE", f"/api/v1/rooms/{self.id}", None, self.info["host_token"])
        except RuntimeError:
            pass


# --- readers at nginx -------------------------------------------------------------------------
class Reader:
    """Decodes the RTMP output at nginx and reads the barcodes of the host (full frame) and of
    the three pip tiles. The decoder is GStreamer's (rtmp2src, flvdemux, avdec_h264 on one
    thread, no clock sync): the ffmpeg 5.1 CLI, even with -fflags nobuffer -flags low_delay,
    handed frames out 45-70 ms later (measured against the mixer's mux probe: 69 ms p50
    with ffmpeg, 46 ms with -fps_mode passthrough, 5.5 ms with this pipeline), which would
    have been counted as mixer latency."""

    def __init__(self, url):
        self.proc = subprocess.Popen(
            ["gst-launch-1.0", "-q", "rtmp2src", f"location={url}", "!", "flvdemux", "name=d",
             "d.audio", "!", "queue", "!", "fakesink", "sync=false", "async=false",
             "d.video", "!", "queue", "!", "h264parse", "!", "avdec_h264", "max-threads=1",
             "!", "videoconvert", "!", "video/x-raw,format=GRAY8", "!",
             "fdsink", "fd=1", "sync=false", "async=false"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
        self.lock = threading.Lock()
        self.host = []  # (arrival_ms, latency_ms, timecode)
        self.tiles_seen = [None, None, None]  # first arrival with a valid guest barcode
        self.tiles_now = [False, False, False]
        self.frames = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        size = W * H
        f = self.proc.stdout
        while True:
            buf = bytearray()
            while len(buf) < size:
                chunk = f.read(size - len(buf))
                if not chunk:
                    return
                buf += chunk
            t = now_ms()
            v = plausible(decode_strip(buf, 0, 0, W, H), t)
            tiles = [plausible(decode_strip(buf, x, y, w, h), t) is not None
                     for (x, y, w, h) in TILES]
            with self.lock:
                self.frames += 1
                if v is not None:
                    self.host.append((t, age_ms(v, t), v))
                for i, ok in enumerate(tiles):
                    self.tiles_now[i] = ok
                    if ok and self.tiles_seen[i] is None:
                        self.tiles_seen[i] = t

    def visible_guests(self):
        with self.lock:
            return sum(self.tiles_now)

    def latencies_since(self, t_ms):
        with self.lock:
            return [l for (t, l, _) in self.host if t >= t_ms]

    def host_frames_since(self, t_ms):
        """(arrival_ms, timecode) of the host frames decoded since `t_ms`."""
        with self.lock:
            return [(t, v) for (t, _, v) in self.host if t >= t_ms]

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class FrameCounter:
    """Counts output video frames at nginx without decoding (ffprobe packet list): for each
    frame its pts and wall arrival time."""

    def __init__(self, url):
        self.proc = subprocess.Popen(
            ["ffprobe", "-loglevel", "error", "-fflags", "nobuffer", "-select_streams", "v:0",
             "-show_entries", "packet=pts_time", "-of", "csv=p=0", url],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.lock = threading.Lock()
        self.frames = []  # (arrival_s, pts_s)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        for line in self.proc.stdout:
            try:
                pts = float(line.strip().split(",")[0])
            except ValueError:
                continue
            with self.lock:
                self.frames.append((time.time(), pts))

    def rate(self, seconds):
        """Frames that arrived in the last `seconds`, per second."""
        t = time.time()
        with self.lock:
            return sum(1 for (a, _) in self.frames if a >= t - seconds) / seconds

    def verdict(self, t0, t1):
        """Frames expected, missing (pts gaps) and late (arrival lag > 200 ms above the
        window's best) in [t0, t1)."""
        with self.lock:
            fr = [f for f in self.frames if t0 <= f[0] < t1]
        if len(fr) < 2:
            return {"expected": int((t1 - t0) * FPS), "received": len(fr),
                    "missing": int((t1 - t0) * FPS), "late": 0}
        pts = [p for (_, p) in fr]
        span = pts[-1] - pts[0]
        expected = int(round(span * FPS)) + 1
        missing = max(0, expected - len(fr))
        lags = [a - p for (a, p) in fr]
        best = min(lags)
        late = sum(1 for l in lags if l - best > 0.2)
        return {"expected": expected, "received": len(fr), "missing": missing, "late": late}

    def stop(self):
        self.proc.kill()
        self.proc.wait()


# --- the mixer's own share of the latency --------------------------------------------------
def mixer_input_times(tc_dir, name="host"):
    """timecode -> wall ms at which a mixer decoded that frame of participant `name` (from the
    logs mixer/src/timecode_probe.rs writes when COSTREAM_TIMECODE_LOG is set)."""
    out = {}
    for path in glob.glob(os.path.join(tc_dir, "mixer-*.tc")):
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3 and parts[2] == name:
                    try:
                        out.setdefault(int(parts[1]), float(parts[0]))
                    except ValueError:
                        pass
    return out


STAGES = ["host", "program", "encoded", "muxed"]


def mixer_stages(frames, tc_dir):
    """Where the mixer's share goes, per host frame seen at the reader: decode -> compositor
    out ("composite"), -> x264 out ("encode"), -> flvmux out ("mux"), -> reader ("deliver":
    tee, queue, RTMP, nginx, the reader's decode). {segment: [ms]}, only complete frames."""
    times = {s: mixer_input_times(tc_dir, s) for s in STAGES}
    names = ["composite", "encode", "mux", "deliver"]
    out = {n: [] for n in names}
    for (t, v) in frames:
        points = [times[s].get(v) for s in STAGES] + [t]
        if any(p is None for p in points):
            continue
        for n, a, b in zip(names, points, points[1:]):
            out[n].append(round(b - a, 1))
    return out


def mixer_latencies(frames, inputs):
    """For host frames seen at the reader [(arrival_ms, timecode)]: (mixer-added ms = arrival
    minus the mixer's decode of the same frame, input leg ms = that decode minus capture)."""
    added, leg = [], []
    for (t, v) in frames:
        m = inputs.get(v)
        if m is not None and 0 <= t - m < 10_000:
            added.append(t - m)
            leg.append(age_ms(v, m))
    return added, leg


# --- bare pipelines (generator + gst-launch / ffmpeg) -----------------------------------------
PARTS = [("host", W, H, 440)] + [(f"guest{i}", GUEST_W, GUEST_H, 0) for i in (1, 2, 3)]


def generator(ports):
    """One gst-launch process encoding the same kind of media the publishers send (SMPTE
    scrolling SCROLL px/frame, VP8 deadline=1 cpu-used=8 error-resilient, 2 s GOP; Opus 20 ms)
    and sending RTP to UDP `ports` [(video, audio)] -- the RTP a mixer input receives."""
    args = ["gst-launch-1.0", "-q"]
    for (name, w, h, tone), (vp, ap) in zip(PARTS, ports):
        args += (f"videotestsrc is-live=true pattern=smpte horizontal-speed={SCROLL} ! "
                 f"video/x-raw,format=I420,width={w},height={h},framerate={FPS}/1 ! "
                 "vp8enc deadline=1 cpu-used=8 keyframe-max-dist=60 error-resilient=default ! "
                 f"rtpvp8pay pt=96 mtu=1200 ! udpsink host=127.0.0.1 port={vp} sync=false "
                 f"audiotestsrc is-live=true wave=sine freq={max(tone, 1)} "
                 f"volume={0.3 if tone else 0.0} ! audio/x-raw,rate=48000,channels=1 ! "
                 "opusenc frame-size=20 ! rtpopuspay pt=111 ! "
                 f"udpsink host=127.0.0.1 port={ap} sync=false ").split()
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def bare_gst(ports, url):
    """The mixer's job with nothing else: jitterbuffer, depay, decode, compositor (pip
    positions), x264 with the mixer's settings, AAC, flvmux, rtmp2sink."""
    rects = [(0, 0, W, H)] + TILES
    pads = " ".join(
        f"sink_{i}::xpos={x} sink_{i}::ypos={y} sink_{i}::width={w} "
        f"sink_{i}::height={h} sink_{i}::zorder={1 if i == 0 else 2}"
        for i, (x, y, w, h) in enumerate(rects))
    p = (f"compositor name=comp background=black {pads} ! "
         f"video/x-raw,format=I420,width={W},height={H},framerate={FPS}/1 ! "
         "queue max-size-buffers=3 max-size-bytes=0 max-size-time=0 ! "
         "x264enc tune=zerolatency speed-preset=veryfast pass=cbr bitrate=2500 key-int-max=60 "
         "option-string=scenecut=0 vbv-buf-capacity=1000 threads=1 ! "
         "video/x-h264,profile=high ! h264parse ! flvmux name=mux streamable=true ! "
         f"rtmp2sink location={url} async-connect=true sync=false "
         "audiomixer name=amix ! audioconvert ! audioresample ! "
         "audio/x-raw,rate=48000,channels=2 ! avenc_aac bitrate=128000 ! aacparse ! mux. ")
    for i, (vp, ap) in enumerate(ports):
        p += (f"udpsrc address=127.0.0.1 port={vp} caps=\"application/x-rtp,media=video,"
              "encoding-name=VP8,clock-rate=90000,payload=96\" ! rtpjitterbuffer latency=80 ! "
              "rtpvp8depay ! avdec_vp8 max-threads=1 output-corrupt=false ! videoconvert ! "
              f"comp.sink_{i} "
              f"udpsrc address=127.0.0.1 port={ap} caps=\"application/x-rtp,media=audio,"
              "encoding-name=OPUS,clock-rate=48000,payload=111\" ! rtpjitterbuffer latency=80 ! "
              "rtpopusdepay ! opusdec ! audioconvert ! audioresample ! amix. ")
    import shlex
    return subprocess.Popen(["gst-launch-1.0", "-q"] + shlex.split(p),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def media_files(tmp, seconds=20):
    """Pre-encoded copies of what the publishers send (SMPTE scrolling, VP8 with the
    publishers' settings, in WebM; Opus tone in Ogg), made once, for the ffmpeg baseline."""
    out = []
    for (name, w, h, tone) in PARTS:
        path = f"{tmp}/{name}.webm"
        subprocess.run(
            ["gst-launch-1.0", "-q", "webmmux", "name=m", "!", "filesink", f"location={path}",
             "videotestsrc", f"num-buffers={seconds * FPS}", "pattern=smpte",
             f"horizontal-speed={SCROLL}", "!",
             f"video/x-raw,format=I420,width={w},height={h},framerate={FPS}/1", "!",
             "vp8enc", "deadline=1", "cpu-used=8", "keyframe-max-dist=60",
             "error-resilient=default", "!", "m.",
             "audiotestsrc", f"num-buffers={seconds * 50}", "samplesperbuffer=960",
             f"freq={max(tone, 1)}", f"volume={0.3 if tone else 0.0}", "!",
             "audio/x-raw,rate=48000,channels=1", "!", "opusenc", "!", "m."],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out.append(path)
    return out


def bare_ffmpeg(files, url):
    """What many users hand-roll: one ffmpeg with a filter_complex (scale + overlay into the
    pip layout, amix) and libx264 with the mixer's settings. Its inputs are the pre-encoded
    files read at their native rate (-re, looped): ffmpeg's RTP/SDP input stalls for seconds
    after UDP loss on this loaded machine, so RTP would measure its recovery, not its cost."""
    inputs = []
    for f in files:
        inputs += ["-re", "-stream_loop", "-1", "-i", f]
    fc = "[0:v]null[b0];"
    last = "b0"
    for i, (x, y, w, h) in enumerate(TILES, start=1):
        fc += f"[{i}:v]scale={w}:{h}[s{i}];[{last}][s{i}]overlay={x}:{y}[b{i}];"
        last = f"b{i}"
    fc += f"[{last}]fps={FPS}[vout];[0:a][1:a][2:a][3:a]amix=inputs=4[aout]"
    args = (["ffmpeg", "-nostdin", "-loglevel", "error"] + inputs +
            ["-filter_complex", fc, "-map", "[vout]", "-map", "[aout]",
             "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
             "-b:v", "2500k", "-maxrate", "2500k", "-minrate", "2500k", "-bufsize", "1000k",
             "-g", str(2 * FPS), "-keyint_min", str(2 * FPS), "-sc_threshold", "0",
             "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-ar", "48000",
             "-f", "flv", url])
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def udp_ports(n):
    out = []
    for _ in range(n):
        out.append((free_port(), free_port()))
    return out


def measure_pipeline(name, start, nginx, key, warmup, window, rtp=True):
    """Starts a pipeline (returns its Popen), waits until its output at nginx runs at the full
    frame rate (ffmpeg needs several seconds to probe its 4 inputs and settle), then measures
    its CPU over `window` seconds, with a decoding reader attached as in the room phase."""
    ports = udp_ports(4)
    proc = start(ports)
    gen = generator(ports) if rtp else None
    try:
        wait_until(f"{name} output", lambda: nginx.bytes_in(key) > 0, 40, 0.1)
        counter = FrameCounter(nginx.url(key))
        reader = Reader(nginx.url(key))
        wait_until(f"{name} at {FPS} fps", lambda: counter.rate(2.0) >= FPS - 2, 60, 0.2)
        time.sleep(warmup)
        if proc.poll() is not None:
            raise RuntimeError(f"{name} pipeline exited")
        win = CpuWindow([proc.pid])
        t0 = time.time()
        time.sleep(window)
        cores = win.cores()[proc.pid]
        verdict = counter.verdict(t0, time.time())
        verdict["rss_mb"] = round(rss_peak_mb(proc.pid), 1)
        reader.stop()
        counter.stop()
        log(f"{name}: {cores:.3f} cores, output {verdict}")
        return cores, verdict
    finally:
        for p in (gen, proc):
            if p is None:
                continue
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


# --- phases -----------------------------------------------------------------------------------
def phase_golive(binary, tmp, nginx, reps):
    out = {}
    for warm, label in ((0, "cold"), (1, "warm")):
        serve = Serve(binary, tmp, warm, 64)
        samples = []
        try:
            room = Room(serve, nginx, f"golive{label}")
            room.join("host", True)
            for _ in range(reps):
                if warm:
                    wait_until("warm mixer", lambda: serve.api("GET", "/api/v1/pool")
                               ["warm_mixers"] >= 1, 30, 0.1)
                samples.append(room.go_live())
                room.stop_live()
            room.end()
        finally:
            serve.stop()
        log(f"go live -> first byte, {label}: {[round(s) for s in samples]} ms")
        out[label] = samples
    return out


class QualitySampler:
    """Polls the room status for the server's own quality figures (README "Quality figures")
    during a window, so the report puts them next to this benchmark's measurements."""

    def __init__(self, room):
        self.room, self.samples, self.stopping = room, [], False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                q = self.room.status().get("quality")
                if q:
                    self.samples.append(q)
            except RuntimeError:
                pass
            time.sleep(0.5)

    def stop(self):
        self.stopping = True
        self.thread.join()
        lat = [q["latency_ms"] for q in self.samples]
        av = [q["av_offset_ms"] for q in self.samples if q.get("av_offset_ms") is not None]
        return {"latency_ms": lat, "latency_max_ms": [q["latency_max_ms"] for q in self.samples],
                "av_offset_ms": av, "frozen_samples": sum(1 for q in self.samples if q["frozen"]),
                "black_samples": sum(1 for q in self.samples if q["black"]),
                "samples": len(self.samples)}


def reported_join_ms(room, pub_name):
    """The server's own join -> visible of the participant named `pub_name` (None if absent)."""
    def found():
        for p in room.status()["participants"]:
            if p["display_name"] == pub_name:
                return p.get("quality", {}).get("join_to_visible_ms")
        return None
    try:
        return wait_until(f"{pub_name} join->visible reported", found, 5, 0.1)
    except TimeoutError:
        return None


def phase_room(binary, tmp, nginx, step_window, steady_window, rejoins):
    tc_dir = tempfile.mkdtemp(prefix="timecodes-", dir=tmp)
    serve = Serve(binary, tmp, 1, 64, timecode_dir=tc_dir)
    res = {"per_guests": [], "join_ms": [], "reported_join_ms": []}
    try:
        room = Room(serve, nginx, "r4")
        room.join("host", True)
        room.pin_host()
        room.go_live()
        pid = room.mixer_pid()
        reader = Reader(nginx.url("r4"))
        wait_until("decoded host frames", lambda: len(reader.latencies_since(0)) > 10, 30)
        # The reader's probe (3 s of stream) comes out in a burst first: let it drain.
        time.sleep(4)

        def window(seconds):
            t = now_ms()
            win = CpuWindow([pid, serve.proc.pid])
            time.sleep(seconds)
            c = win.cores()
            # Frames still in flight at the end are matched once the reader has them.
            time.sleep(0.5)
            frames = [f for f in reader.host_frames_since(t) if f[0] < t + seconds * 1000]
            added, leg = mixer_latencies(frames, mixer_input_times(tc_dir))
            lat = [age_ms(v, at) for (at, v) in frames]
            stages = mixer_stages(frames, tc_dir)
            log("mixer stages p50/p95 ms: " + ", ".join(
                f"{k} {pct(v, 50)}/{pct(v, 95)}" for k, v in stages.items()))
            return c[pid], c[serve.proc.pid], lat, added, leg, stages

        for guests in range(0, 4):
            if guests > 0:
                pub = room.join(f"guest{guests}", False)
                wait_until(f"guest{guests} visible",
                           lambda: reader.visible_guests() >= guests, 30, 0.005)
                res["join_ms"].append(now_ms() - pub.post_ms)
                res["reported_join_ms"].append(reported_join_ms(room, f"guest{guests}"))
                time.sleep(1.0)
            mixer_c, serve_c, lat, added, _, _ = window(step_window)
            res["per_guests"].append({
                "guests": guests, "mixer_cores": round(mixer_c, 4),
                "serve_cores": round(serve_c, 4), "latency_p50_ms": pct(lat, 50),
                "latency_p95_ms": pct(lat, 95), "latency_samples": len(lat),
                "mixer_latency_p50_ms": pct(added, 50), "mixer_latency_p95_ms": pct(added, 95),
                "mixer_latency_samples": len(added)})
            log(f"{guests} guests: mixer {mixer_c:.3f} cores, serve {serve_c:.3f}, "
                f"glass-to-glass p50 {pct(lat, 50)} p95 {pct(lat, 95)} ms, mixer-added "
                f"p50 {pct(added, 50)} p95 {pct(added, 95)} ms ({len(added)} frames)")

        counter = FrameCounter(nginx.url("r4"))
        wait_until("counter", lambda: counter.rate(2.0) > 0, 30, 0.2)
        t0 = time.time()
        sampler = QualitySampler(room)
        mixer_c, serve_c, lat, added, leg, stages = window(steady_window)
        res["reported"] = sampler.stop()
        res["steady"] = {"mixer_cores": mixer_c, "serve_cores": serve_c, "latency": lat,
                         "mixer_latency": added, "input_leg": leg,
                         "mixer_stages": stages,
                         "output": counter.verdict(t0, t0 + steady_window)}
        counter.stop()
        log(f"R4 steady: mixer {mixer_c:.3f} cores, serve {serve_c:.3f}, glass-to-glass "
            f"p50 {pct(lat, 50)} p95 {pct(lat, 95)} ms ({len(lat)} frames), mixer-added p50 "
            f"{pct(added, 50)} p95 {pct(added, 95)} ms ({len(added)} frames), input leg p50 "
            f"{pct(leg, 50)} ms, output {res['steady']['output']}")

        # More join samples: the last guest leaves and joins again.
        for _ in range(rejoins):
            last = room.pubs.pop()
            last.stop()
            wait_until("guest gone", lambda: reader.visible_guests() <= 2, 30, 0.01)
            time.sleep(0.5)
            pub = room.join("guest3", False)
            wait_until("guest back", lambda: reader.visible_guests() >= 3, 30, 0.005)
            res["join_ms"].append(now_ms() - pub.post_ms)
            res["reported_join_ms"].append(reported_join_ms(room, "guest3"))
        log(f"join -> visible: {[round(j) for j in res['join_ms']]} ms; as serve reports it: "
            f"{res['reported_join_ms']} ms")
        rep = res["reported"]
        log(f"serve's own figures over the steady window ({rep['samples']} samples): mixer "
            f"latency p50 {pct(rep['latency_ms'], 50)} ms (max {max(rep['latency_max_ms'], default=None)}), "
            f"A/V offset p50 {pct(rep['av_offset_ms'], 50)} ms, frozen {rep['frozen_samples']}, "
            f"black {rep['black_samples']}")
        res["rss_mb"] = rss_peak_mb(pid)
        reader.stop()
        room.end()
    finally:
        serve.stop()
    return res


def phase_capacity(binary, tmp, nginx, max_rooms, warmup, window, replay=True):
    """N concurrent R4 rooms; frames counted at nginx. Publishers run on this machine too:
    with `replay` they loop 4 s encoded once (the encoders of remote browsers do not run on a
    mixing server), else each encodes live (~0.1 core each)."""
    results = []
    best = 0
    for n in range(1, max_rooms + 1):
        serve = Serve(binary, tmp, 1, 64)
        rooms, counters = [], []
        try:
            for r in range(n):
                room = Room(serve, nginx, f"cap{n}x{r}")
                room.join("host", True, replay)
                for g in (1, 2, 3):
                    room.join(f"guest{g}", False, replay)
                room.pin_host()
                room.go_live()
                rooms.append(room)
                counters.append(FrameCounter(nginx.url(room.key)))
            time.sleep(warmup)
            pids = [room.mixer_pid() for room in rooms]
            pub_pids = [p.proc.pid for room in rooms for p in room.pubs]
            win = CpuWindow(pids + pub_pids + [serve.proc.pid])
            t0 = time.time()
            time.sleep(window)
            t1 = time.time()
            cores = win.cores()
            verdicts = [c.verdict(t0, t1) for c in counters]
            bad = sum(v["missing"] + v["late"] for v in verdicts)
            exp = sum(v["expected"] for v in verdicts)
            ok = exp > 0 and bad / exp < 0.001
            results.append({"rooms": n, "ok": ok, "bad_frames": bad, "expected_frames": exp,
                            "verdicts": verdicts,
                            "mixer_cores": [round(cores[p], 3) for p in pids],
                            # What the same cores also ran: 4 publishers per room, and serve.
                            "publisher_cores": round(sum(cores[p] for p in pub_pids), 3),
                            "serve_cores": round(cores[serve.proc.pid], 3),
                            "rss_mb": [rss_peak_mb(p) for p in pids]})
            log(f"{n} rooms: {'real time' if ok else 'NOT real time'} "
                f"({bad}/{exp} frames missing or late) {verdicts}")
        finally:
            for c in counters:
                c.stop()
            for room in rooms:
                room.end()
            serve.stop()
        if ok:
            best = n
        else:
            break
    return best, results


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{platform.node()}: {os.cpu_count()} cores, {cpu}, Linux {platform.release()}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin")
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--quick", action="store_true", help="short windows, 1-2 rooms")
    ap.add_argument("--smoke", action="store_true", help="tiny windows, 1 room (CI)")
    ap.add_argument("--phases", default="golive,room,bare,ffmpeg,capacity")
    ap.add_argument("--max-rooms", type=int, default=4)
    ap.add_argument("--live-publishers", action="store_true",
                    help="capacity publishers encode live instead of replaying 4 s")
    ap.add_argument("--decode-file", help="decode one raw gray 1280x720 frame and exit "
                    "(tests: the reader agrees with mixer/src/timecode.rs)")
    a = ap.parse_args()
    if a.decode_file:
        with open(a.decode_file, "rb") as f:
            frame = f.read()
        host = decode_strip(frame, 0, 0, W, H)
        tiles = [decode_strip(frame, x, y, w, h) for (x, y, w, h) in TILES]
        print(json.dumps({"host": host, "tiles": tiles}))
        return 0
    if not a.bin:
        ap.error("--bin is required")
    mode = "smoke" if a.smoke else "quick" if a.quick else "full"
    # Per mode: go-live samples, room step / steady window and rejoins, baseline warm-up and
    # window, ffmpeg media seconds, capacity rooms / warm-up / window.
    m = {
        "full": dict(golive=5, step=10, steady=30, rejoins=7, warm=6, win=30, media=20,
                     rooms=a.max_rooms, cap_warm=8, cap_win=30),
        "quick": dict(golive=1, step=3, steady=5, rejoins=0, warm=3, win=5, media=20,
                      rooms=2, cap_warm=3, cap_win=5),
        "smoke": dict(golive=1, step=1, steady=2, rejoins=0, warm=1, win=2, media=4,
                      rooms=1, cap_warm=2, cap_win=2),
    }[mode]
    p95 = 95 if mode == "full" else 50  # one sample: its value
    phases = a.phases.split(",")
    tmp = tempfile.mkdtemp(prefix="costream-bench-")
    nginx = Nginx(tmp)
    load_before = os.getloadavg()
    raw = {"mode": mode}
    res = {}
    try:
        if "golive" in phases:
            g = phase_golive(a.bin, tmp, nginx, m["golive"])
            raw["golive"] = g
            res["golive_first_byte_cold_ms"] = pct(g["cold"], p95)
            res["golive_first_byte_warm_ms"] = pct(g["warm"], p95)
        if "room" in phases:
            r = phase_room(a.bin, tmp, nginx, m["step"], m["steady"], m["rejoins"])
            st = r["steady"]
            res["mixer_cpu_core_fraction"] = round(st["mixer_cores"], 4)
            res["serve_cpu_per_participant"] = round(st["serve_cores"] / 4, 4)
            res["glass_to_glass_p50_ms"] = pct(st["latency"], 50)
            res["glass_to_glass_p95_ms"] = pct(st["latency"], 95)
            res["mixer_latency_p50_ms"] = pct(st["mixer_latency"], 50)
            res["mixer_latency_p95_ms"] = pct(st["mixer_latency"], 95)
            res["input_leg_p50_ms"] = pct(st["input_leg"], 50)
            res["input_leg_p95_ms"] = pct(st["input_leg"], 95)
            for stage, ms in st["mixer_stages"].items():
                res[f"mixer_stage_{stage}_p50_ms"] = pct(ms, 50)
                res[f"mixer_stage_{stage}_p95_ms"] = pct(ms, 95)
            res["join_to_visible_p50_ms"] = pct(r["join_ms"], 50)
            res["join_to_visible_p95_ms"] = pct(r["join_ms"], p95)
            res["mixer_rss_mb"] = round(r["rss_mb"], 1) if r["rss_mb"] else None
            # The server's own figures (README "Quality figures") over the same window.
            rep = r["reported"]
            res["reported_mixer_latency_p50_ms"] = pct(rep["latency_ms"], 50)
            res["reported_mixer_latency_max_ms"] = max(rep["latency_max_ms"], default=None)
            res["reported_av_offset_p50_ms"] = pct(rep["av_offset_ms"], 50)
            res["reported_frozen_samples"] = rep["frozen_samples"]
            joins = [j for j in r["reported_join_ms"] if j is not None]
            res["reported_join_to_visible_p50_ms"] = pct(joins, 50)
            raw["per_guests"] = r["per_guests"]
            raw["r4_output"] = st["output"]
            raw["join_ms"] = [round(j, 1) for j in r["join_ms"]]
        if "bare" in phases:
            c, v = measure_pipeline("bare gst-launch", lambda p: bare_gst(p, nginx.url("bare")),
                                    nginx, "bare", m["warm"], m["win"])
            res["bare_cpu_core_fraction"] = round(c, 4)
            raw["bare_output"] = v
        if "ffmpeg" in phases:
            files = media_files(tmp, m["media"])
            c, v = measure_pipeline("ffmpeg", lambda _: bare_ffmpeg(files, nginx.url("ff")),
                                    nginx, "ff", m["warm"], m["win"], rtp=False)
            res["ffmpeg_cpu_core_fraction"] = round(c, 4)
            raw["ffmpeg_output"] = v
        mix = res.get("mixer_cpu_core_fraction")
        if mix and res.get("bare_cpu_core_fraction"):
            res["cpu_ratio_vs_bare"] = round(mix / res["bare_cpu_core_fraction"], 3)
        if mix and res.get("ffmpeg_cpu_core_fraction"):
            res["cpu_ratio_vs_ffmpeg"] = round(mix / res["ffmpeg_cpu_core_fraction"], 3)
        if "capacity" in phases:
            best, cap = phase_capacity(a.bin, tmp, nginx, m["rooms"], m["cap_warm"],
                                       m["cap_win"], replay=not a.live_publishers)
            res["rooms_realtime"] = best
            res["capacity_publishers"] = "live" if a.live_publishers else "replay"
            raw["capacity"] = cap
    finally:
        nginx.stop()
    # Not measured by this script (see RESULTS.md): filled by other steps or left null.
    for k in ("cpu_ratio_vs_bare", "cpu_ratio_vs_ffmpeg", "mixer_cpu_core_fraction",
              "mixer_latency_p50_ms", "mixer_latency_p95_ms", "glass_to_glass_p95_ms",
              "join_to_visible_p95_ms", "golive_first_byte_cold_ms", "golive_first_byte_warm_ms",
              "rooms_realtime", "mixer_rss_mb", "instructions_per_frame"):
        res.setdefault(k, None)
    res["machine"] = machine()
    res["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    res["load_average_at_start"] = [round(x, 2) for x in load_before]
    res["mode"] = mode
    os.makedirs(a.out, exist_ok=True)
    name = {"full": "results.json", "quick": "results-quick.json",
            "smoke": "results-smoke.json"}[mode]
    with open(os.path.join(a.out, name), "w") as f:
        json.dump(res, f, indent=2, sort_keys=True)
    with open(os.path.join(a.out, name.replace(".json", "-raw.json")), "w") as f:
        json.dump(raw, f, indent=1, default=str)
    print(json.dumps(res, indent=2, sort_keys=True))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
