"""The ``store`` and ``audit`` imports on a Django database alias (SQLite or Postgres).

Guarantees (``wit/store.wit`` "Host guarantees", ``wit/audit.wit``):

- ``increment`` is ONE statement, ``INSERT … ON CONFLICT (key) DO UPDATE SET n = n + delta …
  RETURNING n``, run in autocommit outside any unit of work: concurrent increments never lose an
  update, every other caller sees the count once it is returned, and nothing rolls it back.
  An expired counter counts as absent (it restarts at ``delta`` with the new expiry); a live one
  takes the later of its expiry and the new one (``none`` leaves it); ``increment(k, 0, none)``
  reads and creates nothing.
- ``commit`` writes a unit (values, deletes, records) inside ONE ``transaction.atomic()``: all
  or nothing. Each record is placed after the head its stream has *there*, relinked and resealed
  when another writer came first; ``UNIQUE (org_id, seq)`` refuses a second record at a taken
  position, and an ``IntegrityError`` re-reads the head and places again (at most
  :data:`PLACE_ATTEMPTS` times), so the chain never forks and no acknowledged record is lost.
  On Postgres, writers of one organization's stream take turns on an advisory lock held from
  placing to commit (never across a call), so the retry is the guard, not the rule.
  On SQLite, ``"transaction_mode": "IMMEDIATE"`` takes the write lock at ``BEGIN``, so commits
  take turns and the retry is never needed.
- A row whose ``expires_at`` has passed (on the engine's clock) is absent to ``get``,
  ``list-keys`` and ``increment``.
- Every database error is :class:`BackendError` ``unavailable`` (its message names the operation
  and the error's class, never a key's value); a read that failed is never answered "absent".
- The statements are written once per vendor in :mod:`.sql` and run on the alias's Django cursor
  (so Django's error translation, connection handling and query logging still apply); each cursor
  is closed before the import returns, so no statement holds a read snapshot or a write open
  between imports (on SQLite an unfinished ``INSERT … RETURNING`` would keep its write
  transaction). Nothing read is cached across imports or calls.

Why the engine refuses to run inside a caller's transaction on this alias: an ``increment`` there
would be invisible to other callers until the caller commits, and rolled back with it, which
breaks the count-first limits (single use of a code, the send window). See
:func:`mfa_step_django.engine.Engine` and the README: use ``ATOMIC_REQUESTS = False`` on the alias
the engine uses, or give the engine its own alias (``MFA_STEP["DATABASE"]``) to the same database.
"""

from __future__ import annotations

import functools
import logging
import random
import threading

from django.db import DatabaseError, IntegrityError, connections, transaction

from .. import models
from . import BackendError, invalid, unavailable
from .chain import GENESIS, check_line, relink, seal_key
from .sql import Statements, placeholders
from .unit import AuditEntry, Put, check_key, check_key_text, check_value

log = logging.getLogger("mfa_step_django.store")

#: How often a record is placed again after another writer took its position.
PLACE_ATTEMPTS = 32
#: One commit in this many also sweeps expired rows (a bounded batch).
SWEEP_ONE_IN = 200
SWEEP_BATCH = 500
#: The first key of the Postgres advisory locks that order an organization's stream ("mfas").
STREAM_LOCK_CLASS = 0x6D666173
#: At most this many keys per ``DELETE … IN`` / rows per upsert statement of a commit.
BATCH = 200

#: The statements of each vendor (built on first use; they depend only on the models).
_STATEMENTS: dict[str, Statements] = {}


@functools.lru_cache(maxsize=8)
def _seal_key_of(hmac_key: str) -> bytes | None:
    try:
        return seal_key(hmac_key)
    except ValueError:
        return None


def _seal_key(hmac_key: str | None) -> bytes | None:
    """The audit seal key derived from ``hmac_key`` (computed once per key, not per commit);
    ``None`` when there is no usable key (a record that must be relinked is then refused)."""
    return _seal_key_of(hmac_key) if hmac_key else None


def _db_failure(op: str, e: BaseException) -> BackendError:
    # The class only: a driver's message may quote a key or a value.
    return unavailable(f"the database failed during {op} ({type(e).__name__})")


