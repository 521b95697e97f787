#!/usr/bin/env python3
"""Soak (issue 14): two live rooms with guests joining and leaving every few seconds, layout and
look changes, an output added and removed, for a configurable time. Samples RSS, open fds and
threads of serve and of every mixer every --sample-secs, and reports the growth per hour (least
squares over the samples after a warm-up), output reconnects and program frames.

  python3 benches/soak.py --binary target/release/costream --minutes 60 --record
  python3 benches/soak.py --binary target/debug/costream --minutes 2 --out /tmp/soak.json

--record merges the soak_* keys into benches/results.json (the 60-minute run); without it the
figures go to --out only. Real parts throughout: serve, its mixers, `costream publish` WebRTC
guests (replayed media, so they cost this machine little), nginx-rtmp as the CDN.
"""

import argparse
import json
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import Nginx, Publisher, Serve, log, wait_until  # noqa: E402


def proc_status(pid):
    """(rss_mb, threads) of a process from /proc/{pid}/status, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["VmRSS"].split()[0]) / 1024.0, int(fields["Threads"])
    except (OSError, KeyError, ValueError):
        return None


def open_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def children(pid):
    """Direct children of pid (serve's mixers)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            found.append(int(entry))
    return found


def slope_per_hour(points):
    """Least-squares slope of (seconds, value) points, per hour; 0 with fewer than 3."""
    if len(points) < 3:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    den = sum((t - mx) ** 2 for t, _ in points)
    if den == 0:
        return 0.0
    return sum((t - mx) * (v - my) for t, v in points) / den * 3600.0


class SoakRoom:
    def __init__(self, serve, nginx, binary, index):
        self.serve, self.nginx, self.binary, self.index = serve, nginx, binary, index
        self.key = f"soak{index}"
        created = serve.api(
            "POST",
            "/api/v1/rooms",
            {"name": f"soak {index}", "preset": "480p30", "outputs": [{"url": nginx.url(self.key)}]},
        )
        self.room = created
        self.id = created["room_id"]
        self.host = created["host_token"]
        self.guest_token = created["guest_token"]
        self.anchor = Publisher(binary, created, self.guest_token, f"anchor{index}", 320, 240, 440, replay=True)
        self.guest = None
        self.extra_output = None
        self.labels = False
        serve.api("POST", f"/api/v1/rooms/{self.id}/live", token=self.host)

    def status(self):
        return self.serve.api("GET", f"/api/v1/rooms/{self.id}", token=self.host)

    def churn_guest(self):
        if self.guest is None:
            self.guest = Publisher(self.binary, self.room, self.guest_token, f"guest{self.index}", 320, 240, 660, replay=True)
        else:
            self.guest.stop()
            self.guest = None

    def change_layout(self):
        layout = random.choice([{"type": "grid"}, {"type": "speaker"}, {"type": "pip"}])
        self.serve.api("PUT", f"/api/v1/rooms/{self.id}/layout", layout, token=self.host)

    def change_look(self):
        self.labels = not self.labels
        colour = random.choice(["#000000", "#102030", "#203040"])
        self.serve.api("PUT", f"/api/v1/rooms/{self.id}/look", {"labels": self.labels, "background": colour}, token=self.host)

    def toggle_output(self):
        if self.extra_output is None:
            out = self.serve.api("POST", f"/api/v1/rooms/{self.id}/outputs", {"url": self.nginx.url(self.key + "b")}, token=self.host)
            self.extra_output = out["output_id"]
        else:
            self.serve.api("DELETE", f"/api/v1/rooms/{self.id}/outputs/{self.extra_output}", token=self.host)
            self.extra_output = None

    def stop(self):
        for p in (self.guest, self.anchor):
            if p is not None:
                p.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--sample-secs", type=float, default=10.0)
    ap.add_argument("--warmup-secs", type=float, default=30.0, help="samples before this are not fitted")
    ap.add_argument("--out", help="write the figures here (JSON)")
    ap.add_argument("--record", action="store_true", help="merge soak_* keys into benches/results.json")
    args = ap.parse_args()
    random.seed(7)

    tmp = tempfile.mkdtemp(prefix="costream-soak-")
    nginx = Nginx(tmp)
    serve = Serve(args.binary, tmp, warm=1, capacity_cores=8)
    rooms = []
    samples = []
    try:
        rooms = [SoakRoom(serve, nginx, args.binary, i) for i in range(2)]
        for room in rooms:
            wait_until(f"room {room.index} live at nginx", lambda r=room: nginx.bytes_in(r.key) > 0, 60, 0.2)
        log(f"soak: 2 rooms live, running {args.minutes} min (samples every {args.sample_secs} s)")
        start = time.time()
        end = start + args.minutes * 60
        next_sample = start
        tick = 0
        while time.time() < end:
            now = time.time()
            if now >= next_sample:
                samples.append(sample(serve, rooms, now - start))
                next_sample += args.sample_secs
            # Every 4 s a guest joins or leaves somewhere; layouts every 12 s, looks every
            # 20 s, the extra output every 30 s (added, then removed 30 s later).
            room = rooms[tick % 2]
            room.churn_guest()
            if tick % 3 == 0:
                room.change_layout()
            if tick % 5 == 0:
                room.change_look()
            if tick % 15 == 7:
                rooms[0].toggle_output()
            tick += 1
            time.sleep(max(0.0, min(4.0, end - time.time())))
        samples.append(sample(serve, rooms, time.time() - start))
        final = [room.status() for room in rooms]
    finally:
        for room in rooms:
            room.stop()
        serve.stop()
        nginx.stop()

    fitted = [s for s in samples if s["t"] >= args.warmup_secs] or samples
    serve_rss = [(s["t"], s["serve_rss_mb"]) for s in fitted]
    mixer_pids = sorted({pid for s in fitted for pid in s["mixers"]})
    mixer_growth = [
        slope_per_hour([(s["t"], s["mixers"][pid]["rss_mb"]) for s in fitted if pid in s["mixers"]])
        for pid in mixer_pids
    ]
    live_mixers = [pid for pid in mixer_pids if pid in fitted[-1]["mixers"]]
    # Each guest present holds sockets in serve and in its room's mixer, so fds are compared
    # between the first and last samples taken with the same guests present (the most common
    # case): what remains is what joins and leaves left behind.
    by_guests = {}
    for s in fitted:
        by_guests.setdefault(tuple(s["guests"]), []).append(s)
    same = max(by_guests.values(), key=len)
    first, last = same[0], same[-1]
    fd_growth = last["serve_fds"] - first["serve_fds"] + sum(
        last["mixers"][pid]["fds"] - first["mixers"][pid]["fds"]
        for pid in live_mixers
        if pid in first["mixers"] and pid in last["mixers"]
    )
    reconnects = sum(o["reconnects"] for st in final for o in st["outputs"])
    result = {
        "soak_minutes": round(args.minutes, 2),
        "soak_samples": len(samples),
        "soak_serve_rss_growth_mb_per_h": round(slope_per_hour(serve_rss), 2),
        "soak_mixer_rss_growth_mb_per_h": round(max(mixer_growth, default=0.0), 2),
        "soak_fd_growth": fd_growth,
        "soak_serve_threads_growth": fitted[-1]["serve_threads"] - fitted[0]["serve_threads"],
        "soak_output_reconnects": reconnects,
        "soak_mixer_restarts": sum(st["mixer"]["restarts"] for st in final),
        "soak_frames_out": [st["mixer"]["frames_out"] for st in final],
        "soak_serve_rss_mb": [fitted[0]["serve_rss_mb"], fitted[-1]["serve_rss_mb"]],
    }
    log("soak:", json.dumps(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({**result, "samples": samples}, f, indent=1)
    if args.record:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.json")
        with open(path) as f:
            recorded = json.load(f)
        recorded.update(result)
        with open(path, "w") as f:
            json.dump(recorded, f, indent=2)
            f.write("\n")
    return 0


def sample(serve, rooms, t):
    rss, threads = proc_status(serve.proc.pid) or (0.0, 0)
    mixers = {}
    for pid in children(serve.proc.pid):
        status = proc_status(pid)
        fds = open_fds(pid)
        if status and fds is not None:
            mixers[pid] = {"rss_mb": round(status[0], 1), "threads": status[1], "fds": fds}
    states = [o["state"] for room in rooms for o in room.status()["outputs"]]
    return {
        "t": round(t, 1),
        "serve_rss_mb": round(rss, 1),
        "serve_threads": threads,
        "serve_fds": open_fds(serve.proc.pid) or 0,
        "mixers": mixers,
        "output_states": states,
        "guests": [room.guest is not None for room in rooms],
    }


if __name__ == "__main__":
    sys.exit(main())
