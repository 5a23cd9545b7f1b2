#!/usr/bin/env bash
# Builds facegate with its CUDA path (feature `cuda`) on a machine with no GPU, no driver and no
# CUDA install (facts: ../shared/gpu/README.md). The default build and CI stay CPU-only.
#
#   scripts/build-cuda.sh            cargo build --release --features cuda
#   scripts/build-cuda.sh --check    cargo check --features cuda --all-targets
#   scripts/build-cuda.sh --smoke    the release build, then: start it here, check that it
#                                    serves on CPU and says why in /health
#   scripts/build-cuda.sh --env      print the environment it builds with (for `eval`)
#   scripts/build-cuda.sh --pack     the release build, then out/gpu-carry/ for a GPU machine
#                                    (xz binary, models, fixture photos: 38 MB here), which
#                                    scripts/gpu-machine.sh runs there
#
# Steps, each skipped when already done (idempotent):
# 1. The pinned CUDA 13.0 wheels from PyPI, installed by ONE pip command into a folder of their
#    own ($FACEGATE_CUDA_DIR, default ~/.cache/facegate/cuda13): nvcc, headers, cudart,
#    cuBLAS, cuRAND, NVRTC. They merge into <dir>/nvidia/cu13. Stay on 13.0: the lent GPU
#    machines run driver 580 (CUDA 13.0), which cannot JIT newer PTX.
# 2. Unversioned links in its lib folder (libcublas.so -> libcublas.so.13, ...).
# 3. A link stub for libcuda (only a driver ships the real one): a tiny shared library built
#    with cc. It only satisfies the linker: the binary does not depend on it (see 4). The CUDA
#    runtime (which candle-kernels links) is linked statically.
# 4. cargo, with the CUDA environment and `--cfg feature="dynamic-loading"` for cudarc:
#    candle 0.11 turns on cudarc's `dynamic-linking`, with which the binary would not start
#    without libcuda.so.1. With the cfg, cudarc's own loader (libloading) opens libcuda,
#    cuBLAS, cuRAND and NVRTC when the first CUDA device is opened, and the linker (with
#    --as-needed) records none of them, so the same binary starts on a machine without a
#    driver and serves on CPU, saying why (src/nn/device.rs). The cfg goes through RUSTFLAGS
#    with an explicit --target, which keeps it away from build scripts (cudarc's build.rs
#    refuses both link modes at once); outputs land in target/<host triple>/.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${FACEGATE_CUDA_DIR:-$HOME/.cache/facegate/cuda13}
pins=(
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
    nvidia-cuda-cccl==13.0.85 nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88
    nvidia-cublas==13.1.0.3 nvidia-curand==10.4.0.35
)
mode=build
case "${1:-}" in
    "") ;;
    --check) mode=check ;;
    --smoke) mode=smoke ;;
    --env) mode=env ;;
    --pack) mode=pack ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "build-cuda: unknown argument $1 (try --help)" >&2; exit 2 ;;
esac

die() { echo "build-cuda: $*" >&2; exit 1; }
say() { [[ $mode == env ]] || echo "build-cuda: $*"; }

command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) first"
command -v rustc >/dev/null || die "rustc not found: install Rust (rustup) first"
command -v python3 >/dev/null || die "python3 not found: the CUDA wheels come from PyPI (apt-get install python3 python3-pip)"
python3 -m pip --version >/dev/null 2>&1 || die "pip not found for python3 (apt-get install python3-pip)"
command -v cc >/dev/null || die "no C compiler (cc): nvcc needs gcc as its host compiler (apt-get install gcc g++)"
command -v c++ >/dev/null || die "no C++ compiler (c++): nvcc needs g++ (apt-get install g++)"

# 1. Wheels. A second pip install into the same --target silently skips nvidia/, so the
# folder is rebuilt whole whenever the pins change.
stamp="$dir/.facegate-pins"
if [[ -f $stamp && "$(cat "$stamp")" == "${pins[*]}" && -x $dir/nvidia/cu13/bin/nvcc ]]; then
    say "CUDA 13.0 wheels already in $dir"