class DjangoDatabase:
    """Values, counters and the audit trail on the Django database alias ``alias``."""

    def __init__(self, alias: str = "default") -> None:
        self.alias = alias
        #: Records placed somewhere else than the component linked them (another writer came
        #: first), and placements retried after an IntegrityError: for tests and operators.
        self.stats = {"relinked": 0, "place_retries": 0}
        self._stats_lock = threading.Lock()

    def _count(self, what: str) -> None:
        with self._stats_lock:
            self.stats[what] += 1

    def __repr__(self) -> str:
        return f"DjangoDatabase(alias={self.alias!r})"

    # -- helpers ---------------------------------------------------------------------------

    @property
    def connection(self):  # noqa: ANN201
        return connections[self.alias]

    def _values(self):  # noqa: ANN202
        return models.StoreValue.objects.using(self.alias)

    def _counters(self):  # noqa: ANN202
        return models.StoreCounter.objects.using(self.alias)

    def _records(self):  # noqa: ANN202
        return models.AuditRecord.objects.using(self.alias)

    def after_failure(self) -> None:
        """Drops this thread's connection if a failure left it unusable, so the next call
        reconnects (outside a transaction only: inside one, the caller owns the connection)."""
        conn = self.connection
        try:
            if conn.connection is not None and not conn.in_atomic_block and not conn.is_usable():
                conn.close()
        except Exception:  # noqa: BLE001 - best effort; the next call reports its own failure
            log.debug("mfa-step: closing an unusable connection failed", exc_info=False)

    def _statements(self, conn) -> Statements:  # noqa: ANN001
        stmts = _STATEMENTS.get(conn.vendor)
        if stmts is None:
            stmts = _STATEMENTS[conn.vendor] = Statements(conn.vendor, conn.ops.quote_name)
        return stmts

    # -- store -----------------------------------------------------------------------------

    def get(self, key: str, now: int) -> bytes | None:
        check_key(key)
        conn = connections[self.alias]
        sql = self._statements(conn).get
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, [key, now])
                row = cursor.fetchone()
        except DatabaseError as e:
            raise _db_failure("get", e) from None
        return None if row is None else bytes(row[0])

    def list_keys(self, prefix: str, now: int) -> list[str]:
        check_key_text(prefix, "prefix")
        conn = connections[self.alias]
        stmts = self._statements(conn)
        try:
            with conn.cursor() as cursor:
                if prefix:
                    cursor.execute(stmts.list_prefix, [now, len(prefix), prefix])
                else:
                    cursor.execute(stmts.list_all, [now])
                keys = [row[0] for row in cursor.fetchall()]
        except DatabaseError as e:
            raise _db_failure("list-keys", e) from None
        return [k for k in keys if k.startswith(prefix)]

    def increment(self, key: str, delta: int, expires_at: int | None, now: int) -> int:
        check_key(key)
        conn = connections[self.alias]
        stmts = self._statements(conn)
        try:
            with conn.cursor() as cursor:
                if delta == 0:
                    # A read; with an expiry it extends a live counter that has one. Creates nothing.
                    if expires_at is not None:
                        cursor.execute(stmts.counter_extend, [expires_at, key, now, expires_at])
                    cursor.execute(stmts.counter_read, [key, now])
                    row = cursor.fetchone()
                    return 0 if row is None else int(row[0])
                # One statement under the row's lock (see Statements.increment).
                cursor.execute(stmts.increment, [key, delta, expires_at, now, now])
                row = cursor.fetchone()
        except DatabaseError as e:
            raise _db_failure("increment", e) from None
        if row is None or not isinstance(row[0], int):
            # SQLite turns an overflowing sum into a REAL: refuse rather than answer a float.
            raise unavailable("counter overflow: the increment left the 64-bit range")
        return int(row[0])

    def commit(self, values: dict[str, Put | None], records: list[AuditEntry], now: int, hmac_key: str | None) -> None:
        """Writes the unit in one transaction: all of it or none. See the module doc."""
        for key, put in values.items():
            check_key(key)
            if put is not None:
                check_value(put.value)
        for record in records:
            check_line(record)
        if not values and not records:
            return
        key = _seal_key(hmac_key) if records else None
        conn = connections[self.alias]
        stmts = self._statements(conn)
        try:
            with transaction.atomic(using=self.alias):
                keys = sorted(values)  # one lock order for every writer
                deletes = [k for k in keys if values[k] is None]
                puts = [k for k in keys if values[k] is not None]
                with conn.cursor() as cursor:
                    for i in range(0, len(deletes), BATCH):
                        chunk = deletes[i : i + BATCH]
                        marks = placeholders(len(chunk))
                        cursor.execute(stmts.delete_values + marks, chunk)
                        cursor.execute(stmts.delete_counters + marks, chunk)
                    for i in range(0, len(puts), BATCH):
                        chunk = puts[i : i + BATCH]
                        params: list = []
                        for k in chunk:
                            put = values[k]
                            params += (k, put.value, put.expires_at)  # type: ignore[union-attr]
                        cursor.execute(stmts.upsert_values.format(rows=placeholders(len(chunk), 3)), params)
                    if records:
                        self._lock_streams(cursor, sorted({r.org_id for r in records}))
                        for record in records:
                            self._place(cursor, stmts, record, key)
        except BackendError:
            raise
        except DatabaseError as e:
            raise _db_failure("commit", e) from None
        if SWEEP_ONE_IN and random.randrange(SWEEP_ONE_IN) == 0:  # noqa: S311 - not a secret
            try:
                self.sweep(now, limit=SWEEP_BATCH)
            except Exception:  # noqa: BLE001 - a sweep is housekeeping; the commit stands
                log.info("mfa-step: an opportunistic sweep failed; expired rows stay until the next")

    def _lock_streams(self, cursor, orgs: list[str]) -> None:  # noqa: ANN001
        """Makes this transaction's writers of the same organizations take turns (Postgres: an
        advisory lock per stream, released at commit; SQLite: the IMMEDIATE transaction already
        holds the database's write lock). Without it, n writers racing for each next position
        retry (n-1)/n of the time, and a busy stream can exhaust :data:`PLACE_ATTEMPTS` (the
        conformance kit's hammer showed it on Postgres). Taken in sorted order, after the values
        (every writer does the same), so no two writers wait on each other in a cycle."""
        if not orgs or cursor.db.vendor != "postgresql":
            return
        for org in orgs:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [STREAM_LOCK_CLASS, org])

    def _place(self, cursor, stmts: Statements, record: AuditEntry, key: bytes | None) -> None:  # noqa: ANN001
        for _ in range(PLACE_ATTEMPTS):
            cursor.execute(stmts.head, [record.org_id])
            row = cursor.fetchone()
            head = None if row is None else (int(row[0]), str(row[1]))
            linked = relink(record, head, key)
            if linked is not record:
                self._count("relinked")
            try:
                with transaction.atomic(using=self.alias):  # a savepoint: a refused insert undoes only itself
                    cursor.execute(
                        stmts.insert_record,
                        [linked.org_id, linked.seq, linked.at, linked.action, linked.prev, linked.hash, linked.line],
                    )
                return
            except IntegrityError:
                self._count("place_retries")
                continue  # another writer took the position: read the head again and relink
        raise unavailable("the organization's audit stream stayed busy; try again")

    # -- audit -----------------------------------------------------------------------------

    def _stored_head(self, org_id: str) -> tuple[int, str] | None:
        conn = connections[self.alias]
        with conn.cursor() as cursor:
            cursor.execute(self._statements(conn).head, [org_id])
            row = cursor.fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def head(self, org_id: str) -> tuple[int, str] | None:
        try:
            return self._stored_head(org_id)
        except DatabaseError as e:
            raise _db_failure("audit head", e) from None

    def records(self, org_id: str):  # noqa: ANN201
        """The stream's records in order (for export)."""
        return self._records().filter(org_id=org_id).order_by("seq")

    # -- housekeeping ----------------------------------------------------------------------

    def sweep(self, now: int, limit: int | None = None) -> int:
        """Deletes expired values and counters; returns how many rows went."""
        gone = 0
        for qs in (self._values(), self._counters()):
            expired = qs.filter(expires_at__isnull=False, expires_at__lte=now)
            if limit is not None:
                keys = list(expired.values_list("key", flat=True)[:limit])
                if not keys:
                    continue
                expired = qs.filter(key__in=keys, expires_at__isnull=False, expires_at__lte=now)
            count, _ = expired.delete()
            gone += count
        return gone


__all__ = ["DjangoDatabase", "GENESIS", "PLACE_ATTEMPTS", "invalid"]
