#!/usr/bin/env bash
# The Django host's benchmarks (BENCHMARKS.md, "The Django host"): mfa-step-django against
# django-otp's own EmailDevice in one project, on one database, with one mail stand-in.
#
#   bash hosts/django/bench/run.sh [LOGINS] [SECONDS] [CONNECTIONS]
#   MFA_STEP_BENCH_POSTGRES=postgres://… bash hosts/django/bench/run.sh     (Postgres instead of SQLite;
#                                        a database of its own: the run adds users and rows to it)
#   MFA_STEP_BENCH_SQLITE=wal|wal-full|rollback   the SQLite journal for both sides (bench/settings.py)
#   MFA_STEP_BENCH_HTTP=0                the in-process part only (no gunicorn, no wrk)
#
# 1. In-process: each step of LOGINS first-time logins (default 300), timed call by call.
# 2. Through gunicorn (2 sync workers, one per core): wrk -t2 -c CONNECTIONS (default 8) for
#    SECONDS (default 10) per kind; each request is one whole second-factor login of a new user.
# Needs a Python with the package installed (`pip install -e 'hosts/django[postgres,bench]'`,
# PYTHON=… to choose it), the component in the package (scripts/build_wasm.sh), and wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
logins=${1:-300}
seconds=${2:-10}
connections=${3:-8}
py=${PYTHON:-python3}
export DJANGO_SETTINGS_MODULE=bench.settings PYTHONPATH="$PWD:$PWD/src"
MFA_STEP_BENCH_DIR="$(mktemp -d)"
export MFA_STEP_BENCH_DIR
http=${MFA_STEP_BENCH_HTTP:-1}
if [ "$http" != 0 ]; then
  command -v wrk >/dev/null || { echo "wrk is missing (apt-get install wrk), or set MFA_STEP_BENCH_HTTP=0" >&2; exit 1; }
  "$py" -c "import gunicorn" 2>/dev/null \
    || { echo "gunicorn is missing: pip install -e 'hosts/django[bench]' (or MFA_STEP_BENCH_HTTP=0)" >&2; exit 1; }
fi
if [ -n "${MFA_STEP_BENCH_POSTGRES:-}" ]; then db=postgres; else db="sqlite ${MFA_STEP_BENCH_SQLITE:-wal}"; fi
trap 'rm -rf "$MFA_STEP_BENCH_DIR"' EXIT

echo "== in-process, $logins logins each, $db; load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$py" -m bench.inprocess "$logins"
[ "$http" != 0 ] || exit 0

port=$((20000 + RANDOM % 20000))
"$py" -m gunicorn bench.wsgi -w 2 -b "127.0.0.1:$port" --log-level warning &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$MFA_STEP_BENCH_DIR"' EXIT
for _ in $(seq 100); do
  curl -s -o /dev/null -X POST "http://127.0.0.1:$port/django-otp/ready-$port" && break
  sleep 0.1
done
for kind in mfa-step django-otp; do
  # Warm both workers (engine load, first queries), then measure.
  BENCH_RUN="warm$RANDOM" wrk -t2 -c"$connections" -d2s -s bench/login.lua "http://127.0.0.1:$port/$kind" >/dev/null
  echo "== gunicorn -w 2, $kind, $db, wrk -t2 -c$connections -d${seconds}s; load: $(cut -d' ' -f1-3 /proc/loadavg)"
  BENCH_RUN="run$RANDOM" wrk -t2 -c"$connections" -d"${seconds}s" -s bench/login.lua "http://127.0.0.1:$port/$kind" \
    | grep -E "Requests/sec|requests:|latency"
done
