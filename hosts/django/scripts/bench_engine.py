"""Per-call cost of the engine in-process (begin, send-code, verify; each a fresh instance), on the
test settings' database: `MFA_STEP_TEST_DATABASE=sqlite|postgres python scripts/bench_engine.py [N]`.
Creates its tables in a scratch database (SQLite: a temp dir; Postgres: the URL's database, so
point MFA_STEP_TEST_POSTGRES at a scratch one). Prints median and p90 in ms. Timings belong in
BENCHMARKS.md, not in tests."""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(HERE / "src"), str(HERE)]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()
from django.core import mail  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

setup_test_environment()  # locmem mail
call_command("migrate", verbosity=0)

from mfa_step_django.engine import get_engine, login_context  # noqa: E402

n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
engine = get_engine()
print(f"engine: loaded from {engine.loaded_from} in {engine.load_ms:.1f} ms; database {django.db.connection.vendor}")
times: dict[str, list[float]] = {"begin": [], "send-code": [], "verify": [], "instantiate": []}
engine.on_call = lambda iface, fn, inst, total, outcome: times["instantiate"].append(inst)
run = int(time.time())
for i in range(n):
    ctx = login_context(user_id=f"b{run}-{i}", org_id="bench", email=f"b{i}@clinic.example", roles=["admin"],
                        ip="203.0.113.5", user_agent="bench")
    t = time.perf_counter()
    d = engine.begin(ctx)
    times["begin"].append((time.perf_counter() - t) * 1000)
    cid = d["value"]["challenge_id"]
    t = time.perf_counter()
    engine.send_code(ctx, cid)
    times["send-code"].append((time.perf_counter() - t) * 1000)
    code = [line.strip() for line in mail.outbox[-1].body.splitlines() if line.strip().isdigit()][0]
    t = time.perf_counter()
    engine.verify(ctx, cid, code, True)
    times["verify"].append((time.perf_counter() - t) * 1000)
for name, values in times.items():
    values.sort()
    print(f"{name:12s} median {statistics.median(values):7.2f} ms   p90 {values[int(len(values) * 0.9)]:7.2f} ms   (n={len(values)})")
