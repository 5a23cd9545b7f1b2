#!/usr/bin/env bash
# The GPU measurements, run on a machine with a GPU from a carried release binary (built
# elsewhere by scripts/build-cuda.sh): one script, everything written under $OUT.
#
#   OUT=/some/dir scripts/bench-gpu.sh [BINARY]
#
# 1. `facegate gpucheck`: every kernel against its CPU twin (and its time against the floor
#    its bytes set), the depthwise kernel in f32 and f16, the networks on the GPU against the
#    CPU (tolerances in the report), every stage's time at batch 1..256 (gpucheck.json).
# 2. Over HTTP on loopback (`facegate serve` + `facegate bench --port`): images/s and
#    p50/p99 at concurrency 1, 16, 64 and 256, with batching on (max batch $BATCH, default
#    64) and off (max batch 1), $SECONDS_PER_RUN s each (default 10) (http-<on|off>-c<N>.json);
#    after each run, the batcher's overhead from /metrics: the mean time an image waited in
#    each stage queue during the run (queue-<on|off>-c<N>.json).
# 3. nvidia-smi and the environment (env.txt); a summary table (summary.txt).
#
# The binary needs the driver and the CUDA 13 libraries (cuBLAS, cuRAND, NVRTC) at run time:
# when the loader does not find libcublas.so.13, the script looks in the Python environment's
# site-packages/nvidia/cu13/lib (where pip puts them) and sets LD_LIBRARY_PATH. Models come
# from $FACEGATE_MODELS_DIR (default models/), fixtures from $FIXTURES (default
# ../shared/fixtures/faces), the photo sent over HTTP from $PHOTO (default image_T1.jpg there).
set -uo pipefail

bin=${1:-target/x86_64-unknown-linux-gnu/release/facegate}
out=${OUT:-out/gpu}
fixtures=${FIXTURES:-../shared/fixtures/faces}
batch=${BATCH:-64}
secs=${SECONDS_PER_RUN:-10}
mkdir -p "$out"
[[ -x $bin ]] || { echo "bench-gpu: no binary at $bin (build it with scripts/build-cuda.sh)" >&2; exit 1; }
photo=${PHOTO:-$fixtures/image_T1.jpg}
[[ -f $photo ]] || { echo "bench-gpu: no photo at $photo (set PHOTO)" >&2; exit 1; }

if ! ldconfig -p 2>/dev/null | grep -q 'libcublas\.so\.13'; then
    for sp in $(python3 -c 'import site; print(" ".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null); do
        if [[ -e $sp/nvidia/cu13/lib/libcublas.so.13 ]]; then
            export LD_LIBRARY_PATH=$sp/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
            break
        fi
    done
fi
{
    date -u
    echo "binary: $bin"
    echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
    nvidia-smi 2>&1 || echo "nvidia-smi: not available"
    echo "cpus: $(nproc)"
} > "$out/env.txt"

status=0
"$bin" gpucheck --fixtures "$fixtures" --out "$out/gpucheck.json" > "$out/gpucheck.log" 2>&1 || status=$?
echo "gpucheck: exit $status (report: $out/gpucheck.json)" | tee "$out/summary.txt"

# Mean queue wait per image and stage between two /metrics scrapes.
queue_delta() {
    python3 - "$1" "$2" <<'PY'
import json, re, sys
def read(path):
    v = {}
    for line in open(path):
        m = re.match(r'facegate_queue_wait_seconds_(sum|count)\{stage="(\w+)"\} (\S+)', line)
        if m:
            v[(m[2], m[1])] = float(m[3])
    return v
a, b = read(sys.argv[1]), read(sys.argv[2])
out = {}
for stage in sorted({s for s, _ in b}):
    n = b.get((stage, "count"), 0) - a.get((stage, "count"), 0)
    t = b.get((stage, "sum"), 0) - a.get((stage, "sum"), 0)
    out[stage] = {"images": n, "mean_wait_ms": (t / n * 1e3) if n else None}
print(json.dumps(out))
PY
}

for mode in on off; do
    mb=$batch
    [[ $mode == off ]] && mb=1
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$bin" serve --device cuda --listen "127.0.0.1:$port" --max-batch "$mb" --queue-bound 1024 \
        > "$out/serve-$mode.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 600); do
        curl -fsS "http://127.0.0.1:$port/health" > "$out/health-$mode.json" 2>/dev/null && break
        kill -0 $pid 2>/dev/null || break
        sleep 0.5
    done
    if ! kill -0 $pid 2>/dev/null; then
        echo "bench-gpu: the server (batching $mode) did not start (see $out/serve-$mode.log)" | tee -a "$out/summary.txt"
        status=1
        continue
    fi
    for c in 1 16 64 256; do
        f="$out/http-$mode-c$c.json"
        curl -fsS "http://127.0.0.1:$port/metrics" > "$out/.before" || true
        "$bin" bench --port "$port" --concurrency "$c" --duration "$secs" --warmup 20 --image "$photo" \
            > "$f" 2> "$f.log" || { echo "bench $mode c=$c failed (see $f.log)"; status=1; }
        curl -fsS "http://127.0.0.1:$port/metrics" > "$out/.after" || true
        queue_delta "$out/.before" "$out/.after" > "$out/queue-$mode-c$c.json" 2>/dev/null || true
        python3 - "$f" "$out/queue-$mode-c$c.json" "$mode" "$c" <<'PY' | tee -a "$out/summary.txt" || true
import json, sys
r = json.load(open(sys.argv[1]))
q = json.load(open(sys.argv[2]))
lat = r.get("latency_ms", {})
waits = ", ".join(f"{s} {v['mean_wait_ms']:.2f}" for s, v in q.items() if v["mean_wait_ms"] is not None)
print(f"batching {sys.argv[3]:3} c={sys.argv[4]:>3}: {r.get('ok_per_s', 0):8.1f} images/s, "
      f"p50 {lat.get('p50', 0):7.1f} ms, p99 {lat.get('p99', 0):7.1f} ms, errors {r.get('errors', '?')}; "
      f"queue wait per image (ms): {waits}")
PY
    done
    kill $pid 2>/dev/null
    wait $pid 2>/dev/null
done
rm -f "$out/.before" "$out/.after"
exit $status
