"""The store on the real database: the contract of wit/store.wit, tested on the backend itself
(DjangoDatabase) and through the engine's unit of work."""

from __future__ import annotations

import pytest
from django.db import connection

from mfa_step_django.backends import BackendError
from mfa_step_django.backends.database import DjangoDatabase
from mfa_step_django.backends.unit import AuditEntry, Put, Unit, check_key, check_value
from mfa_step_django.models import AuditRecord, StoreCounter, StoreValue

from conftest import run_threads

pytestmark = pytest.mark.django_db(transaction=True)

NOW = 1_800_000_000


@pytest.fixture
def db():
    return DjangoDatabase("default")


def test_increment_is_atomic_across_16_threads(db):
    per_thread = 40

    def work(i):
        mine = DjangoDatabase("default")
        return [mine.increment("conc:counter", 1, NOW + 600, NOW) for _ in range(per_thread)]

    results = run_threads(16, work)
    errors = [r for r in results if r[0] != "ok"]
    assert not errors, errors
    seen = sorted(n for _, values in results for n in values)
    # Every number from 1 to 640 handed out exactly once: no lost update, no duplicate.
    assert seen == list(range(1, 16 * per_thread + 1))
    assert db.increment("conc:counter", 0, None, NOW) == 16 * per_thread


def test_increment_expiry_is_the_later_of_the_two(db):
    def expiry(key):
        return StoreCounter.objects.get(key=key).expires_at

    assert db.increment("c:a", 1, NOW + 100, NOW) == 1
    assert expiry("c:a") == NOW + 100
    assert db.increment("c:a", 1, NOW + 50, NOW) == 2
    assert expiry("c:a") == NOW + 100  # not shortened
    assert db.increment("c:a", 1, NOW + 200, NOW) == 3
    assert expiry("c:a") == NOW + 200  # extended
    assert db.increment("c:a", 1, None, NOW) == 4
    assert expiry("c:a") == NOW + 200  # none leaves it
    assert db.increment("c:a", 0, NOW + 300, NOW) == 4
    assert expiry("c:a") == NOW + 300  # a read with an expiry extends
    # A counter kept for good stays so.
    db.increment("c:forever", 5, None, NOW)
    db.increment("c:forever", 1, NOW + 10, NOW)
    assert expiry("c:forever") is None
    # Negative deltas.
    assert db.increment("c:forever", -6, None, NOW) == 0


def test_zero_increment_creates_nothing_and_expired_counts_as_absent(db):
    assert db.increment("c:none", 0, None, NOW) == 0
    assert db.increment("c:none", 0, NOW + 60, NOW) == 0
    assert not StoreCounter.objects.filter(key="c:none").exists()
    db.increment("c:old", 7, NOW + 10, NOW)
    later = NOW + 11
    assert db.increment("c:old", 0, None, later) == 0  # expired: absent to readers
    assert db.increment("c:old", 1, later + 100, later) == 1  # starts again with the new expiry
    assert StoreCounter.objects.get(key="c:old").expires_at == later + 100


def _commit(db, unit, now=NOW):
    values, records = unit.take()
    db.commit(values, records, now, None)


def test_read_your_writes_and_commit(db):
    unit = Unit()
    unit.values["v:a"] = Put(b"one", None)
    unit.values["v:b"] = Put(b"two", NOW + 100)
    assert unit.get("v:a") == (True, b"one")
    assert db.get("v:a", NOW) is None  # not visible to others before commit
    assert sorted(unit.list("v:", db.list_keys("v:", NOW))) == ["v:a", "v:b"]
    _commit(db, unit)
    assert db.get("v:a", NOW) == b"one"
    assert sorted(db.list_keys("v:", NOW)) == ["v:a", "v:b"]
    unit.values["v:a"] = None
    assert unit.get("v:a") == (True, None)
    assert unit.list("v:", db.list_keys("v:", NOW)) == ["v:b"]
    _commit(db, unit)
    assert db.get("v:a", NOW) is None
    # Expired values are absent to readers, then swept.
    assert db.get("v:b", NOW + 100) is None
    assert db.list_keys("v:", NOW + 100) == []
    assert db.sweep(NOW + 100) == 1
    assert not StoreValue.objects.filter(key="v:b").exists()


def test_delete_removes_a_counter_of_the_key(db):
    db.increment("k:both", 3, None, NOW)
    unit = Unit()
    unit.values["k:both"] = None
    _commit(db, unit)
    assert db.increment("k:both", 0, None, NOW) == 0


