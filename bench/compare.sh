#!/usr/bin/env bash
# Before/after, in one run: the engine benchmark (`cargo bench --bench decide`) and the
# HTTP load benchmark, for a base revision and for the working tree, side by side.
# Loopback only; every server started here is stopped on exit.
#   bench/compare.sh BASE_REV [seconds per HTTP run, default 10] [concurrency, default 32]
# The base is checked out in a temporary worktree and built in its own target directory
# ($BASE_TARGET, default /work/target-base), so the two builds never share artifacts.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE="${1:?usage: bench/compare.sh BASE_REV [secs] [concurrency]}"
SECS="${2:-10}"
CONC="${3:-32}"
HERE="$(pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/target}"
BASE_TARGET="${BASE_TARGET:-/work/target-base}"
OHA="${OHA:-$(command -v oha || echo /work/tools/bin/oha)}"
if [ ! -x "$OHA" ]; then
  echo "installing oha from crates.io into /work/tools" >&2
  cargo install oha --locked --root /work/tools >&2
  OHA=/work/tools/bin/oha
fi
WORK="$(mktemp -d)"
TREE="$WORK/base"
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  git -C "$HERE" worktree remove --force "$TREE" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
git worktree add --detach -q "$TREE" "$BASE"

build() { # dir target
  (cd "$1" && CARGO_TARGET_DIR="$2" cargo build -q --release -p arbiter-cli \
    && CARGO_TARGET_DIR="$2" cargo build -q --release -p arbiter-server --example bare) >&2
}
build "$TREE" "$BASE_TARGET"
build "$HERE" "$CARGO_TARGET_DIR"

# The engine, each side in turn; criterion's point estimates (mean, ns).
bench_engine() { # dir target label
  (cd "$1" && CARGO_TARGET_DIR="$2" cargo bench -q -p arbiter-core --bench decide -- \
    --warm-up-time 1 --measurement-time 3 'decide/arbiter|decide/raw_cedar/' >/dev/null 2>&1)
  python3 - "$2/criterion" "$3" >>"$WORK/engine.txt" <<'PY'
import json, os, sys
root, label = sys.argv[1], sys.argv[2]
for impl in ["arbiter", "raw_cedar"]:
    for rules in ["10", "100", "1000"]:
        path = os.path.join(root, "decide", impl, rules, "new", "estimates.json")
        if os.path.exists(path):
            mean = json.load(open(path))["mean"]["point_estimate"]
            print(f"{label}\t{impl}/{rules}\t{mean/1000:.2f}")
PY
}
: >"$WORK/engine.txt"
bench_engine "$TREE" "$BASE_TARGET" before
bench_engine "$HERE" "$CARGO_TARGET_DIR" after

BODY='{"principal":"Agent::\"support-bot\"","action":"Action::\"read_ticket\"","resource":"Ticket::\"T-1\"","context":{},"session":"load"}'
start() { # bin port data
  ARBITER_ADMIN_TOKEN=bench ARBITER_LOG=warn "$1" serve --pack "$HERE/examples/agents-and-pipelines" \
    --data "$3" --listen "127.0.0.1:$2" 2>"$WORK/$2.log" &
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return; sleep 0.1; done
}
run() { # label port
  "$OHA" -z "${SECS}s" -c "$CONC" -m POST -H 'content-type: application/json' -d "$BODY" \
    --no-tui --output-format json "http://127.0.0.1:$2/v1/decide" >"$WORK/$1.json"
}
start "$BASE_TARGET/release/arbiter" 18710 "$WORK/data-before"
start "$CARGO_TARGET_DIR/release/arbiter" 18711 "$WORK/data-after"
"$CARGO_TARGET_DIR/release/examples/bare" 127.0.0.1:18799 2>"$WORK/bare.log" &
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/18799) 2>/dev/null && break; sleep 0.1; done
# Alternate, so drift on a shared machine falls on both sides alike.
run bare 18799
for round in 1 2; do
  run "before-$round" 18710
  run "after-$round" 18711
done

python3 - "$WORK" <<'PY'
import json, os, sys
work = sys.argv[1]
rows = {}
for line in open(os.path.join(work, "engine.txt")):
    label, name, us = line.split("\t")
    rows.setdefault(name, {})[label] = float(us)
print("engine (cargo bench --bench decide), mean per decision:")
print(f"  {'':16} {'before':>10} {'after':>10} {'after/before':>13}")
for name, r in rows.items():
    b, a = r.get("before"), r.get("after")
    if b and a:
        print(f"  {name:16} {b:8.2f}us {a:8.2f}us {a/b:12.2f}x")
def load(name):
    d = json.load(open(os.path.join(work, name + ".json")))
    s, p = d["summary"], d["latencyPercentiles"]
    return s["requestsPerSec"], p["p50"] * 1000, p["p99"] * 1000
bare = load("bare")
print(f"HTTP, decision log on, POST /v1/decide (c={os.environ.get('CONC', '')}):")
print(f"  {'bare axum':16} {bare[0]:10.0f} req/s  p50 {bare[1]:6.3f} ms  p99 {bare[2]:6.3f} ms")
for side in ["before", "after"]:
    runs = [load(f"{side}-{i}") for i in (1, 2)]
    rps = sum(r[0] for r in runs) / len(runs)
    p50 = sum(r[1] for r in runs) / len(runs)
    p99 = sum(r[2] for r in runs) / len(runs)
    print(f"  {side:16} {rps:10.0f} req/s  p50 {p50:6.3f} ms  p99 {p99:6.3f} ms  ({rps/bare[0]:.2f}x bare)")
PY
