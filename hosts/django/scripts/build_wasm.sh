#!/usr/bin/env bash
# Writes the components this package runs, from the mfa-step binary of this checkout:
#   src/mfa_step_django/mfa_step_plugin.wasm   the plugin component (world `plugin`), shipped in the wheel
#   tests/.wasm/conformance.wasm               the host conformance kit (world `conformance`), for the tests
# The binary is $MFA_STEP_BIN, else target/release/mfa-step of the repository
# (`cargo build --release --locked -p host-harness --bin mfa-step`). The component is embedded in the
# binary unchanged, so the wasm written here is byte-identical to the one `serve` and Spin run
# (tests/test_wasm_identity.py checks it by SHA-256).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${MFA_STEP_BIN:-$repo/target/release/mfa-step}"
if [[ ! -x "$bin" ]]; then
    echo "build_wasm.sh: no mfa-step binary at $bin; build it with" >&2
    echo "  cargo build --release --locked -p host-harness --bin mfa-step   (or set MFA_STEP_BIN)" >&2
    exit 1
fi
mkdir -p "$here/tests/.wasm"
"$bin" component plugin --out "$here/src/mfa_step_django/mfa_step_plugin.wasm"
"$bin" component conformance --out "$here/tests/.wasm/conformance.wasm"
sha256sum "$here/src/mfa_step_django/mfa_step_plugin.wasm" "$here/tests/.wasm/conformance.wasm"