def test_list_keys_takes_the_prefix_literally(db):
    unit = Unit()
    for key in ["p%:a", "p%:b", "pX:c", "p_:d", "P%:e", "p\\:f", "p%"]:
        unit.values[key] = Put(b"x", None)
    _commit(db, unit)
    db.increment("p%:counter", 1, None, NOW)
    assert sorted(db.list_keys("p%:", NOW)) == ["p%:a", "p%:b"]
    assert db.list_keys("p_:", NOW) == ["p_:d"]
    assert db.list_keys("p\\:", NOW) == ["p\\:f"]
    assert sorted(db.list_keys("", NOW)) == sorted(["p%:a", "p%:b", "pX:c", "p_:d", "P%:e", "p\\:f", "p%"])


def test_commit_is_all_or_none(db):
    unit = Unit()
    unit.values["aon:value"] = Put(b"kept?", None)
    good = AuditEntry("acme", 1, NOW, "x", "0" * 64, "a" * 64, '{"v":2,"id":"ab","seq":1}')
    unit.records.append(good)
    # The second record does not link and cannot be relinked (no key): the commit fails after
    # the value and the first record were written inside its transaction.
    unit.records.append(AuditEntry("acme", 7, NOW, "x", "f" * 64, "b" * 64, '{"not":"a record"}'))
    with pytest.raises(BackendError):
        _commit(db, unit)
    assert db.get("aon:value", NOW) is None
    assert not AuditRecord.objects.exists()
    assert unit.is_empty()  # the unit is over either way


def test_limits(db):
    key512 = "k" * 512
    value64k = bytes(range(256)) * 256
    unit = Unit()
    unit.values[key512] = Put(value64k, None)
    _commit(db, unit)
    assert db.get(key512, NOW) == value64k  # byte for byte
    for bad in ["k" * 513, "k\x01y", "", "k\u00e9"]:
        with pytest.raises(BackendError) as e:
            check_key(bad)
        assert e.value.kind == "invalid"
        with pytest.raises(BackendError) as e:
            db.increment(bad, 1, None, NOW)
        assert e.value.kind == "invalid"
    with pytest.raises(BackendError) as e:
        check_value(b"x" * 65537)
    assert e.value.kind == "invalid"
    with pytest.raises(BackendError) as e:
        db.commit({"k:big": Put(b"x" * 65537, None)}, [], NOW, None)
    assert e.value.kind == "invalid"
    assert db.get("k:big", NOW) is None


def test_increment_is_one_upsert_statement(db):
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as q:
        db.increment("one:stmt", 2, NOW + 5, NOW)
    sqls = [x["sql"] for x in q.captured_queries]
    assert len(sqls) == 1 and "ON CONFLICT" in sqls[0] and "RETURNING" in sqls[0]


def test_sweep_command_deletes_only_expired_rows(db):
    from io import StringIO

    from django.core.management import call_command

    unit = Unit()
    unit.values["sw:old"] = Put(b"x", NOW - 1)
    unit.values["sw:live"] = Put(b"x", NOW + 1000)
    unit.values["sw:forever"] = Put(b"x", None)
    _commit(db, unit)
    db.increment("sw:count", 1, NOW - 1, NOW - 10)
    out = StringIO()
    call_command("mfa_step_sweep", "--now", str(NOW), stdout=out)
    assert "swept 2 expired rows" in out.getvalue()
    assert sorted(StoreValue.objects.values_list("key", flat=True)) == ["sw:forever", "sw:live"]
    assert not StoreCounter.objects.exists()


# -- the raw SQL of the hot paths (backends/sql.py), on whichever database the run uses ----------


def test_increment_is_committed_when_it_returns(db):
    """The upsert's RETURNING row is read, then the statement is finished: no transaction is left
    open on the connection (on SQLite an unfinished INSERT … RETURNING would hold the write
    transaction open), and another connection sees the count at once."""
    assert db.increment("vis:count", 3, NOW + 60, NOW) == 3
    assert not connection.in_atomic_block
    raw = connection.connection
    if connection.vendor == "sqlite":
        assert raw.in_transaction is False
    else:
        import psycopg

        assert raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    seen = run_threads(1, lambda i: DjangoDatabase("default").increment("vis:count", 0, None, NOW))
    assert seen == [("ok", 3)]


