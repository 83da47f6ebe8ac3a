#!/usr/bin/env bash
# How long the dashboard's pages take server-side on a large decision log (issue 14),
# loopback only: serves DATA (a copy is not made: the first open migrates it to the
# current schema, which is timed too) with the release build, signs in, then loads each
# page RUNS times and prints the server's own time (its `Server-Timing` header) as
# min / median / max in ms, and the page's size.
# Usage: bench/ui-pages.sh DATA_DIR PACK_DIR [runs, default 20]
# With BIN=path, that binary is measured instead of the release build (builds side by side).
# A 1,000,000-decision log: cargo run --release -p arbiter-service --example synthetic_log -- DIR 1000000 30
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="$1"; PACK="$2"; RUNS="${3:-20}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/target}"
if [ -z "${BIN:-}" ]; then
  cargo build --release -p arbiter-cli >&2
  BIN="$CARGO_TARGET_DIR/release/arbiter"
fi
PORT=18711
JAR="$(mktemp)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -f "$JAR"' EXIT
started=$(date +%s.%N)
ARBITER_ADMIN_TOKEN=bench ARBITER_LOG=warn "$BIN" serve --pack "$PACK" --data "$DATA" \
  --listen 127.0.0.1:$PORT 2>"$DATA/ui-bench.log" &
for _ in $(seq 600); do curl -sf "http://127.0.0.1:$PORT/healthz" -o /dev/null && break; sleep 0.1; done
echo "ready after $(echo "$(date +%s.%N) - $started" | bc) s (schema migration included)"
page=$(curl -s -c "$JAR" -b "$JAR" "http://127.0.0.1:$PORT/ui/signin")
signin=$(grep -o 'name="signin" value="[^"]*"' <<<"$page" | sed 's/.*value="//;s/"$//')
curl -s -c "$JAR" -b "$JAR" -o /dev/null --data-urlencode "token=bench" \
  --data-urlencode "signin=$signin" "http://127.0.0.1:$PORT/ui/signin"

ADMIN=(-H "Authorization: Bearer bench")
decision=$(curl -s "${ADMIN[@]}" "http://127.0.0.1:$PORT/v1/decisions?limit=1" | grep -o '"decision_id":"[^"]*"' | head -1 | cut -d'"' -f4)
principal=$(curl -s "${ADMIN[@]}" "http://127.0.0.1:$PORT/v1/decisions?limit=1" | grep -o '"principal":"[^"]*\\"[^"]*\\""' | head -1 | cut -d: -f2- | sed 's/^"//;s/"$//;s/\\"/"/g')
rule=$(curl -s "${ADMIN[@]}" "http://127.0.0.1:$PORT/v1/readiness" | grep -o '"rule":"[^"]*"' | head -1 | cut -d'"' -f4)
enc() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$1"; }

printf '%-48s %8s %8s %8s %9s\n' page min median max bytes
for path in "/ui" "/ui/rules" "/ui/rule?name=$(enc "$rule")" "/ui/rule?name=default-deny%3AService" \
    "/ui/decisions" "/ui/decisions?principal=$(enc "$principal")" "/ui/decisions?decision=deny&rule=$(enc "$rule")" \
    "/ui/decision?id=$decision" "/ui/identities" "/ui/identity?principal=$(enc "$principal")"; do
  times=()
  for _ in $(seq "$RUNS"); do
    t=$(curl -s -b "$JAR" -o "$JAR.page" -D - "http://127.0.0.1:$PORT$path" | tr -d '\r' \
        | sed -n 's/^server-timing: page;dur=//p')
    times+=("$t")
  done
  bytes=$(wc -c <"$JAR.page")
  sorted=$(printf '%s\n' "${times[@]}" | sort -n)
  min=$(head -1 <<<"$sorted"); max=$(tail -1 <<<"$sorted")
  median=$(sed -n "$(( (RUNS + 1) / 2 ))p" <<<"$sorted")
  printf '%-48s %8s %8s %8s %9s\n' "${path:0:48}" "$min" "$median" "$max" "$bytes"
done
rm -f "$JAR.page"
