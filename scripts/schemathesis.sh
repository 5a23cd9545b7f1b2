#!/usr/bin/env bash
# API fuzzing from the OpenAPI document: schemathesis (PyPI, pinned) against a live
# `facegate serve` on loopback, every operation of /openapi.json, a bounded number of
# generated requests per operation. Fails on a 5xx, a status the document does not declare,
# an undeclared media type or a body that violates its schema.
#
#   scripts/schemathesis.sh [EXAMPLES]      (default 10: the bounded form scripts/test.sh runs;
#                                            the long form on demand, e.g. 200)
#
# $FACEGATE_ST_SEED fixes hypothesis's seed (scripts/test.sh does, so that CI runs the same
# cases every time); without it every run draws new ones and prints its seed.
#
# Needs the models (facegate models fetch) and a built binary ($FACEGATE_BIN, else
# target/debug/facegate, built here when missing). The venv lives in target/schemathesis-venv.
set -euo pipefail
cd "$(dirname "$0")/.."
EXAMPLES="${1:-10}"
VERSION=4.32.5
VENV=target/schemathesis-venv
BIN="${FACEGATE_BIN:-target/debug/facegate}"
if [ ! -x "$VENV/bin/st" ] || ! "$VENV/bin/st" --version 2>/dev/null | grep -q "$VERSION"; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION"
fi
[ -x "$BIN" ] || cargo build --quiet --features video
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
"$BIN" serve --listen "127.0.0.1:$port" --bi-db :memory: >"$dir/server.log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
for _ in $(seq 1 240); do
  if curl -sf "http://127.0.0.1:$port/health" >/dev/null; then break; fi
  kill -0 "$pid" 2>/dev/null || { cat "$dir/server.log"; echo "schemathesis: the server exited" >&2; exit 1; }
  sleep 0.5
done
curl -sf "http://127.0.0.1:$port/health" >/dev/null || { echo "schemathesis: the server never became ready" >&2; exit 1; }
status=0
"$VENV/bin/st" run "http://127.0.0.1:$port/openapi.json" \
  --checks status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$EXAMPLES" \
  --workers 2 \
  --request-timeout 60 \
  --suppress-health-check all \
  --no-color \
  ${FACEGATE_ST_SEED:+--seed "$FACEGATE_ST_SEED"} || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- server log (last 40 lines)" >&2
  tail -40 "$dir/server.log" >&2
fi
exit "$status"
