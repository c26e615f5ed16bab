"""The audit trail: exported as JSONL, `mfa-step audit verify` accepts it, seals included (also
after records were relinked by concurrent writers), and rejects a tampered copy."""

from __future__ import annotations

import os
import subprocess

import pytest
from django.core import mail
from django.core.management import call_command

from mfa_step_django.backends.chain import relink, seal_key
from mfa_step_django.backends.unit import AuditEntry
from mfa_step_django.models import AuditRecord

from conftest import code_in, run_threads

pytestmark = pytest.mark.django_db(transaction=True)


def _verify(binary, path, data_dir):
    env = {k: v for k, v in os.environ.items() if k != "MFA_STEP_HMAC_KEY"}
    return subprocess.run(
        [str(binary), "audit", "verify", "--audit", str(path), "--data-dir", str(data_dir)],
        capture_output=True, text=True, env=env, timeout=60,
    )


@pytest.fixture
def data_dir(tmp_path, settings):
    d = tmp_path / "data"
    d.mkdir()
    (d / "hmac.key").write_text(settings.MFA_STEP["HMAC_KEY"])
    os.chmod(d / "hmac.key", 0o600)
    return d


def test_exported_trail_passes_mfa_step_audit_verify(engine, ctx, binary, data_dir, tmp_path):
    def flow(i):
        c = ctx(f"aud{i}", org="acme" if i % 4 else "other")
        cid = engine.begin(c)["value"]["challenge_id"]
        engine.send_code(c, cid)
        try:
            engine.verify(c, cid, "000000", False)
        except Exception:  # noqa: BLE001 - a wrong guess, recorded
            pass
        return cid

    before = engine.database.stats["relinked"]
    results = run_threads(16, flow)
    assert all(r[0] == "ok" for r in results), results
    # Concurrent writers raced for positions: records were relinked and resealed at commit.
    assert engine.database.stats["relinked"] > before
    for org in ("acme", "other"):
        out = tmp_path / f"{org}.jsonl"
        call_command("mfa_step_audit_export", "--org", org, "--out", str(out))
        assert oct(out.stat().st_mode & 0o777) == "0o600"
        run = _verify(binary, out, data_dir)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "OK: the log is whole" in run.stdout + run.stderr
        assert "seals checked" in run.stdout + run.stderr
    # The check can fail: a changed byte in a record breaks the chain.
    tampered = tmp_path / "tampered.jsonl"
    lines = (tmp_path / "acme.jsonl").read_text().splitlines()
    lines[1] = lines[1].replace('"outcome":"', '"outcome":"x', 1)
    tampered.write_text("\n".join(lines) + "\n")
    assert _verify(binary, tampered, data_dir).returncode != 0
    # And a wrong key fails the seals.
    (data_dir / "hmac.key").write_text("00" * 32)
    assert _verify(binary, tmp_path / "acme.jsonl", data_dir).returncode != 0


def test_relink_recomputes_seq_prev_hash_and_seal(engine, ctx, settings):
    c = ctx("rl")
    cid = engine.begin(c)["value"]["challenge_id"]
    engine.send_code(c, cid)
    engine.verify(c, cid, code_in(mail.outbox[-1]), False)
    rows = list(AuditRecord.objects.filter(org_id="acme").order_by("seq"))
    key = seal_key(settings.MFA_STEP["HMAC_KEY"])
    first = rows[0]
    entry = AuditEntry(first.org_id, first.seq, first.at, first.action, first.prev, first.hash, first.line)
    # Placed after the last record instead of first: every derived field changes, nothing else.
    moved = relink(entry, (rows[-1].seq, rows[-1].hash), key)
    assert moved.seq == rows[-1].seq + 1 and moved.prev == rows[-1].hash and moved.hash != first.hash
    assert moved.line.replace(moved.hash, "H").replace(moved.prev, "P") != first.line
    strip = lambda line: line.split('"seq":')[0] + line.split('"at":', 1)[1].split(',"prev":')[0]  # noqa: E731
    assert strip(moved.line) == strip(first.line)
    # Placed where it already links: unchanged, byte for byte.
    assert relink(entry, None, key) is entry


def test_head_is_the_stored_head(engine, ctx):
    c = ctx("hd", org="headorg")
    engine.begin(c)
    last = AuditRecord.objects.filter(org_id="headorg").order_by("-seq").first()
    assert engine.database.head("headorg") == (last.seq, last.hash)
    assert engine.database.head("no-such-org") is None
