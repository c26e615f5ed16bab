#!/usr/bin/env bash
# Builds the two components spin/conformance.toml runs, where it expects them:
#   target/spin/conformance_http.wasm  the host conformance kit for the `conformance-http` world
#                                      (wit/worlds.wit): the kit's imports, and its four steps as
#                                      HTTP routes, the one export (conformance/src/http.rs)
#   target/spin/spin_adapter.wasm      the adapter that satisfies its imports with Spin's APIs (the
#                                      same file spin/build.sh builds for the app)
# tests/spin (conformance.rs) runs it; it is plain cargo, so it works without Spin too.
set -euo pipefail
cd "$(dirname "$0")/.."
# A CARGO_TARGET_DIR set in the environment would move the outputs away from the paths above.
export CARGO_TARGET_DIR=target
cargo build --locked --quiet -p mfa-step-conformance --target wasm32-wasip2 --profile guest --features http
mkdir -p target/spin
cp target/wasm32-wasip2/guest/mfa_step_conformance.wasm target/spin/conformance_http.wasm
cargo build --locked --quiet -p spin-adapter --target wasm32-wasip2 --profile guest
cp target/wasm32-wasip2/guest/spin_adapter.wasm target/spin/spin_adapter.wasm
echo "built target/spin/conformance_http.wasm and target/spin/spin_adapter.wasm"
