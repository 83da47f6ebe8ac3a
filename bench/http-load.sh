#!/usr/bin/env bash
# HTTP load benchmark (issues 3 and 15), loopback only, bounded in time. Every figure is
# taken in this one run, so the ratios compare servers under the same machine load.
#
#   1. Saturation, oha at fixed concurrency against each server in turn, three rounds
#      (the summary takes each server's median):
#      - `bare`: an axum endpoint doing the same JSON work as /v1/decide, no policy, no log;
#      - `bare+raw-cedar`: the same plus raw Cedar on the example pack, no log;
#      - `arbiter`: `arbiter serve` on the example pack, decision log on (SQLite, batched).
#      For each: requests/s, p50/p99, and the server's CPU per request, read from
#      /proc/PID/stat (utime + stime over the run, divided by the requests it answered):
#      what the server costs, whoever else shares the cores.
#   2. arbiter at 80% of its own saturation throughput: p99 there.
#   3. POST /v1/decide/batch, 1,000 requests a body, one client: decisions/s, log on
#      (three runs, the median).
#   4. arbiter with and without the dashboard (--no-ui), alternated three times.
#   5. arbiter with the request presenting a credential: the cost of verification.
#   6. arbiter answering GET /healthz: its HTTP stack (accept loop, hyper, the router and
#      its layers) with no decision behind it, the floor under its CPU per decision.
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
TICKS=$(getconf CLK_TCK)

BODY='{"principal":"Agent::\"support-bot\"","action":"Action::\"read_ticket\"","resource":"Ticket::\"T-1\"","context":{},"session":"load"}'
python3 - "$BODY" > "$WORK/batch-body.json" <<'PY'
import json, sys
print(json.dumps({"requests": [json.loads(sys.argv[1])] * 1000}))
PY

declare -A PID
start() { # port name command...
  local port="$1" name="$2"; shift 2
  "$@" 2>"$WORK/$name.log" &
  PID[$port]=$!
}
start 18700 arbiter env ARBITER_ADMIN_TOKEN=bench ARBITER_LOG=warn "$BIN/arbiter" serve \
  --pack examples/agents-and-pipelines --data "$WORK/data" --listen 127.0.0.1:18700
# The same server without the dashboard: the dashboard must add nothing to decisions.
start 18701 arbiter-no-ui env ARBITER_ADMIN_TOKEN=bench ARBITER_LOG=warn "$BIN/arbiter" serve \
  --pack examples/agents-and-pipelines --data "$WORK/data-no-ui" --listen 127.0.0.1:18701 --no-ui
start 18799 bare "$BIN/examples/bare" 127.0.0.1:18799
start 18798 bare-cedar "$BIN/examples/bare" 127.0.0.1:18798 examples/agents-and-pipelines
for port in 18700 18701 18799 18798; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done

