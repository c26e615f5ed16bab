#!/usr/bin/env bash
# Builds the two components spin.toml runs, where it expects them:
#   target/spin/mfa_step_http.wasm  the mfa-step component (`http-app` world, what `serve` runs),
#                                   wrapped so that it exports only its HTTP handler (see
#                                   spin-adapter/src/bin/http-only.rs for why Spin needs that)
#   target/spin/spin_adapter.wasm   the adapter that satisfies its imports with Spin's APIs
# `spin build` runs this; it is plain cargo, so it works without Spin too.
set -euo pipefail
cd "$(dirname "$0")/.."
# A CARGO_TARGET_DIR set in the environment would move the outputs away from the paths above.
export CARGO_TARGET_DIR=target
cargo build --locked --quiet -p mfa-step-guest --target wasm32-wasip2 --profile guest --features http
cargo build --locked --quiet -p spin-adapter --target wasm32-wasip2 --profile guest
mkdir -p target/spin
cp target/wasm32-wasip2/guest/mfa_step_guest.wasm target/spin/mfa_step_http.full.wasm
cargo run --locked --quiet -p spin-adapter --features http-only --bin http-only -- \
    target/spin/mfa_step_http.full.wasm target/spin/mfa_step_http.wasm
cp target/wasm32-wasip2/guest/spin_adapter.wasm target/spin/spin_adapter.wasm
echo "built target/spin/mfa_step_http.wasm and target/spin/spin_adapter.wasm"
