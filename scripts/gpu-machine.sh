#!/usr/bin/env bash
# On a lent GPU machine (no Rust, no internet), from the root of the carried working tree with
# out/gpu-carry/ carried (made here by `scripts/build-cuda.sh --pack`): unpacks the binary and
# runs scripts/bench-gpu.sh on it with the carried models and photos. Results go under $OUT.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
carry=$root/out/gpu-carry
[[ -f $carry/facegate.xz ]] || { echo "gpu-machine: no $carry/facegate.xz (scripts/build-cuda.sh --pack)" >&2; exit 1; }
bin=$(mktemp -d)/facegate
xz -dc "$carry/facegate.xz" > "$bin"
chmod +x "$bin"
cd "$root"
FACEGATE_MODELS_DIR=$carry/models FIXTURES=$carry/fixtures OUT=${OUT:-$root/out/gpu} \
    exec bash scripts/bench-gpu.sh "$bin"
