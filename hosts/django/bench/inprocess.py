"""Per-call cost in one process, no HTTP: each step of a first-time user's login, mfa-step-django
against django-otp's EmailDevice, on the same database. Usage (bench/run.sh does this):

    DJANGO_SETTINGS_MODULE=bench.settings python -m bench.inprocess [LOGINS]
"""

import os
import statistics
import sys
import time
import uuid

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from bench.flows import django_otp_login, mfa_step_login  # noqa: E402
from mfa_step_django.engine import get_engine  # noqa: E402


def summary(name, samples):
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return f"| {name} | {len(ms)} | {statistics.median(ms):.2f} | {statistics.fmean(ms):.2f} | {p95:.2f} |"


def main() -> None:
    logins = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    call_command("migrate", verbosity=0)
    t = time.perf_counter()
    engine = get_engine()
    print(f"get_engine() (compile, or load the precompiled cache): {(time.perf_counter() - t) * 1000:.1f} ms")
    run = uuid.uuid4().hex[:8]
    # Warm up both (first queries, template loading), untimed.
    for i in range(20):
        mfa_step_login(f"warm-{run}-{i}")
        django_otp_login(f"warm-{run}-{i}")
    timings: dict[str, list[float]] = {}
    for i in range(logins):
        mfa_step_login(f"m-{run}-{i}", timings)
        django_otp_login(f"d-{run}-{i}", timings)
    db = "postgres" if os.environ.get("MFA_STEP_BENCH_POSTGRES") else f"sqlite ({settings.SQLITE_MODE})"
    print(f"database: {db}; load before: {os.getloadavg()}; component {engine.wasm_sha256[:12]}")
    print("| step | calls | median ms | mean ms | p95 ms |")
    print("|---|---|---|---|---|")
    for name in sorted(timings):
        print(summary(name, timings[name]))
    for label, prefix in (("mfa-step login (3 calls)", "mfa-step"), ("django-otp login (2 calls)", "django-otp")):
        per_login = [sum(v[i] for k, v in timings.items() if k.startswith(prefix)) for i in range(logins)]
        print(summary(label, per_login))


if __name__ == "__main__":
    main()
