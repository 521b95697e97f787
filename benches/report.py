#!/usr/bin/env python3
"""Writes benches/RESULTS.md (table + what limits each figure) and benches/chart.png (mixer CPU
and latency against the number of guests) from the JSON e2e.py and callgrind.sh left behind.
Only measured numbers appear; a figure that was not measured is shown as "not measured" with
the reason. Usage: benches/report.py [--quick | --smoke] [--out DIR] (DIR: where e2e.py and
callgrind.sh wrote, default benches/)."""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MODE = "smoke" if "--smoke" in sys.argv else "quick" if "--quick" in sys.argv else ""
SUFFIX = f"-{MODE}" if MODE else ""
OUT = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else HERE


def load(name):
    try:
        with open(os.path.join(OUT, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


res = load(f"results{SUFFIX}.json")
raw = load(f"results{SUFFIX}-raw.json")
cg = load(f"callgrind{SUFFIX}.json")
if res and cg.get("instructions_per_frame"):
    # Measured by benches/callgrind.sh (instruction counts do not depend on load, so it may run
    # at another time than e2e.py).
    res["instructions_per_frame"] = cg["instructions_per_frame"]
    with open(os.path.join(OUT, f"results{SUFFIX}.json"), "w") as f:
        json.dump(res, f, indent=2, sort_keys=True)

# (key, goal text, goal check, what limits it)
ROWS = [
    ("mixer_cpu_core_fraction", "", None,
     "x264 veryfast 720p30 on one thread is most of it (~45 % in perf); then VP8 decode of "
     "4 inputs (FFmpeg's decoder, one thread each), compositing (scaling the 640x360 guests "
     "down to 320x180 tiles, copying the full-frame host), thread switches and copies."),
    ("bare_cpu_core_fraction", "", None,
     "the floor: the same elements with nothing else, same media kind, same machine, same run."),
    ("ffmpeg_cpu_core_fraction", "", None,
     "ffmpeg filter_complex (scale + overlay + amix) + libx264 veryfast zerolatency."),
    ("cpu_ratio_vs_bare", "<= 1.10", lambda v: v <= 1.10,
     "mixer / bare. What the mixer does on top: live black background source composited under "
     "the host, `level` on every audio input (active speaker), tee + leaky queue + errorignore "
     "per output, RTP over loopback from serve."),
    ("cpu_ratio_vs_ffmpeg", "", None, "mixer / ffmpeg."),
    ("serve_cpu_per_participant", "", None,
     "webrtc-rs SRTP decrypt + RTP forwarding to the mixer and to the other 3 participants "
     "(SFU), in cores per participant."),
    ("glass_to_glass_p50_ms", "", None, "see p95."),
    ("glass_to_glass_p95_ms", "<= 250", lambda v: v <= 250,
     "capture (barcode burnt before the publisher's VP8 encoder) -> WebRTC -> serve -> RTP -> "
     "mixer (rtpjitterbuffer latency 80 ms, VP8 decode, compositor, x264 zerolatency) -> FLV -> "
     "nginx-rtmp -> reader decode (GStreamer rtmp2src/flvdemux/avdec_h264, 1 thread, no "
     "sync). Publishers, serve, mixer and reader share the 2 cores, so scheduling delay is "
     "included."),
    ("mixer_latency_p50_ms", "", None, "see p95."),
    ("mixer_latency_p95_ms", "<= 80", lambda v: v <= 80,
     "per host frame: its arrival decoded at the reader minus the instant the mixer's VP8 "
     "decoder produced the same frame (mixer/src/timecode_probe.rs logs each decoded input "
     "timecode when COSTREAM_TIMECODE_LOG is set). Split by stage below: the largest part is "
     "flvmux holding each video frame until the AAC audio of the same instant exists (AAC "
     "framing 21 ms + encoder lookahead 21 ms + 20 ms Opus packets + the 21 ms picture hold "
     "that keeps A/V in sync despite AAC priming); compositing, x264 and delivery are "
     "~5 / ~10 / ~8 ms. Out of reach with AAC in FLV at this A/V sync: see below."),
    ("input_leg_p50_ms", "", None, "see p95."),
    ("input_leg_p95_ms", "", None,
     "capture -> publisher VP8 encode -> WebRTC -> serve (SRTP, forward) -> RTP over loopback "
     "-> mixer depay + VP8 decode: the part of glass-to-glass before the mixer's probe."),
    ("join_to_visible_p50_ms", "", None, "see p95."),
    ("join_to_visible_p95_ms", "<= 1000", lambda v: v <= 1000,
     "WHIP POST -> ICE/DTLS -> first keyframe -> mixer input branch plugged in -> layout "
     "placed -> the guest's barcode decodes in its pip tile at the reader; includes the "
     "glass-to-glass latency above."),
    ("golive_first_byte_warm_ms", "<= 500", lambda v: v <= 500,
     "POST /live -> nginx /stat bytes_in > 0 (polled every 10 ms), host present; warm pool 1."),
    ("golive_first_byte_cold_ms", "<= 1500", lambda v: v <= 1500,
     "same with `pool.warm = 0`: process start + GStreamer init + plugin load included."),
    ("rooms_realtime", ">= 3", lambda v: v >= 3,
     "largest N concurrent R4 rooms with < 0.1 % output frames missing (pts gaps) or late "
     "(arrival lag > 200 ms above the window's best) at nginx. The 4N publishers are WebRTC "
     "senders on the same machine; by default they replay 4 s encoded once "
     "(`costream publish --replay-secs`), as a remote browser's encoder does not run on the "
     "mixing server (live-encoding publishers: `e2e.py --live-publishers`, ~0.1 core each). "
     "Admission was lifted (capacity_cores = 64) so it does not cap the measurement."),
    ("mixer_rss_mb", "<= 150", lambda v: v <= 150,
     "VmHWM of the R4 room's mixer process after its steady window and the join/leave "
     "cycles: GStreamer + plugins (x264, libav AAC, vpx) mapped, decoded-frame pools of 4 "
     "inputs, the 1280x720 compositor/encoder buffers and the 2 s leaky output queue. The "
     "capacity phase's mixers (another serve, same room) are listed below with their own "
     "peaks."),
    ("instructions_per_frame", "", None,
     "callgrind (benches/callgrind.sh): the mixer's element graph, file-fed, non-live."),
]


def fmt(v):
    if v is None:
        return "not measured"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.0f}"
    return str(v)


def chart():
    pg = raw.get("per_guests") or []
    if not pg:
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    g = [p["guests"] for p in pg]
    fig, ax1 = plt.subplots(figsize=(7, 4))
    ax1.plot(g, [p["mixer_cores"] for p in pg], "o-", color="tab:blue", label="mixer CPU (cores)")
    ax1.plot(g, [p["serve_cores"] for p in pg], "s--", color="tab:cyan", label="serve CPU (cores)")
    ax1.set_xlabel("guests (plus the host)")
    ax1.set_ylabel("cores")
    ax1.set_xticks(g)
    ax1.set_ylim(bottom=0)
    ax2 = ax1.twinx()
    ax2.plot(g, [p["latency_p50_ms"] for p in pg], "^-", color="tab:red", label="glass-to-glass p50")
    ax2.plot(g, [p["latency_p95_ms"] for p in pg], "v:", color="tab:orange", label="glass-to-glass p95")
    ax2.plot(g, [p.get("mixer_latency_p95_ms") or float("nan") for p in pg], "D-.", color="tab:purple",
             label="mixer-added p95")
    ax2.set_ylabel("ms")
    ax2.set_ylim(bottom=0)
    lines = ax1.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax1.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="lower right", fontsize=8)
    ax1.set_title("costream R4 room: CPU and latency vs guests")
    fig.tight_layout()
    name = f"chart{SUFFIX}.png"
    fig.savefig(os.path.join(OUT, name), dpi=100)
    return name


