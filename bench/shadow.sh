#!/usr/bin/env bash
# What a candidate in shadow costs (issue 11 §3), loopback only, bounded in time.
#
# Three `arbiter serve` on the example pack, decision log on (SQLite, batched): one without
# a candidate, one with `--candidate` at `--candidate-sample 1`, one at 0.1. The traffic is
# 1,000 agents reading a ticket in a session of their own (a body per line, `oha -Z`):
# sampling is by principal, so the sample needs many principals to be a tenth. The pack in
# force denies them (default-deny:Agent); the candidate is the example pack plus a permit
# for agents to read tickets, so every request it decides is a difference (a loosen), the
# most work its aggregate can have.
#
# Each server is driven by oha at fixed concurrency, in turn, for `rounds` rounds. For each
# run: decisions/s, p50/p99, and the server's CPU per decision (user + system, from
# /proc/PID/stat over the run: on a 2-core machine oha shares the cores, so throughput
# alone misleads). Then the ratios against the server without a candidate, and what the
# shadows decided and dropped.
#
# Usage: bench/shadow.sh [seconds per run, default 10] [concurrency, default 32] [rounds, default 2]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-10}"
CONC="${2:-32}"
ROUNDS="${3:-2}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/target}"
OHA="${OHA:-$(command -v oha || echo /work/tools/bin/oha)}"
if [ ! -x "$OHA" ]; then
  echo "installing oha from crates.io into /work/tools" >&2
  cargo install oha --locked --root /work/tools >&2
  OHA=/work/tools/bin/oha
fi
cargo build --release -p arbiter-cli >&2
BIN="$CARGO_TARGET_DIR/release"
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT

PACK=examples/agents-and-pipelines
cp -r "$PACK" "$WORK/candidate"
cat > "$WORK/candidate/policies/candidate.cedar" <<'CEDAR'
@id("candidate.agents-read-tickets")
permit (principal is Agent, action == Action::"read_ticket", resource);
CEDAR
python3 - > "$WORK/bodies.jsonl" <<'PY'
import json
for i in range(1000):
    print(json.dumps({"principal": f'Agent::"agent-{i}"', "action": 'Action::"read_ticket"',
                      "resource": 'Ticket::"T-1"', "session": f"s{i}"}))
PY

declare -A PORT=([none]=18710 [sample-1.0]=18711 [sample-0.1]=18712)
declare -A PID
start() { # name extra-args...
  local name="$1"; shift
  ARBITER_ADMIN_TOKEN=bench ARBITER_LOG=warn "$BIN/arbiter" serve --pack "$PACK" \
    --data "$WORK/data-$name" --listen "127.0.0.1:${PORT[$name]}" "$@" 2>"$WORK/$name.log" &
  PID[$name]=$!
}
start none
start sample-1.0 --candidate "$WORK/candidate" --candidate-sample 1
start sample-0.1 --candidate "$WORK/candidate" --candidate-sample 0.1
for name in none sample-1.0 sample-0.1; do
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:${PORT[$name]}/healthz" -o /dev/null && break
    sleep 0.1
  done
done

cpu_ticks() { # pid → utime + stime, in clock ticks (the comm field holds no space here)
  awk '{print $14 + $15}' "/proc/$1/stat"
}
worker_ticks() { # pid → the same for its shadow worker thread, 0 without one
  local t total=0
  for t in /proc/"$1"/task/*; do
    if [ "$(cat "$t/comm")" = arbiter-shadow ]; then
      total=$((total + $(awk '{print $14 + $15}' "$t/stat")))
    fi
  done
  echo "$total"
}
TICK=$(getconf CLK_TCK)

run() { # name round
  local name="$1" round="$2" before after wbefore wafter
  before=$(cpu_ticks "${PID[$name]}")
  wbefore=$(worker_ticks "${PID[$name]}")
  "$OHA" -z "${SECS}s" -c "$CONC" -m POST -H 'content-type: application/json' \
    -Z "$WORK/bodies.jsonl" --no-tui --output-format json \
    "http://127.0.0.1:${PORT[$name]}/v1/decide" > "$WORK/$name-$round.json"
  after=$(cpu_ticks "${PID[$name]}")
  wafter=$(worker_ticks "${PID[$name]}")
  python3 - "$name" "$WORK/$name-$round.json" "$((after - before))" "$TICK" \
    "$((wafter - wbefore))" <<'PY'
import json, sys
name, path, ticks, hz = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
worker = int(sys.argv[5])
d = json.load(open(path))
s, p = d["summary"], d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
n = sum(codes.values())
cpu = ticks / hz * 1e6 / max(n, 1)
shadow = worker / hz * 1e6 / max(n, 1)
print(f"{name:>12}: {s['requestsPerSec']:9.0f} req/s  p50 {p['p50']*1000:6.3f} ms  "
      f"p99 {p['p99']*1000:6.3f} ms  server CPU {cpu:6.1f} us/decision "
      f"(shadow worker {shadow:5.1f})  status {codes}")
json.dump({"rps": s["requestsPerSec"], "cpu": cpu}, open(path + ".sum", "w"))
PY
}

for round in $(seq "$ROUNDS"); do
  for name in none sample-1.0 sample-0.1; do
    run "$name" "$round"
  done
done

python3 - "$WORK" "$ROUNDS" <<'PY'
import json, sys
work, rounds = sys.argv[1], int(sys.argv[2])
def mean(name, key):
    return sum(json.load(open(f"{work}/{name}-{r}.json.sum"))[key] for r in range(1, rounds + 1)) / rounds
base_rps, base_cpu = mean("none", "rps"), mean("none", "cpu")
for name in ["sample-1.0", "sample-0.1"]:
    rps, cpu = mean(name, "rps"), mean(name, "cpu")
    print(f"{name}: throughput {rps / base_rps:.2f}x, server CPU per decision {cpu / base_cpu:.2f}x "
          f"({cpu - base_cpu:+.1f} us) of the server without a candidate")
PY
sleep 1 # the shadow adds to the store twice a second
for name in sample-1.0 sample-0.1; do
  DECIDED=$(curl -sf "http://127.0.0.1:${PORT[$name]}/metrics" \
    | awk '/^arbiter_decisions_total/ {s += $2} END {print s}')
  curl -sf "http://127.0.0.1:${PORT[$name]}/metrics" | grep -E '^arbiter_shadow_requests_total' \
    | sed "s/^/$name: /"
  curl -sf -H 'Authorization: Bearer bench' "http://127.0.0.1:${PORT[$name]}/v1/candidate" \
    | python3 -c "import json, sys
r = json.load(sys.stdin)
print('$name: $DECIDED decided, %d in shadow (%.3f), %d dropped, %d principals in by_principal (%d changes past the cap), changes %s'
      % (r['shadowed'], r['shadowed'] / $DECIDED, r['dropped'],
         len(r['by_principal']), r['overflow']['by_principal'], r['changes']))"
done
