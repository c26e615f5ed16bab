"""The host conformance kit (world `conformance`) over this package's own imports and database:
prepare, hammer on 8 threads (each its own instance and connection), judge, and expect-failures
with the backends broken. No findings; and a planted fault IS found."""

from __future__ import annotations

import pytest

from mfa_step_django.conformance import kit_engine, run_kit

from conftest import KIT_WASM, need

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def kit():
    if not KIT_WASM.is_file():
        need(f"the conformance kit is not built ({KIT_WASM}); run scripts/build_wasm.sh")
    return kit_engine(KIT_WASM)


def test_the_kit_finds_nothing(kit):
    report = run_kit(kit, instances=8, rounds=20)
    assert report.ok, report.findings()


def test_the_kit_finds_a_store_that_answers_absent_when_broken(kit):
    report = run_kit(kit, instances=8, rounds=2, lying=True)
    checks = {f["check"] for f in report.expect_failures}
    assert "fails-closed:get" in checks, report.findings()


def test_the_kit_finds_lost_counter_updates(kit):
    """A planted fault in the store: increments that read-then-write (lost updates under
    concurrency) must be reported by judge."""
    import time

    real = kit.database

    class ReadThenWrite:
        alias = real.alias

        def __getattr__(self, name):
            return getattr(real, name)

        def increment(self, key, delta, expires_at, now):
            current = real.increment(key, 0, None, now)
            time.sleep(0.001)
            # Writes current + delta as an absolute value: another thread's update in between is lost.
            return real.increment(key, current + delta - real.increment(key, 0, None, now), expires_at, now)

    with kit.backends(database=ReadThenWrite()):
        report = run_kit(kit, instances=8, rounds=10, break_backends=False)
    checks = {f["check"] for f in report.judge}
    print(report.judge)
    assert "atomic-increment" in checks, report.findings()