def main():
    png = chart()
    out = [f"# costream end-to-end benchmark{f' ({MODE} run)' if MODE else ''}", ""]
    out.append("Generated by `bash benches/run.sh" + (f" --{MODE}" if MODE else "") +
               "` (benches/report.py); numbers in `benches/results" + SUFFIX + ".json`.")
    out.append("")
    out.append(f"- machine: {res.get('machine')}")
    out.append(f"- date: {res.get('date')}")
    out.append(f"- load average when the run started: {res.get('load_average_at_start')}")
    out.append("")
    out.append("| figure | measured | goal | met | what limits it |")
    out.append("| --- | --- | --- | --- | --- |")
    for key, goal, check, why in ROWS:
        v = res.get(key)
        met = "" if check is None or v is None else ("yes" if check(v) else "**no**")
        out.append(f"| `{key}` | {fmt(v)} | {goal} | {met} | {why} |")
    out.append("")
    load = res.get("load_average_at_start")
    noise = (f"Noise: this machine's 2 cores were shared with other work during the run (load "
             f"average {load} at the start). Each ratio compares pipelines measured in the "
             f"same invocation, a minute or two apart, each over its own window.")
    cap1 = [c for c in raw.get("capacity") or [] if c["rooms"] == 1]
    mix = res.get("mixer_cpu_core_fraction")
    if cap1 and mix:
        again = cap1[0]["mixer_cores"][0]
        noise += (f" The same R4 mixer measured twice in this run: {mix:.3f} cores (steady "
                  f"window) and {again:.3f} cores (capacity phase, 1 room), "
                  f"{abs(again - mix) / mix * 100:.0f} % apart.")
    noise += " Instruction counts do not depend on load."
    out.append(noise)
    out.append("")
    if png:
        out.append(f"![CPU and latency against number of guests]({png})")
        out.append("")
    pg = raw.get("per_guests") or []
    if pg:
        out.append("Per number of guests (same room, guests joining one by one):")
        out.append("")
        out.append("| guests | mixer cores | serve cores | g2g p50 ms | g2g p95 ms | "
                   "mixer-added p50 ms | mixer-added p95 ms | frames |")
        out.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for p in pg:
            out.append(f"| {p['guests']} | {p['mixer_cores']} | {p['serve_cores']} | "
                       f"{p['latency_p50_ms']} | {p['latency_p95_ms']} | "
                       f"{p.get('mixer_latency_p50_ms')} | {p.get('mixer_latency_p95_ms')} | "
                       f"{p['latency_samples']} |")
        out.append("")
    if raw.get("join_ms"):
        out.append(f"Join -> visible samples (ms): {raw['join_ms']}")
        out.append("")
    if raw.get("golive"):
        gl = {k: [round(x) for x in v] for k, v in raw["golive"].items()}
        out.append(f"Go live -> first byte samples (ms): {gl}")
        out.append("")
    for key, label in (("r4_output", "mixer (R4 steady window)"),
                       ("bare_output", "bare gst-launch"), ("ffmpeg_output", "ffmpeg")):
        v = raw.get(key)
        if v:
            rss = f", peak RSS {v['rss_mb']} MB" if v.get("rss_mb") else ""
            out.append(f"- {label} output at nginx during its CPU window: {v['received']} frames "
                       f"received of {v['expected']} expected, {v['missing']} missing, "
                       f"{v['late']} late{rss}")
    out.append("")
    for c in raw.get("capacity") or []:
        out.append(f"- {c['rooms']} room(s): {'real time' if c['ok'] else 'NOT real time'}, "
                   f"{c['bad_frames']}/{c['expected_frames']} frames missing or late, mixer "
                   f"cores {c['mixer_cores']}, all publishers {c.get('publisher_cores')} cores, "
                   f"serve {c.get('serve_cores')} cores, "
                   f"RSS MB {[round(r or 0) for r in c['rss_mb']]}")
    caps = [c for c in raw.get("capacity") or [] if c.get("publisher_cores") is not None]
    if caps:
        c1 = caps[0]
        per_room = sum(c1["mixer_cores"]) / c1["rooms"]
        pubs = c1["publisher_cores"] / c1["rooms"]
        out.append("")
        replay = res.get("capacity_publishers", "live") == "replay"
        what = ("replaying recorded VP8, no encoder" if replay
                else "VP8 encode of 1280x720 + 3x640x360")
        out.append(
            f"Capacity budget: one R4 room's mixer used {per_room:.2f} cores, its 4 local "
            f"publishers ({what}, webrtc-rs) {pubs:.2f} cores and "
            f"serve {c1['serve_cores'] / c1['rooms']:.2f} cores, i.e. "
            f"{per_room + pubs + c1['serve_cores'] / c1['rooms']:.2f} of this machine's "
            f"{os.cpu_count()} cores per room before the frame counters and other work.")
    stages = [k[len("mixer_stage_"):-len("_p50_ms")] for k in res
              if k.startswith("mixer_stage_") and k.endswith("_p50_ms")]
    if stages:
        out.append("")
        out.append("Mixer-added latency by stage (R4 steady window, per host frame, ms; "
                   "`program`/`encoded`/`muxed` probes in mixer/src/timecode_probe.rs):")
        out.append("")
        out.append("| stage | p50 | p95 | what it is |")
        out.append("| --- | --- | --- | --- |")
        meaning = {
            "composite": "decoded -> compositor output: waiting for every other input's "
                         "frame of that output interval",
            "encode": "compositor output -> x264 output (one thread)",
            "mux": "x264 output -> flvmux output: waiting for the AAC audio of the same "
                   "instant",
            "deliver": "flvmux -> tee, queue, rtmp2sink, nginx-rtmp, reader decode",
        }
        for st in ("composite", "encode", "mux", "deliver"):
            if st in stages:
                out.append(f"| {st} | {res.get(f'mixer_stage_{st}_p50_ms')} | "
                           f"{res.get(f'mixer_stage_{st}_p95_ms')} | {meaning[st]} |")
    for name in ("HISTORY.md", "NOTES.md"):
        extra = os.path.join(HERE, name)
        if os.path.exists(extra):
            out.append("")
            with open(extra) as f:
                out.append(f.read())
    with open(os.path.join(OUT, f"RESULTS{SUFFIX}.md"), "w") as f:
        f.write("\n".join(out) + "\n")
    print(f"wrote {OUT}/RESULTS{SUFFIX}.md" + (f" and {OUT}/{png}" if png else ""))


main()