else
    say "installing the CUDA 13.0 wheels into $dir (about 1.2 GB)"
    rm -rf "$dir"
    mkdir -p "$dir"
    python3 -m pip install --disable-pip-version-check --no-deps --target "$dir" "${pins[@]}" >&2 \
        || die "pip could not install the CUDA wheels (is PyPI reachable?)"
    [[ -x $dir/nvidia/cu13/bin/nvcc ]] || die "the wheels did not provide nvidia/cu13/bin/nvcc"
    printf '%s' "${pins[*]}" > "$stamp"
fi
cu=$dir/nvidia/cu13

# 2. Unversioned library links. Not for cudart: candle-kernels links it (for its MoE kernels,
# which facegate does not call), and a libcudart.so on the search path would make the binary
# need libcudart.so.13 to start; without one, -lcudart takes the static archive linked below.
rm -f "$cu/lib/libcudart.so"
for lib in cublas cublasLt nvrtc curand; do
    if [[ ! -e $cu/lib/lib$lib.so ]]; then
        versioned=$(cd "$cu/lib" && ls "lib$lib.so."* 2>/dev/null | sort | head -n1)
        [[ -n $versioned ]] || die "no lib$lib.so.* in $cu/lib"
        ln -sfn "$versioned" "$cu/lib/lib$lib.so"
    fi
done

# 3. libcuda link stub: the few driver calls a probe needs, each failing with
# CUDA_ERROR_NO_DEVICE (100). Also usable as LD_LIBRARY_PATH=<dir>/stub to run the binary as
# on a machine whose driver sees no device.
stub=$dir/stub
if [[ ! -e $stub/libcuda.so ]]; then
    mkdir -p "$stub"
    cat > "$stub/libcuda.c" <<'C'
/* Link stub for libcuda (facegate scripts/build-cuda.sh): every call fails with
 * CUDA_ERROR_NO_DEVICE, as a driver that sees no GPU would. */
static const char no_device[] = "no CUDA-capable device is detected (facegate link stub)";
static const char no_device_name[] = "CUDA_ERROR_NO_DEVICE";
int cuInit(unsigned flags) { (void)flags; return 100; }
int cuDriverGetVersion(int *v) { if (v) *v = 0; return 100; }
int cuDeviceGetCount(int *n) { if (n) *n = 0; return 100; }
int cuDeviceGet(int *d, int ordinal) { (void)d; (void)ordinal; return 100; }
int cuGetErrorString(int e, const char **s) { (void)e; if (s) *s = no_device; return 0; }
int cuGetErrorName(int e, const char **s) { (void)e; if (s) *s = no_device_name; return 0; }
C
    cc -shared -fPIC -O2 -Wl,-soname,libcuda.so.1 -o "$stub/libcuda.so.1" "$stub/libcuda.c" \
        || die "cc could not build the libcuda link stub"
    ln -sfn libcuda.so.1 "$stub/libcuda.so"
fi

# The static CUDA runtime, as the only libcudart on the link path (it opens libcuda itself, at
# run time).
static=$dir/static
mkdir -p "$static"
[[ -e $cu/lib/libcudart_static.a ]] || die "no libcudart_static.a in $cu/lib"
ln -sfn "$cu/lib/libcudart_static.a" "$static/libcudart.a"

host=$(rustc -vV | sed -n 's/^host: //p')
export CUDA_ROOT=$cu CUDA_HOME=$cu CUDA_PATH=$cu
export PATH=$cu/bin:$PATH
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
# The linker looks in the -L folders first, then in LIBRARY_PATH: $static is found for -lcudart
# only because no libcudart.so or libcudart.a lies in a -L folder.
export LIBRARY_PATH=$static:$cu/lib:$stub${LIBRARY_PATH:+:$LIBRARY_PATH}
export RUSTFLAGS="${RUSTFLAGS:-} --cfg feature=\"dynamic-loading\" -L native=$cu/lib -L native=$stub"

if [[ $mode == env ]]; then
    for v in CUDA_ROOT CUDA_HOME CUDA_PATH PATH CUDA_COMPUTE_CAP LIBRARY_PATH RUSTFLAGS; do
        printf 'export %s=%q\n' "$v" "${!v}"
    done
    printf 'export FACEGATE_CUDA_TARGET=%q\n' "$host"
    exit 0
