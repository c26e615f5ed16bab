"""Limits that must hold under concurrency, through the real component on threads (each thread
its own instance and its own database connection)."""

from __future__ import annotations

import hashlib

import pytest
from django.core import mail

from mfa_step_django.engine import MfaError
from mfa_step_django.models import AuditRecord

from conftest import code_in, run_threads

pytestmark = pytest.mark.django_db(transaction=True)


def test_50_parallel_verifies_of_one_code_exactly_one_succeeds(engine, ctx):
    c = ctx("par")
    cid = engine.begin(c)["value"]["challenge_id"]
    engine.send_code(c, cid)
    code = code_in(mail.outbox[-1])

    def verify(i):
        return engine.verify(c, cid, code, False)

    results = run_threads(50, verify)
    ok = [r for r in results if r[0] == "ok"]
    refused = [r[1] for r in results if r[0] == "error"]
    assert len(ok) == 1, results
    # The losers are refused as wrong guesses (after the 5th in a row the component throttles).
    assert len(refused) == 49
    assert all(isinstance(e, MfaError) and e.kind in ("rejected", "throttled") for e in refused), refused


def test_parallel_sends_send_at_most_three_mails(engine, ctx):
    c = ctx("snd")
    cid = engine.begin(c)["value"]["challenge_id"]

    def send(i):
        return engine.send_code(c, cid)

    results = run_threads(12, send)
    sent = [r for r in results if r[0] == "ok"]
    refused = [r[1] for r in results if r[0] == "error"]
    assert len(mail.outbox) <= 3 and len(sent) == len(mail.outbox), (len(mail.outbox), results)
    assert len(sent) >= 1
    assert all(isinstance(e, MfaError) and e.kind == "throttled" and e.retry_after_seconds for e in refused), refused


def test_audit_chain_stays_one_chain_under_16_threads(engine, ctx):
    def login(i):
        c = ctx(f"chain{i}")
        cid = engine.begin(c)["value"]["challenge_id"]
        engine.send_code(c, cid)
        return cid

    results = run_threads(16, login)
    assert all(r[0] == "ok" for r in results), results
    rows = list(AuditRecord.objects.filter(org_id="acme").order_by("seq"))
    assert len(rows) >= 32  # a challenge and a send each, at least
    prev = "0" * 64
    for n, row in enumerate(rows, start=1):
        assert row.seq == n
        assert row.prev == prev and f'"prev":"{prev}"' in row.line
        prefix = row.line[: row.line.index(',"hash":')]
        assert hashlib.sha256(prefix.encode()).hexdigest() == row.hash
        assert f'"seq":{n},' in row.line
        prev = row.hash
