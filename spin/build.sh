#!/usr/bin/env bash
# Builds the two components spin.toml runs, where it expects them:
#   target/spin/mfa_step_http.wasm  the mfa-step component for the `http-only` world (wit/worlds.wit):
#                                   the imports of the component `serve` runs, and the REST API
#                                   and hosted pages as its one export (Spin re-exports every
#                                   export of a component it composes; see the world's comment)
#   target/spin/spin_adapter.wasm   the adapter that satisfies its imports with Spin's APIs
# `spin build` runs this; it is plain cargo, so it works without Spin too.
set -euo pipefail
cd "$(dirname "$0")/.."
# A CARGO_TARGET_DIR set in the environment would move the outputs away from the paths above.
export CARGO_TARGET_DIR=target
cargo build --locked --quiet -p mfa-step-guest --target wasm32-wasip2 --profile guest --features http-only
mkdir -p target/spin
cp target/wasm32-wasip2/guest/mfa_step_guest.wasm target/spin/mfa_step_http.wasm
cargo build --locked --quiet -p spin-adapter --target wasm32-wasip2 --profile guest
cp target/wasm32-wasip2/guest/spin_adapter.wasm target/spin/spin_adapter.wasm
echo "built target/spin/mfa_step_http.wasm and target/spin/spin_adapter.wasm"