fi

cd "$root"
nvcc_version=$(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')
say "nvcc $nvcc_version, compute capability $CUDA_COMPUTE_CAP, target $host"
start=$(date +%s)
case $mode in
    check)
        cargo check --target "$host" --features cuda --all-targets
        ;;
    build|smoke|pack)
        cargo build --release --target "$host" --features cuda --bin facegate
        ;;
esac
say "cargo finished in $(( $(date +%s) - start )) s"

bin=$root/target/$host/release/facegate
if [[ $mode == build || $mode == smoke || $mode == pack ]]; then
    [[ -x $bin ]] || die "no binary at $bin"
    if readelf -d "$bin" | grep -E 'NEEDED.*lib(cuda|cublas|cublasLt|curand|nvrtc|cudart)\.so'; then
        die "$bin links a CUDA library at load time (above): it would not start without a driver"
    fi
    say "built $bin ($(du -h "$bin" | cut -f1)); it loads libcuda and the CUDA libraries at run time"
fi

if [[ $mode == smoke ]]; then
    # Starts the binary with `--device cuda` and library path $2, checks that it serves on CPU
    # and that /health's device_note contains $3, and that /metrics has the fallback gauge.
    smoke_case() {
        local label=$1 libs=$2 expect=$3 port log pid health=""
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
        log=$(mktemp)
        env LD_LIBRARY_PATH="$libs" "$bin" serve --device cuda --listen "127.0.0.1:$port" >"$log" 2>&1 &
        pid=$!
        for _ in $(seq 1 240); do
            health=$(curl -fsS "http://127.0.0.1:$port/health" 2>/dev/null || true)
            [[ $health == *'"device_note"'* ]] && break
            kill -0 $pid 2>/dev/null || { cat "$log" >&2; die "$label: the CUDA build exited instead of serving"; }
            sleep 0.5
        done
        local metrics
        metrics=$(curl -fsS "http://127.0.0.1:$port/metrics" || true)
        kill $pid 2>/dev/null || true
        wait $pid 2>/dev/null || true
        echo "$label: $health"
        if [[ $health != *'serving on CPU'* || $health != *"$expect"* ]]; then
            cat "$log" >&2
            rm -f "$log"
            die "$label: /health does not say it serves on CPU because of \"$expect\""
        fi
        rm -f "$log"
        grep -qE '^facegate_device_fallback 1' <<<"$metrics" || die "$label: facegate_device_fallback is not 1"
        say "smoke ($label): serves on CPU, with the reason in /health and facegate_device_fallback 1"
    }
    # 1. This machine as it is: no driver at all.
    smoke_case "no driver" "" "no NVIDIA driver: libcuda.so.1"
    # 2. A driver that sees no GPU (the link stub, which answers CUDA_ERROR_NO_DEVICE) with the
    #    CUDA libraries present: cudarc loads libcuda and calls into it at run time.
    smoke_case "driver without a GPU" "$stub:$cu/lib" "CUDA_ERROR_NO_DEVICE"
fi

if [[ $mode == pack ]]; then
    # What a GPU machine needs besides the working tree (git-ignored, under out/): the binary
    # compressed, the model files, the fixture photos (read from ../shared, never committed).
    carry=$root/out/gpu-carry
    models=${FACEGATE_MODELS_DIR:-$root/models}
    fixtures=${FIXTURES:-$root/../shared/fixtures/faces}
    [[ -f $models/manifest.toml ]] || die "no models in $models (run: facegate models fetch)"
    [[ -d $fixtures ]] || die "no fixture photos in $fixtures"
    rm -rf "$carry"
    mkdir -p "$carry/models" "$carry/fixtures"
    strip -o "$carry/facegate" "$bin" 2>/dev/null || cp "$bin" "$carry/facegate"
    xz -T0 -6 "$carry/facegate"
    cp -r "$models"/. "$carry/models/"
    cp "$fixtures"/*.jpg "$carry/fixtures/"
    say "packed $carry ($(du -sh "$carry" | cut -f1)); on the GPU machine, from the tree's root:"
    say "  run carrying out/gpu-carry: bash scripts/gpu-machine.sh   (results under \$OUT)"
fi
