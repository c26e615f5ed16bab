#!/usr/bin/env bash
# The HTTP load benchmarks of BENCHMARKS.md ("Load"): a release `serve` on loopback, driven by wrk
# with bench/http/scenario.lua, one fresh data folder per run.
#
#   bash bench/http/run.sh [seconds] [connections...]     defaults: 15 s, 16 connections
#   STORES="sqlite memory" SCENARIOS="verify begin" USERS=10000 bash bench/http/run.sh 15 16 64 256
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

work=$(mktemp -d)
server=
stop() { [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null; server=; }
trap 'stop; rm -rf "$work"' EXIT

port=$((20000 + RANDOM % 20000))
failed=0
for store in $stores; do
  for scenario in $scenarios; do
    for conns in "${connections[@]}"; do
      data="$work/$store-$scenario-$conns"
      mkdir -p "$data"
      "$bin" serve --listen "127.0.0.1:$port" --data-dir "$data" --store "$store" \
        --log-format json 2>"$data/serve.log" &
      server=$!
      for _ in $(seq 200); do
        curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
        sleep 0.05
      done
      echo "== store $store, $scenario, $conns connections, ${seconds} s, $USERS users; load: $(cut -d' ' -f1-3 /proc/loadavg)"
      out=$(SCENARIO=$scenario API_KEY=$(cat "$data/api.key") \
        wrk -t2 -c"$conns" -d"${seconds}s" --latency -s bench/http/scenario.lua \
        "http://127.0.0.1:$port")
      echo "$out" | tail -n 2
      if ! echo "$out" | grep -q '^5xx: 0, socket errors: 0$'; then
        echo "bench/http: a 5xx or a socket error in this run" >&2
        failed=1
      fi
      stop
      port=$((port + 1))
    done
  done
done
exit "$failed"
