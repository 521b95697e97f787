#!/usr/bin/env bash
# Instruction count per output frame (issue 5), stable on a noisy machine: callgrind counts
# instructions, not time. What runs: the mixer's element graph for the R4 room (as built by
# mixer/src/pipeline.rs + inputs.rs: black background + 4 VP8 inputs -> compositor (pip) ->
# x264 veryfast zerolatency 2.5 Mbit/s -> flvmux; Opus -> level -> audiomixer -> AAC), fed
# from pre-encoded files and run non-live (as fast as it can), x264 on one thread so the count
# is repeatable. It is run for two lengths and the difference divided by the extra frames, so
# process start and GStreamer init (plugin registry) cancel out.
# Usage: benches/callgrind.sh [--quick | --smoke] [--out DIR]
# Writes DIR/callgrind.json (callgrind-quick.json / callgrind-smoke.json; DIR defaults to
# benches/); report.py copies its instructions_per_frame into results.json.
# Note: it replicates the mixer's graph in gst-launch rather than running the `costream mixer`
# process, whose inputs are live RTP (a live pipeline under valgrind runs ~50x slower than the
# clock and drops frames, so its count would not be repeatable).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="$HERE"; SUFFIX=""; SHORT=10; LONG=30
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) SUFFIX="-quick"; SHORT=5; LONG=10 ;;
    --smoke) SUFFIX="-smoke"; SHORT=2; LONG=4 ;;
    --out) OUT="$2"; shift ;;
    *) ;; # other flags (e.g. e2e.py's) are not ours
  esac
  shift
done
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
FRAMES=$((LONG + 15))

# Inputs, made once: SMPTE scrolling 4 px/frame as the publishers send, VP8 in WebM; Opus tone.
enc() { # name w h
  gst-launch-1.0 -q videotestsrc num-buffers=$FRAMES pattern=smpte horizontal-speed=4 \
    ! "video/x-raw,format=I420,width=$2,height=$3,framerate=30/1" \
    ! vp8enc deadline=1 cpu-used=8 keyframe-max-dist=60 threads=1 ! webmmux ! filesink location="$TMP/$1.webm"
}
enc host 1280 720; enc g1 640 360; enc g2 640 360; enc g3 640 360
gst-launch-1.0 -q audiotestsrc num-buffers=$((FRAMES * 48000 / 30 / 1024 + 2)) freq=440 \
  ! audio/x-raw,rate=48000,channels=1 ! opusenc ! oggmux ! filesink location="$TMP/tone.ogg"

graph() { # frames
  local n=$1
  local tiles=(" " "sink_1::xpos=936 sink_1::ypos=516 sink_1::width=320 sink_1::height=180 sink_1::zorder=2"
    "sink_2::xpos=592 sink_2::ypos=516 sink_2::width=320 sink_2::height=180 sink_2::zorder=2"
    "sink_3::xpos=248 sink_3::ypos=516 sink_3::width=320 sink_3::height=180 sink_3::zorder=2")
  echo "compositor name=comp background=black sink_0::zorder=0 \
    sink_4::xpos=0 sink_4::ypos=0 sink_4::width=1280 sink_4::height=720 sink_4::zorder=1 \
    ${tiles[1]} ${tiles[2]} ${tiles[3]} \
    ! video/x-raw,format=I420,width=1280,height=720,framerate=30/1 ! queue max-size-buffers=3 \
    ! x264enc tune=zerolatency speed-preset=veryfast pass=cbr bitrate=2500 key-int-max=60 \
      option-string=scenecut=0 vbv-buf-capacity=1000 threads=1 ! video/x-h264,profile=high \
    ! h264parse ! flvmux name=mux streamable=true ! fakesink sync=false \
    videotestsrc num-buffers=$n pattern=black ! video/x-raw,format=I420,width=1280,height=720,framerate=30/1 ! comp.sink_0 \
    filesrc location=$TMP/host.webm ! matroskademux ! avdec_vp8 max-threads=1 output-corrupt=false ! videoconvert ! identity eos-after=$n ! comp.sink_4 \
    filesrc location=$TMP/g1.webm ! matroskademux ! avdec_vp8 max-threads=1 output-corrupt=false ! videoconvert ! identity eos-after=$n ! comp.sink_1 \
    filesrc location=$TMP/g2.webm ! matroskademux ! avdec_vp8 max-threads=1 output-corrupt=false ! videoconvert ! identity eos-after=$n ! comp.sink_2 \
    filesrc location=$TMP/g3.webm ! matroskademux ! avdec_vp8 max-threads=1 output-corrupt=false ! videoconvert ! identity eos-after=$n ! comp.sink_3 \
    audiomixer name=amix ! audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=2 \
      ! avenc_aac bitrate=128000 ! aacparse ! mux. \
    filesrc location=$TMP/tone.ogg ! oggdemux ! opusdec ! identity eos-after=$((n * 1000 / 30 / 20)) ! audioconvert ! audioresample ! level ! amix."
}

count() { # frames -> total Ir
  # shellcheck disable=SC2046
  valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.$1" --trace-children=no \
    gst-launch-1.0 -q $(graph "$1") >/dev/null 2>"$TMP/vg.$1"
  grep -E '^(summary|totals):' "$TMP/cg.$1" | head -1 | awk '{print $2}'
}
a=$(count $SHORT); b=$(count $LONG)
per=$(( (b - a) / (LONG - SHORT) ))
echo "callgrind: $SHORT frames $a Ir, $LONG frames $b Ir -> $per instructions per output frame"
mkdir -p "$OUT"
cat > "$OUT/callgrind$SUFFIX.json" <<JSON
{"instructions_per_frame": $per, "frames_short": $SHORT, "frames_long": $LONG, "ir_short": $a, "ir_long": $b}
JSON
