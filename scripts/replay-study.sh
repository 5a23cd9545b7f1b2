#!/usr/bin/env bash
# The replay-signal study of docs/calibration.md ("Screens"): assembles one evaluation folder
# from ../shared (links, nothing copied into the repository) and simulated recaptures, then runs
# `facegate eval --replay` on it.
#
#   live/               nuaa-dev's 200 live crops, image_T1.jpg, person-linda.jpg
#   spoof/print/        nuaa-dev's 200 print attacks, image_F1.jpg
#   spoof/replay/       image_F2.jpg (the one real screen replay)
#   spoof/replay-sim/   every live image above shown on the modelled LCD and photographed
#                       (examples/recapture.rs, preprocess::recapture; parameters in params.jsonl)
#
# Output in target/replay-study/: summary.json (stdout of eval), scores.jsonl (--dump), det.svg.
# The threshold is the largest bona fide prominence; no attack image takes part in choosing it.
# FACEGATE_CARGO_ARGS adds cargo arguments (e.g. "--features video" to reuse that build).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${FACEGATE_SHARED:-$(cd .. && pwd)/shared}"
read -r -a CARGO_ARGS <<< "${FACEGATE_CARGO_ARGS:-}"
OUT=target/replay-study
SET="$OUT/set"
rm -rf "$OUT"
mkdir -p "$SET/live" "$SET/spoof/print" "$SET/spoof/replay"
for f in "$SHARED"/datasets/nuaa-dev/live/*; do ln -s "$f" "$SET/live/"; done
for f in "$SHARED"/datasets/nuaa-dev/spoof/*; do ln -s "$f" "$SET/spoof/print/"; done
ln -s "$SHARED/fixtures/faces/image_T1.jpg" "$SHARED/fixtures/faces/person-linda.jpg" "$SET/live/"
ln -s "$SHARED/fixtures/faces/image_F1.jpg" "$SET/spoof/print/"
ln -s "$SHARED/fixtures/faces/image_F2.jpg" "$SET/spoof/replay/"
cargo run --quiet "${CARGO_ARGS[@]}" --example recapture -- "$SET/spoof/replay-sim" "$SET/live"
cargo run --quiet "${CARGO_ARGS[@]}" -- eval "$SET" --replay --dump "$OUT/scores.jsonl" --det "$OUT/det.svg" \
  > "$OUT/summary.json"
echo "replay study: $OUT/summary.json, $OUT/scores.jsonl"
