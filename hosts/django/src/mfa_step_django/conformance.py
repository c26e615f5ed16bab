"""The host conformance kit (``wit/conformance.wit``, world ``conformance``) over THIS package's
imports: the same Python ``store``, ``audit``, ``config``, clock and random bindings, the same
Django database backend, that the real component gets.

```text
 prepare(run)                          one fresh instance
 hammer(run, i, n, rounds)  x n        n threads at once, each its own instance and DB connection
 judge(run, n, rounds)                 a fresh instance, after every hammer returned
 [backends broken]  expect-failures    every import must answer err, never a plausible ok
```

The host conforms when every step answers no findings; a trap is a failure of the run too.
Run it with :func:`run_kit` or ``manage.py mfa_step_conformance --kit conformance.wasm``
(``mfa-step component conformance --out conformance.wasm`` writes the kit).
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import connections

from .backends.faults import Breakable
from .engine import Engine, MfaError

IFACE = "conformance-kit"


@dataclass
class KitReport:
    """Findings per step (``{"check", "seen"}`` dicts); ``ok`` when there are none at all."""

    run_id: str
    prepare: list = field(default_factory=list)
    hammer: list = field(default_factory=list)
    judge: list = field(default_factory=list)
    expect_failures: list = field(default_factory=list)
    errors: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.prepare or self.hammer or self.judge or self.expect_failures or self.errors)

    def findings(self) -> list:
        return [*self.prepare, *self.hammer, *self.judge, *self.expect_failures, *self.errors]


def kit_engine(kit: str | Path | bytes, **kwargs: Any) -> Engine:
    """An engine for the kit component (world ``conformance``) over the configured backends."""
    wasm = kit if isinstance(kit, bytes) else Path(kit).read_bytes()
    return Engine(wasm, world="conformance", **kwargs)


def _step(engine: Engine, report: KitReport, name: str, *args: Any) -> list:
    try:
        return list(engine.call(IFACE, name, *args))
    except MfaError as e:  # a trap: a failure of the run
        report.errors.append({"check": f"trap:{name}", "seen": str(e)})
        return []


def run_kit(
    engine: Engine,
    *,
    instances: int = 8,
    rounds: int = 25,
    break_backends: bool = True,
    lying: bool = False,
    run_id: str | None = None,
) -> KitReport:
    """Runs prepare, hammer (``instances`` threads), judge and, with ``break_backends``,
    expect-failures with the database backend broken by :class:`Breakable` (``lying``: broken
    reads answer "absent", the fail-open mistake, which the kit must report)."""
    if instances < 8:
        raise ValueError("the kit needs at least 8 instances at once")
    run = run_id or secrets.token_hex(16)
    report = KitReport(run)
    report.prepare = _step(engine, report, "prepare", run)

    results: list[list] = [[] for _ in range(instances)]
    barrier = threading.Barrier(instances)

    def hammer(i: int) -> None:
        try:
            barrier.wait()
            results[i] = _step(engine, report, "hammer", run, i, instances, rounds)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=hammer, args=(i,), name=f"kit-hammer-{i}") for i in range(instances)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report.hammer = [f for r in results for f in r]
    report.judge = _step(engine, report, "judge", run, instances, rounds)

    if break_backends:
        broken = Breakable(engine.database)
        broken.broken.add("*")
        broken.lying = lying
        with engine.backends(database=broken):
            report.expect_failures = _step(engine, report, "expect-failures", run)
    return report