cpu_ticks() { # pid: the process's utime + stime so far, in clock ticks (all its threads)
  awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

# run NAME PORT PATH [oha args...]: one oha run; writes NAME.json and NAME.cpu (ticks).
run() {
  local name="$1" port="$2" path="$3"; shift 3
  local before after
  before=$(cpu_ticks "${PID[$port]}")
  "$OHA" -z "${SECS}s" -c "$CONC" -m "${METHOD:-POST}" -H 'content-type: application/json' \
    --no-tui --output-format json "$@" "http://127.0.0.1:$port$path" > "$WORK/$name.json"
  after=$(cpu_ticks "${PID[$port]}")
  echo $((after - before)) > "$WORK/$name.cpu"
  python3 - "$WORK" "$name" "$TICKS" "${PER:-1}" <<'PY'
import json, sys
work, name, ticks, per = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
d = json.load(open(f"{work}/{name}.json"))
s, p = d["summary"], d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
answered = sum(codes.values()) * per
cpu = int(open(f"{work}/{name}.cpu").read()) / ticks
unit = "decisions" if per > 1 else "req"
print(f"{name:>20}: {s['requestsPerSec'] * per:9.0f} {unit}/s  p50 {p['p50']*1000:7.3f} ms"
      f"  p99 {p['p99']*1000:7.3f} ms  server CPU {cpu * 1e6 / max(answered, 1):6.2f} us/{unit[:-1] if per > 1 else 'req'}"
      f"  status {codes}")
PY
}

# Three rounds, the servers in turn: a run's CPU per request moves by 10-20% with what
# else the two cores do in those seconds; the summary takes each server's median.
echo "== saturation, $CONC connections, ${SECS}s each, three rounds"
for i in 1 2 3; do
  run "bare-$i" 18799 /v1/decide -d "$BODY"
  run "bare+raw-cedar-$i" 18798 /v1/decide -d "$BODY"
  run "arbiter-$i" 18700 /v1/decide -d "$BODY"
done

ARB=$(python3 -c "
import json, statistics
print(statistics.median(json.load(open(f'$WORK/arbiter-{i}.json'))['summary']['requestsPerSec'] for i in (1, 2, 3)))")
EIGHTY=$(python3 -c "print(int($ARB * 0.8))")
echo "== arbiter at 80% of its saturation ($EIGHTY req/s)"
run arbiter@80% 18700 /v1/decide -d "$BODY" -q "$EIGHTY"

echo "== POST /v1/decide/batch, 1,000 requests a body, one client, three runs"
for i in 1 2 3; do
  PER=1000 CONC=1 run "batch-$i" 18700 /v1/decide/batch -D "$WORK/batch-body.json"
done

echo "== with and without the dashboard, alternated"
for i in 1 2 3; do
  run "ui-$i" 18700 /v1/decide -d "$BODY"
  run "no-ui-$i" 18701 /v1/decide -d "$BODY"
done

echo "== a credential presented"
TOKEN=$(curl -sf -H 'Authorization: Bearer bench' -H 'content-type: application/json' \
  -d '{"principal":"Agent::\"support-bot\"","ttl":"1h"}' http://127.0.0.1:18700/v1/credentials \
  | python3 -c 'import json,sys;print(json.load(sys.stdin)["token"])')
CRED_BODY=$(python3 -c "import json,sys;b=json.loads(sys.argv[1]);b['credential']=sys.argv[2];print(json.dumps(b))" "$BODY" "$TOKEN")
run arbiter+credential 18700 /v1/decide -d "$CRED_BODY"

echo "== arbiter's HTTP stack alone: GET /healthz"
METHOD=GET run healthz 18700 /healthz

echo "== summary"
python3 - "$WORK" "$TICKS" <<'PY'
import json, statistics, sys
work, ticks = sys.argv[1], int(sys.argv[2])
def load(n):
    return json.load(open(f"{work}/{n}.json"))
def rate(n):
    return load(n)["summary"]["requestsPerSec"]
def cpu_per(n, per=1):
    answered = sum(load(n).get("statusCodeDistribution", {}).values()) * per
    return int(open(f"{work}/{n}.cpu").read()) / ticks * 1e6 / max(answered, 1)
def median(f, n, *args):
    return statistics.median(f(f"{n}-{i}", *args) for i in (1, 2, 3))
bare, cedar, arb = median(rate, "bare"), median(rate, "bare+raw-cedar"), median(rate, "arbiter")
cpu_bare, cpu_cedar, cpu_arb = (median(cpu_per, n) for n in ("bare", "bare+raw-cedar", "arbiter"))
print("medians of three rounds:")
print(f"CPU per request, arbiter (log on) / bare: {cpu_arb:.2f} / {cpu_bare:.2f} us"
      f" = {cpu_arb / cpu_bare:.2f}x   (target <= 1.6x)")
print(f"CPU per request, bare+raw-cedar / bare: {cpu_cedar:.2f} / {cpu_bare:.2f} us = {cpu_cedar / cpu_bare:.2f}x")
print(f"CPU per request, arbiter's GET /healthz / bare: {cpu_per('healthz'):.2f} / {cpu_bare:.2f} us"
      f" = {cpu_per('healthz') / cpu_bare:.2f}x (its HTTP stack, no decision)")
print(f"throughput, arbiter / bare+raw-cedar: {arb / cedar:.2f}x   (target >= 1.3x)")
print(f"throughput, arbiter / bare: {arb / bare:.2f}x")
p99 = load("arbiter@80%")["latencyPercentiles"]["p99"] * 1000
print(f"p99 at 80% of arbiter's saturation ({0.8 * arb:.0f} req/s): {p99:.3f} ms   (target < 2 ms)")
print(f"batch: {median(rate, 'batch') * 1000:.0f} decisions/s,"
      f" server CPU {median(cpu_per, 'batch', 1000):.2f} us a decision   (target >= 200,000/s)")
ui = [rate(f"ui-{i}") for i in (1, 2, 3)]
no = [rate(f"no-ui-{i}") for i in (1, 2, 3)]
pairs = ", ".join(f"{u / n:.2f}" for u, n in zip(ui, no))
print(f"with the dashboard / without, run by run: {pairs};"
      f" medians {statistics.median(ui):.0f} / {statistics.median(no):.0f}"
      f" = {statistics.median(ui) / statistics.median(no):.2f}x")
cred = rate("arbiter+credential")
print(f"with a credential: {cred / arb:.2f}x the throughput without"
      f" ({cpu_per('arbiter+credential') - cpu_arb:+.2f} us of server CPU per decision)")
PY
LOGGED=$(curl -s -H 'Authorization: Bearer bench' 'http://127.0.0.1:18700/metrics' \
  | grep -E '^arbiter_decisions_total' | awk '{s+=$2} END {print s}')
echo "decisions counted by arbiter: $LOGGED"
