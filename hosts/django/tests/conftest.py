"""Shared fixtures of the Django host's tests.

- The components come from this checkout's ``mfa-step`` binary ($MFA_STEP_BIN, else
  target/release/mfa-step): built into the package by ``scripts/build_wasm.sh`` when missing.
  Missing binary: the tests that need it are skipped locally and FAIL under ``CI=1``.
- ``engine``: the process-wide engine with a test clock (``clock.advance(s)``), restored after.
- Tests that call the engine need ``transaction=True``: the engine refuses a caller's open
  transaction (see ``mfa_step_django.engine``), and threads need committed data anyway.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent
REPO = PACKAGE.parent.parent
PLUGIN_WASM = PACKAGE / "src" / "mfa_step_django" / "mfa_step_plugin.wasm"
KIT_WASM = HERE / ".wasm" / "conformance.wasm"
CI = bool(os.environ.get("CI"))


def mfa_step_bin() -> Path | None:
    configured = os.environ.get("MFA_STEP_BIN")
    for candidate in ([Path(configured)] if configured else []) + [REPO / "target" / "release" / "mfa-step"]:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("mfa-step")
    return Path(found) if found else None


def need(what: str) -> None:
    """A real part is missing: a failure under CI, a skip elsewhere."""
    if CI:
        pytest.fail(f"CI is set but {what}", pytrace=False)
    pytest.skip(what)


def pytest_sessionstart(session):  # noqa: ANN001, ARG001
    if PLUGIN_WASM.is_file() and KIT_WASM.is_file():
        return
    binary = mfa_step_bin()
    if binary is None:
        return  # tests needing the components fail (CI) or skip on their own
    env = dict(os.environ, MFA_STEP_BIN=str(binary))
    subprocess.run([str(PACKAGE / "scripts" / "build_wasm.sh")], check=True, env=env, stdout=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def binary() -> Path:
    found = mfa_step_bin()
    if found is None:
        need("no mfa-step binary (set MFA_STEP_BIN or cargo build --release -p host-harness --bin mfa-step)")
    return found


class TestClock:
    """A clock the test steps: starts at the real time, moves only when told."""

    def __init__(self) -> None:
        self.t = float(int(time.time()))
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.t += seconds


@pytest.fixture
def clock():
    return TestClock()


@pytest.fixture
def engine(clock):
    if not PLUGIN_WASM.is_file():
        need(f"the component is not built ({PLUGIN_WASM}); run scripts/build_wasm.sh")
    from mfa_step_django.engine import get_engine

    eng = get_engine()
    eng.set_clock(clock)
    try:
        yield eng
    finally:
        eng.set_clock(None)


@pytest.fixture
def ctx():
    """A login context factory: ``ctx("ana")``, ``ctx("ana", ip="198.51.100.7", cookie=...)``."""
    from mfa_step_django.engine import login_context

    def make(user: str = "ana", *, org: str = "acme", roles=("clinician",), ip: str = "203.0.113.5",
             ua: str = "Mozilla/5.0 (X11; Linux x86_64) Firefox/131.0", cookie: str | None = None,
             email: str | None = None):
        return login_context(user_id=user, org_id=org, email=email or f"{user}@clinic.example", roles=list(roles),
                             locale="en", ip=ip, user_agent=ua, cookie=cookie)

    return make


def code_in(message) -> str:  # noqa: ANN001
    """The one-time code in a sent message's text (the digits on their own line)."""
    import re

    m = re.search(r"(?m)^\s*(\d{6,9})\s*$", message.body)
    assert m, "no code in the message"
    return m.group(1)


def run_threads(n: int, target, *args):  # noqa: ANN001, ANN201
    """Runs ``target(i, *args)`` on ``n`` threads released together; returns results in order.
    Each thread closes its own Django connections at the end."""
    from django.db import connections

    barrier = threading.Barrier(n)
    results: list = [None] * n

    def body(i: int) -> None:
        try:
            barrier.wait()
            results[i] = ("ok", target(i, *args))
        except BaseException as e:  # noqa: BLE001
            results[i] = ("error", e)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    return results
