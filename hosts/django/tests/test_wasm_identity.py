"""The package runs the component unchanged: the wasm the engine loaded is byte-identical to the
`mfa_step_plugin.wasm` this checkout's `mfa-step` binary embeds (what `serve` and Spin run)."""

from __future__ import annotations

import hashlib
import subprocess

from conftest import PLUGIN_WASM


def test_engine_loads_this_checkouts_plugin(engine, binary, tmp_path):
    out = tmp_path / "plugin.wasm"
    subprocess.run([str(binary), "component", "plugin", "--out", str(out)], check=True, capture_output=True, timeout=60)
    expected = hashlib.sha256(out.read_bytes()).hexdigest()
    assert engine.wasm_sha256 == expected
    assert hashlib.sha256(PLUGIN_WASM.read_bytes()).hexdigest() == expected
