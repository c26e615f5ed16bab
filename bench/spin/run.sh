#!/usr/bin/env bash
# The Spin benchmark of BENCHMARKS.md ("Spin"): the app of spin.toml on `spin up` (Spin 4.0.x,
# SPIN_BIN, default ../shared/tools/spin) with a fresh state directory, driven by wrk with
# bench/http/scenario.lua, as bench/http/run.sh drives `serve`.
#
#   bash bench/spin/run.sh [seconds] [connections]          defaults: 15 s, 16 connections
#   SCENARIOS="begin verify" USERS=1000 bash bench/spin/run.sh 15 16
#   KV=redis://127.0.0.1:6379/3 bash bench/spin/run.sh      (state in that Redis database, flushed)
#   JOURNAL=delete bash bench/spin/run.sh                     (Spin's SQLite file as Spin creates it)
#
# By default the SQLite file is put in WAL mode before `spin up` creates its table (README, "Run on
# Spin"): JOURNAL=delete measures the file as Spin leaves it (rollback journal, four fsyncs a write).
#
# Before wrk starts, one `begin` of another organization opens Spin's key-value store: Spin 4.0.2
# opens its SQLite connection on the first key-value call, and when several requests make that
# call at once each may open one (spin's key-value-spin `StoreManager::get`: "we might do
# duplicate work here if there's a race"); the first requests then stalled for 0.1 to 0.9 s, and
# a transaction on the kept connection could fail with SQLITE_BUSY (`database is locked`: the
# component answers 503, fail closed). wrk counts a stall of S ms as S / (its mean interval)
# requests (its coordinated-omission correction), so that one stall alone moved the p99 of a
# 15 s run by up to 600 ms. COLD=1 skips the warm-up, to measure a fresh start as it is.
#
# Builds both components first (bash spin/build.sh). Prints the machine's load before each run,
# req/s, p50/p99 and the status mix; fails if any answer was a 5xx or a socket failed.
set -euo pipefail
cd "$(dirname "$0")/../.."

spin=${SPIN_BIN:-../shared/tools/spin}
seconds=${1:-15}
conns=${2:-16}
scenarios=${SCENARIOS:-begin}
export USERS=${USERS:-1000}
kv=${KV:-sqlite}

[ -x "$spin" ] || { echo "bench/spin: no Spin CLI at $spin (set SPIN_BIN)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "bench/spin: wrk is missing (apt-get install wrk)" >&2; exit 1; }
bash spin/build.sh >/dev/null

work=$(mktemp -d)
pid=
# `spin up` serves from a child process (`spin trigger http`): it runs in a session of its own,
# whose whole process group is stopped.
stop() { [ -n "$pid" ] && kill -- "-$pid" 2>/dev/null && wait "$pid" 2>/dev/null; pid=; }
trap 'stop; rm -rf "$work"' EXIT

api_key=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
port=$((20000 + RANDOM % 20000))
failed=0
for scenario in $scenarios; do
  state="$work/$scenario"
  mkdir -p "$state"
  if [ "$kv" = sqlite ] && [ "${JOURNAL:-wal}" = wal ]; then
    sqlite3 "$state/sqlite_key_value.db" 'PRAGMA journal_mode=WAL;' >/dev/null
  fi
  args=(up --from spin.toml --listen "127.0.0.1:$port" --state-dir "$state" --quiet)
  if [ "$kv" != sqlite ]; then
    redis-cli -u "$kv" FLUSHDB >/dev/null
    printf '[key_value_store.default]\ntype = "redis"\nurl = "%s"\n' "$kv" >"$work/runtime-config.toml"
    args+=(--runtime-config-file "$work/runtime-config.toml")
  fi
  # begin and verify send no email: the mail API is never called, so none is started.
  SPIN_VARIABLE_HMAC_KEY=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n') \
  SPIN_VARIABLE_API_KEY=$api_key \
  SPIN_VARIABLE_MAIL_API_ORIGIN=http://127.0.0.1:9 \
  SPIN_VARIABLE_MAIL_API_TOKEN=unused \
    setsid "$spin" "${args[@]}" >"$state/spin.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  warm=warmed
  if [ -n "${COLD:-}" ]; then
    warm=cold
  else
    curl -sf -o /dev/null -X POST "http://127.0.0.1:$port/v1/login/begin" \
      -H "authorization: Bearer $api_key" -H 'content-type: application/json' \
      -d '{"context":{"user_id":"warm-up","org_id":"bench-warm-up","email":"w@clinic.example","roles":["provider"],"device":{"ip":"10.255.0.1"}}}' ||
      { echo "bench/spin: the warm-up begin failed" >&2; failed=1; }
  fi
  echo "== spin up ($warm), kv $kv, $scenario, $conns connections, ${seconds} s, $USERS users; load: $(cut -d' ' -f1-3 /proc/loadavg)"
  out=$(SCENARIO=$scenario API_KEY=$api_key \
    wrk -t2 -c"$conns" -d"${seconds}s" --latency -s bench/http/scenario.lua "http://127.0.0.1:$port" |
    tail -n 2)
  echo "$out"
  grep -q '^5xx: 0, socket errors: 0$' <<<"$out" || { echo "bench/spin: a 5xx or a socket error in this run" >&2; failed=1; }
  stop
  port=$((port + 1))
done
exit "$failed"
