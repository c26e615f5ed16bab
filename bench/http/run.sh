#!/usr/bin/env bash
# The HTTP load benchmarks of BENCHMARKS.md ("Load"): a release `serve` on loopback, driven by wrk
# with bench/http/scenario.lua, one fresh data folder per run.
#
#   bash bench/http/run.sh [seconds] [connections...]     defaults: 15 s, 16 connections
#   STORES="sqlite memory" SCENARIOS="verify begin" USERS=10000 bash bench/http/run.sh 15 16 64 256
#   NODES=2 STORES=postgres://…/fresh_db bash bench/http/run.sh 10 16
#
# NODES=2 (a Postgres or Redis store only) starts two `serve` processes on the same store and trail,
# as two nodes behind a load balancer, and drives each with its own wrk at half the connections,
# at the same time; it prints each node's figures and their sum.
#
# It prints the machine's load before each run, req/s, p50/p99 and the status mix, and fails if
# any answer was a 5xx or a socket failed: a figure is only worth reporting for a run that worked.
# CI runs it for 2 s as a smoke test (the figures there are not benchmarks).
set -euo pipefail
cd "$(dirname "$0")/../.."

bin=${MFA_STEP_BIN:-target/release/mfa-step}
seconds=${1:-15}
shift || true
connections=("$@")
[ ${#connections[@]} -gt 0 ] || connections=(16)
stores=${STORES:-sqlite}
scenarios=${SCENARIOS:-verify begin}
export USERS=${USERS:-10000}

[ -x "$bin" ] || { echo "bench/http: no $bin; build it: cargo build --release -p host-harness" >&2; exit 1; }
command -v wrk >/dev/null || { echo "bench/http: wrk is missing (apt-get install wrk)" >&2; exit 1; }

nodes=${NODES:-1}
[ "$nodes" = 1 ] || [ "$nodes" = 2 ] || { echo "bench/http: NODES is 1 or 2" >&2; exit 1; }

work=$(mktemp -d)
servers=()
stop() {
  for pid in "${servers[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
  servers=()
}
trap 'stop; rm -rf "$work"' EXIT

# Starts one node on $1 with its data folder $2, and waits for it to answer.
start_node() {
  mkdir -p "$2"
  "$bin" serve --listen "127.0.0.1:$1" --data-dir "$2" --store "$store" \
    --log-format json 2>"$2/serve.log" &
  servers+=($!)
  for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:$1/healthz" >/dev/null 2>&1 && return
    sleep 0.05
  done
}

# One wrk run against the node on $1 (data folder $2) with $3 connections; prints its last two lines.
drive() {
  SCENARIO=$scenario API_KEY=$(cat "$2/api.key") \
    wrk -t2 -c"$3" -d"${seconds}s" --latency -s bench/http/scenario.lua "http://127.0.0.1:$1" |
    tail -n 2
}

port=$((20000 + RANDOM % 20000))
failed=0
for store in $stores; do
  if [ "$nodes" = 2 ]; then
    case $store in
      postgres://* | postgresql://* | redis://*) ;;
      *) echo "bench/http: NODES=2 needs a Postgres or Redis store, not $store" >&2; exit 1 ;;
    esac
  fi
  for scenario in $scenarios; do
    for conns in "${connections[@]}"; do
      data="$work/$store-$scenario-$conns"
      data=${data//[^A-Za-z0-9._\/-]/_}
      start_node "$port" "$data/node1"
      [ "$nodes" = 2 ] && start_node "$((port + 1000))" "$data/node2"
      echo "== store $store, $scenario, $conns connections, $nodes node(s), ${seconds} s, $USERS users; load: $(cut -d' ' -f1-3 /proc/loadavg)"
      if [ "$nodes" = 2 ]; then
        drive "$((port + 1000))" "$data/node2" "$((conns / 2))" >"$data/node2.out" &
        second=$!
        out=$(drive "$port" "$data/node1" "$((conns / 2))")
        wait "$second"
        out2=$(cat "$data/node2.out")
        echo "node 1: $out"
        echo "node 2: $out2"
        rate() { sed -n 's/^[a-z]*: \([0-9]*\) req\/s.*/\1/p' <<<"$1"; }
        echo "both nodes: $(($(rate "$out") + $(rate "$out2"))) req/s"
        out="$out"$'\n'"$out2"
      else
        out=$(drive "$port" "$data/node1" "$conns")
        echo "$out"
      fi
      if [ "$(echo "$out" | grep -c '^5xx: 0, socket errors: 0$')" != "$nodes" ]; then
        echo "bench/http: a 5xx or a socket error in this run" >&2
        failed=1
      fi
      stop
      port=$((port + 1))
    done
  done
done
exit "$failed"
