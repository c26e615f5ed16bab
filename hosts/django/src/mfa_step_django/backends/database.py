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

Why the engine refuses to run inside a caller's transaction on this alias: an ``increment`` there
would be invisible to other callers until the caller commits, and rolled back with it, which
breaks the count-first limits (single use of a code, the send window). See
:func:`mfa_step_django.engine.Engine` and the README: use ``ATOMIC_REQUESTS = False`` on the alias
the engine uses, or give the engine its own alias (``MFA_STEP["DATABASE"]``) to the same database.
"""

from __future__ import annotations

import logging
import random
import threading

from django.db import DatabaseError, IntegrityError, connections, transaction
from django.db.models import Q
from django.db.models.functions import Left

from .. import models
from . import BackendError, invalid, unavailable
from .chain import GENESIS, check_line, relink, seal_key
from .unit import AuditEntry, Put, check_key, check_key_text, check_value

log = logging.getLogger("mfa_step_django.store")

#: How often a record is placed again after another writer took its position.
PLACE_ATTEMPTS = 32
#: One commit in this many also sweeps expired rows (a bounded batch).
SWEEP_ONE_IN = 200
SWEEP_BATCH = 500
#: The first key of the Postgres advisory locks that order an organization's stream ("mfas").
STREAM_LOCK_CLASS = 0x6D666173


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

    @staticmethod
    def _live(now: int) -> Q:
        return Q(expires_at__isnull=True) | Q(expires_at__gt=now)

    def after_failure(self) -> None:
        """Drops this thread's connection if a failure left it unusable, so the next call
        reconnects (outside a transaction only: inside one, the caller owns the connection)."""
        conn = self.connection
        try:
            if conn.connection is not None and not conn.in_atomic_block and not conn.is_usable():
                conn.close()
        except Exception:  # noqa: BLE001 - best effort; the next call reports its own failure
            log.debug("mfa-step: closing an unusable connection failed", exc_info=False)

    # -- store -----------------------------------------------------------------------------

    def get(self, key: str, now: int) -> bytes | None:
        check_key(key)
        try:
            row = self._values().filter(self._live(now), key=key).values_list("value", flat=True).first()
        except DatabaseError as e:
            raise _db_failure("get", e) from None
        return None if row is None else bytes(row)

    def list_keys(self, prefix: str, now: int) -> list[str]:
        check_key_text(prefix, "prefix")
        try:
            qs = self._values().filter(self._live(now))
            if prefix:
                # An exact comparison of the first len(prefix) characters: `LIKE` would read `%`,
                # `_` and `\` in the prefix as patterns, and is case-insensitive on SQLite.
                qs = qs.annotate(_p=Left("key", len(prefix))).filter(_p=prefix)
            keys = list(qs.values_list("key", flat=True))
        except DatabaseError as e:
            raise _db_failure("list-keys", e) from None
        return [k for k in keys if k.startswith(prefix)]

    def increment(self, key: str, delta: int, expires_at: int | None, now: int) -> int:
        check_key(key)
        conn = self.connection
        table = conn.ops.quote_name(models.StoreCounter._meta.db_table)
        later = "GREATEST" if conn.vendor == "postgresql" else "MAX"
        try:
            with conn.cursor() as cursor:
                if delta == 0:
                    # A read; with an expiry it extends a live counter that has one. Creates nothing.
                    if expires_at is not None:
                        cursor.execute(
                            f"UPDATE {table} SET expires_at = {later}(expires_at, %s) "
                            "WHERE key = %s AND expires_at IS NOT NULL AND expires_at > %s",
                            [expires_at, key, now],
                        )
                    cursor.execute(
                        f"SELECT n FROM {table} WHERE key = %s AND (expires_at IS NULL OR expires_at > %s)",
                        [key, now],
                    )
                    row = cursor.fetchone()
                    return 0 if row is None else int(row[0])
                # One statement under the row's lock: no update is ever lost. An expired counter
                # starts again (absent = 0) with this expiry; a live one keeps the later expiry;
                # one kept for good stays so.
                cursor.execute(
                    f"INSERT INTO {table} AS c (key, n, expires_at) VALUES (%s, %s, %s) "
                    "ON CONFLICT (key) DO UPDATE SET "
                    "n = CASE WHEN c.expires_at IS NOT NULL AND c.expires_at <= %s "
                    "THEN excluded.n ELSE c.n + excluded.n END, "
                    "expires_at = CASE WHEN c.expires_at IS NOT NULL AND c.expires_at <= %s "
                    "THEN excluded.expires_at "
                    "WHEN c.expires_at IS NULL OR excluded.expires_at IS NULL THEN c.expires_at "
                    f"ELSE {later}(c.expires_at, excluded.expires_at) END "
                    "RETURNING n",
                    [key, delta, expires_at, now, now],
                )
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
        key = None
        if hmac_key:
            try:
                key = seal_key(hmac_key)
            except ValueError:
                key = None
        try:
            with transaction.atomic(using=self.alias):
                keys = sorted(values)  # one lock order for every writer
                deletes = [k for k in keys if values[k] is None]
                puts = [models.StoreValue(key=k, value=values[k].value, expires_at=values[k].expires_at) for k in keys if values[k] is not None]
                if deletes:
                    self._values().filter(key__in=deletes).delete()
                    self._counters().filter(key__in=deletes).delete()
                if puts:
                    self._values().bulk_create(
                        puts, update_conflicts=True, unique_fields=["key"], update_fields=["value", "expires_at"]
                    )
                self._lock_streams(sorted({r.org_id for r in records}))
                for record in records:
                    self._place(record, key)
        except BackendError:
            raise
        except DatabaseError as e:
            raise _db_failure("commit", e) from None
        if SWEEP_ONE_IN and random.randrange(SWEEP_ONE_IN) == 0:  # noqa: S311 - not a secret
            try:
                self.sweep(now, limit=SWEEP_BATCH)
            except Exception:  # noqa: BLE001 - a sweep is housekeeping; the commit stands
                log.info("mfa-step: an opportunistic sweep failed; expired rows stay until the next")

    def _lock_streams(self, orgs: list[str]) -> None:
        """Makes this transaction's writers of the same organizations take turns (Postgres: an
        advisory lock per stream, released at commit; SQLite: the IMMEDIATE transaction already
        holds the database's write lock). Without it, n writers racing for each next position
        retry (n-1)/n of the time, and a busy stream can exhaust :data:`PLACE_ATTEMPTS` (the
        conformance kit's hammer showed it on Postgres). Taken in sorted order, after the values
        (every writer does the same), so no two writers wait on each other in a cycle."""
        if not orgs or self.connection.vendor != "postgresql":
            return
        with self.connection.cursor() as cursor:
            for org in orgs:
                cursor.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [STREAM_LOCK_CLASS, org])

    def _place(self, record: AuditEntry, key: bytes | None) -> None:
        for _ in range(PLACE_ATTEMPTS):
            head = self._stored_head(record.org_id)
            linked = relink(record, head, key)
            if linked is not record:
                self._count("relinked")
            try:
                with transaction.atomic(using=self.alias):  # a savepoint: a refused insert undoes only itself
                    self._records().create(
                        org_id=linked.org_id,
                        seq=linked.seq,
                        at=linked.at,
                        action=linked.action,
                        prev=linked.prev,
                        hash=linked.hash,
                        line=linked.line,
                    )
                return
            except IntegrityError:
                self._count("place_retries")
                continue  # another writer took the position: read the head again and relink
        raise unavailable("the organization's audit stream stayed busy; try again")

    # -- audit -----------------------------------------------------------------------------

    def _stored_head(self, org_id: str) -> tuple[int, str] | None:
        row = self._records().filter(org_id=org_id).order_by("-seq").values_list("seq", "hash").first()
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