def test_expiry_boundary_for_get_list_keys_and_counters(db):
    unit = Unit()
    unit.values["exp:v"] = Put(b"\x00v\xff", NOW + 10)
    unit.values["exp:forever"] = Put(b"", None)
    _commit(db, unit)
    db.increment("exp:c", 2, NOW + 10, NOW)
    assert db.get("exp:v", NOW + 9) == b"\x00v\xff"
    assert db.get("exp:forever", NOW + 10**9) == b""  # an empty value is a value, not absent
    assert sorted(db.list_keys("exp:", NOW + 9)) == ["exp:forever", "exp:v"]
    assert db.increment("exp:c", 0, None, NOW + 9) == 2
    # At expires_at the row is gone for every reader.
    assert db.get("exp:v", NOW + 10) is None
    assert db.list_keys("exp:", NOW + 10) == ["exp:forever"]
    assert db.increment("exp:c", 0, None, NOW + 10) == 0


def test_a_read_with_an_earlier_expiry_changes_nothing(db):
    db.increment("ext:c", 1, NOW + 100, NOW)
    assert db.increment("ext:c", 0, NOW + 50, NOW) == 1
    assert StoreCounter.objects.get(key="ext:c").expires_at == NOW + 100
    assert db.increment("ext:c", 0, NOW + 150, NOW) == 1
    assert StoreCounter.objects.get(key="ext:c").expires_at == NOW + 150
    # An expired counter is not extended back to life by a read.
    assert db.increment("ext:c", 0, NOW + 900, NOW + 150) == 0
    assert StoreCounter.objects.get(key="ext:c").expires_at == NOW + 150


def test_commit_of_more_keys_than_one_statement_takes(db):
    from mfa_step_django.backends.database import BATCH

    n = 2 * BATCH + 37
    unit = Unit()
    for i in range(n):
        unit.values[f"many:{i:04d}"] = Put(bytes([i % 256]) * (i % 7), NOW + 600 if i % 2 else None)
    _commit(db, unit)
    assert StoreValue.objects.filter(key__startswith="many:").count() == n
    for i in (0, 1, BATCH - 1, BATCH, n - 1):
        assert db.get(f"many:{i:04d}", NOW) == bytes([i % 256]) * (i % 7)
    # Overwrite the even keys, delete the odd ones (and a counter of one of them), in one unit.
    db.increment(f"many:{BATCH + 1:04d}", 5, None, NOW)
    unit = Unit()
    for i in range(n):
        unit.values[f"many:{i:04d}"] = Put(b"new", None) if i % 2 == 0 else None
    _commit(db, unit)
    assert sorted(db.list_keys("many:", NOW)) == [f"many:{i:04d}" for i in range(0, n, 2)]
    assert all(v == b"new" for v in StoreValue.objects.filter(key__startswith="many:").values_list("value", flat=True))
    assert StoreValue.objects.get(key="many:0000").expires_at is None
    assert db.increment(f"many:{BATCH + 1:04d}", 0, None, NOW) == 0


def test_the_statements_name_the_models_tables_and_refuse_another_vendor():
    from mfa_step_django.backends.sql import Statements

    stmts = Statements(connection.vendor, connection.ops.quote_name)
    for sql, table in [
        (stmts.get, StoreValue._meta.db_table),
        (stmts.increment, StoreCounter._meta.db_table),
        (stmts.insert_record, AuditRecord._meta.db_table),
    ]:
        assert connection.ops.quote_name(table) in sql
    with pytest.raises(ValueError):
        Statements("mysql", connection.ops.quote_name)


def test_an_audit_record_lands_byte_for_byte_and_a_taken_position_is_relinked(db):
    from mfa_step_django.backends.chain import GENESIS, relink, seal_key

    key_hex = "ab" * 32
    line = '{"v":2,"id":"0a","seq":1,"org":"acme","action":"x","prev":"' + GENESIS + '","hash":"' + "0" * 64 + '","seal":null}'
    first = AuditEntry("acme", 1, NOW, "x", GENESIS, "1" * 64, line)
    db.commit({}, [first], NOW, key_hex)
    # A second writer that linked to the same (empty) head: placed at 2, resealed.
    db.commit({}, [first], NOW, key_hex)
    rows = list(AuditRecord.objects.filter(org_id="acme").order_by("seq").values_list("seq", "prev", "line"))
    assert [r[0] for r in rows] == [1, 2]
    assert rows[0][2] == line  # as the component wrote it
    expected = relink(first, (1, "1" * 64), seal_key(key_hex))
    assert rows[1][1] == "1" * 64 and rows[1][2] == expected.line
    assert db.head("acme") == (2, expected.hash)
    assert db.stats["relinked"] >= 1
