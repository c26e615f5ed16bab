#!/usr/bin/env bash
# The OpenAPI contract against the running service: schemathesis (from PyPI, pinned in
# requirements.txt) reads GET /openapi.json from `target/debug/mfa-step serve` and sends what the
# document allows and what it forbids, checking every answer against it.
#
#     bash tests/schemathesis/run.sh        # after `cargo test --no-run` or `cargo build -p host-harness`
#
# The server runs with a temporary data directory, a random API key and the hosted sign-in set up
# (so that its pages exist), on a free loopback port, with the default settings the document
# states. Checks: `--checks all`, that is every check schemathesis has: not_a_server_error,
# status_code_conformance, content_type_conformance, response_headers_conformance,
# response_schema_conformance, positive_data_acceptance, negative_data_rejection,
# missing_required_header, unsupported_method, allow_header_conformance, use_after_free,
# ensure_resource_availability, ignored_auth, object_level_authorization. Phases: all
# (examples, coverage, fuzzing, stateful), a fixed seed, at most EXAMPLES cases per operation and
# phase. hooks.py covers the two things JSON Schema cannot say (read it); schemathesis.toml the
# hosted pages' 410. Prints the figures (operations, cases, failures by kind, 5xx answers) and
# exits non-zero on any failure, error or 5xx. Python 3 with venv and pip is required: without it
# this fails, it does not skip. The venv lives outside the repository (SCHEMATHESIS_VENV, default
# under ~/.cache) and is reused while requirements.txt is unchanged.
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1
cd "$(dirname "$0")/../.."
ROOT=$PWD
HERE=$ROOT/tests/schemathesis

# Fixed, so that a run is repeatable; SCHEMATHESIS_SEED explores others.
SEED=${SCHEMATHESIS_SEED:-20261130}
EXAMPLES=30
BIN=$ROOT/target/debug/mfa-step

fail() {
  echo "schemathesis run: $*" >&2
  exit 1
}

[ -x "$BIN" ] || fail "$BIN is missing: build it first (cargo test --no-run, or cargo build -p host-harness)"
command -v python3 >/dev/null 2>&1 ||
  fail "python3 is missing: install Python 3 with venv and pip (Debian: apt-get install python3 python3-venv)"
python3 -c 'import venv, ensurepip' 2>/dev/null ||
  fail "python3 lacks the venv or ensurepip module (Debian: apt-get install python3-venv)"

# The venv: one per content of requirements.txt, created once, and again when its schemathesis no
# longer runs (a cache cleaner on a shared machine once emptied its lib/ and left `.complete`).
pins=$(python3 -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest()[:12])' \
  "$HERE/requirements.txt")
VENV=${SCHEMATHESIS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mfa-step/schemathesis-$pins}
if [ ! -f "$VENV/.complete" ] || ! "$VENV/bin/schemathesis" --version >/dev/null 2>&1; then
  echo "== creating $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV" || fail "python3 -m venv $VENV failed"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    -r "$HERE/requirements.txt" || fail "pip could not install tests/schemathesis/requirements.txt"
  touch "$VENV/.complete"
fi
PY=$VENV/bin/python
"$VENV/bin/schemathesis" --version

WORK=$(mktemp -d)
SERVER=""
cleanup() {
  if [ -n "$SERVER" ] && kill -0 "$SERVER" 2>/dev/null; then
    kill -TERM "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
API_KEY=$("$PY" -c 'import secrets; print(secrets.token_hex(32))')
PROMPT_KEY=$("$PY" -c 'import secrets; print(secrets.token_hex(32))')
URL=http://127.0.0.1:$PORT

# The document states the default settings: no MFA_STEP_* from the caller's environment.
unset_settings=()
while IFS= read -r name; do
  unset_settings+=(-u "$name")
done < <(env | sed -n 's/^\(MFA_STEP_[A-Z0-9_]*\)=.*/\1/p')
env "${unset_settings[@]}" \
  MFA_STEP_API_KEY="$API_KEY" \
  MFA_STEP_PROMPT_KEY="$PROMPT_KEY" \
  MFA_STEP_PROMPT_CLIENT_ID=contract-idp \
  MFA_STEP_PROMPT_RETURN_URLS=https://idp.example/return/ \
  "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" >"$WORK/serve.log" 2>&1 &
SERVER=$!

for _ in $(seq 1 120); do
  if "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$URL/healthz" 2>/dev/null; then
    break
  fi
  kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/serve.log" >&2; fail "serve exited before it answered"; }
  sleep 0.5
done
"$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$URL/healthz" 2>/dev/null ||
  { cat "$WORK/serve.log" >&2; fail "serve did not answer /healthz within 60 s"; }
echo "== serve answers at $URL"

# schemathesis keeps its caches in the working directory: the temporary one, not the repository.
status=0
(
  cd "$WORK"
  SCHEMATHESIS_HOOKS=hooks PYTHONPATH=$HERE "$VENV/bin/schemathesis" --no-color \
    --config-file "$HERE/schemathesis.toml" \
    run "$URL/openapi.json" \
    --header "Authorization: Bearer $API_KEY" \
    --checks all \
    --seed "$SEED" \
    --max-examples "$EXAMPLES" \
    --workers 1 \
    --generation-database none \
    --report json --report-dir "$WORK/report"
) || status=$?

report=$(find "$WORK/report" -name '*.json' -print -quit 2>/dev/null || true)
[ -n "$report" ] || fail "schemathesis wrote no report (exit $status)"
"$PY" "$HERE/summary.py" "$report" "$URL/metrics" "$status"
