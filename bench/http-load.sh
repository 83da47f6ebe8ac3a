#!/usr/bin/env bash
# HTTP load benchmark (issue #3), loopback only, bounded in time:
#   1. `arbiter serve` on the example pack, decision log on (SQLite, batched), a bare
#      axum endpoint doing the same JSON work, and that endpoint plus raw Cedar on the
#      same pack (no log), each driven by oha at fixed concurrency;
#   2. arbiter again at half of the bare endpoint's throughput, for p99 at that load;
#   3. arbiter with the same request presenting a credential (a token minted through
#      POST /v1/credentials), for the cost of verification per decision;
#   4. arbiter started with --no-ui, to show the dashboard adds nothing to decisions.
# Prints decisions/s and p50/p99 for each, and the ratio.
# Usage: bench/http-load.sh [seconds per run, default 10] [concurrency, default 32]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-10}"
CONC="${2:-32}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/target}"
OHA="${OHA:-$(command -v oha || echo /work/tools/bin/oha)}"
if [ ! -x "$OHA" ]; then
  echo "installing oha from crates.io into /work/tools" >&2
  cargo install oha --locked --root /work/tools >&2
  OHA=/work/tools/bin/oha
fi
cargo build --release -p arbiter-cli >&2
cargo build --release -p arbiter-server --example bare >&2
BIN="$CARGO_TARGET_DIR/release"
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

BODY='{"principal":"Agent::\"support-bot\"","action":"Action::\"read_ticket\"","resource":"Ticket::\"T-1\"","context":{},"session":"load"}'

ARBITER_ADMIN_TOKEN=bench ARBITER_LOG=warn "$BIN/arbiter" serve --pack examples/agents-and-pipelines \
  --data "$WORK/data" --listen 127.0.0.1:18700 2>"$WORK/arbiter.log" &
# The same server without the dashboard: the dashboard must add nothing to decisions.
ARBITER_ADMIN_TOKEN=bench ARBITER_LOG=warn "$BIN/arbiter" serve --pack examples/agents-and-pipelines \
  --data "$WORK/data-no-ui" --listen 127.0.0.1:18701 --no-ui 2>"$WORK/arbiter-no-ui.log" &
"$BIN/examples/bare" 127.0.0.1:18799 2>"$WORK/bare.log" &
"$BIN/examples/bare" 127.0.0.1:18798 examples/agents-and-pipelines 2>"$WORK/bare-cedar.log" &
for port in 18700 18701 18799 18798; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/" -o /dev/null -X POST 2>/dev/null && break
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done

run() { # name url extra-args...
  local name="$1" url="$2"; shift 2
  "$OHA" -z "${SECS}s" -c "$CONC" -m POST -H 'content-type: application/json' -d "${RUN_BODY:-$BODY}" \
    --no-tui --output-format json "$@" "$url" > "$WORK/$name.json"
  python3 - "$name" "$WORK/$name.json" <<'PY'
import json, sys
name, path = sys.argv[1], sys.argv[2]
d = json.load(open(path))
s, p = d["summary"], d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
print(f"{name:>22}: {s['requestsPerSec']:10.0f} req/s  p50 {p['p50']*1000:7.3f} ms  p99 {p['p99']*1000:7.3f} ms  status {codes}")
PY
}

run bare "http://127.0.0.1:18799/v1/decide"
run "bare+raw-cedar" "http://127.0.0.1:18798/v1/decide"
run arbiter "http://127.0.0.1:18700/v1/decide"
# With and without the dashboard, alternated (the machine's load drifts between runs).
for i in 1 2 3; do
  run "ui-$i" "http://127.0.0.1:18700/v1/decide"
  run "no-ui-$i" "http://127.0.0.1:18701/v1/decide"
done
BARE=$(python3 -c "import json;print(json.load(open('$WORK/bare.json'))['summary']['requestsPerSec'])")
ARB=$(python3 -c "import json;print(json.load(open('$WORK/arbiter.json'))['summary']['requestsPerSec'])")
HALF=$(python3 -c "print(int($BARE/2))")
run "arbiter@half-load" "http://127.0.0.1:18700/v1/decide" -q "$HALF"
CEDAR=$(python3 -c "import json;print(json.load(open('$WORK/bare+raw-cedar.json'))['summary']['requestsPerSec'])")
python3 -c "print(f'arbiter / bare throughput: {$ARB/$BARE:.2f}x  (half load = {$HALF} req/s)')"
python3 -c "print(f'arbiter / bare+raw-cedar throughput: {$ARB/$CEDAR:.2f}x')"
python3 - "$WORK" <<'PY'
import json, statistics, sys
rate = lambda n: json.load(open(f"{sys.argv[1]}/{n}.json"))["summary"]["requestsPerSec"]
ui = [rate(f"ui-{i}") for i in (1, 2, 3)]
no = [rate(f"no-ui-{i}") for i in (1, 2, 3)]
pairs = ", ".join(f"{u / n:.2f}" for u, n in zip(ui, no))
print(f"with the dashboard / without, run by run: {pairs}; medians {statistics.median(ui):.0f} / {statistics.median(no):.0f} = {statistics.median(ui) / statistics.median(no):.2f}x")
PY
TOKEN=$(curl -sf -H 'Authorization: Bearer bench' -H 'content-type: application/json' \
  -d '{"principal":"Agent::\"support-bot\"","ttl":"1h"}' http://127.0.0.1:18700/v1/credentials \
  | python3 -c 'import json,sys;print(json.load(sys.stdin)["token"])')
RUN_BODY=$(python3 -c "import json,sys;b=json.loads(sys.argv[1]);b['credential']=sys.argv[2];print(json.dumps(b))" "$BODY" "$TOKEN") \
  run "arbiter+credential" "http://127.0.0.1:18700/v1/decide"
CRED=$(python3 -c "import json;print(json.load(open('$WORK/arbiter+credential.json'))['summary']['requestsPerSec'])")
python3 -c "print(f'with a credential: {$CRED/$ARB:.2f}x the throughput without ({1e6/$CRED - 1e6/$ARB:+.2f} us per decision at saturation)')"
LOGGED=$(ARBITER_ADMIN_TOKEN=bench curl -s -H 'Authorization: Bearer bench' 'http://127.0.0.1:18700/metrics' | grep -E '^arbiter_decisions_total' | awk '{s+=$2} END {print s}')
echo "decisions counted by arbiter: $LOGGED"
