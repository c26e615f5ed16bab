"""The SQL of :mod:`.database`'s hot paths, written once per database vendor.

Why raw SQL: building each statement through the ORM (``QuerySet.filter(...).first()``,
``bulk_create``, ``create``) cost more than running it: a profile of 100 logins (about 37 import
calls per export call) spent most of the store's time compiling SQL, not in SQLite. These are the
same statements the ORM produced for the same tables (the models and their migrations stay the
schema; table names come from ``Model._meta.db_table``, quoted by the connection), with ``%s``
parameters bound by the driver, never formatted into the text. Both vendors take every statement
here (SQLite 3.35+ and Postgres: ``ON CONFLICT … DO UPDATE``, ``RETURNING``, ``substr``); only the
"later of two expiries" function differs (``MAX`` vs ``GREATEST``).
"""

from __future__ import annotations

from .. import models

#: The vendors this backend speaks (Django's ``connection.vendor``).
VENDORS = ("sqlite", "postgresql")


class Statements:
    """The statements for one vendor. ``quote`` is the connection's ``ops.quote_name``."""

    __slots__ = (
        "vendor",
        "get",
        "list_all",
        "list_prefix",
        "counter_extend",
        "counter_read",
        "increment",
        "delete_values",
        "delete_counters",
        "upsert_values",
        "head",
        "insert_record",
    )

    def __init__(self, vendor: str, quote) -> None:  # noqa: ANN001
        if vendor not in VENDORS:
            raise ValueError(f"mfa-step-django supports SQLite and Postgres, not {vendor!r}")
        self.vendor = vendor
        values = quote(models.StoreValue._meta.db_table)
        counters = quote(models.StoreCounter._meta.db_table)
        records = quote(models.AuditRecord._meta.db_table)
        later = "GREATEST" if vendor == "postgresql" else "MAX"
        live = "(expires_at IS NULL OR expires_at > %s)"
        # store.get: the value of a live row.
        self.get = f"SELECT value FROM {values} WHERE key = %s AND {live}"
        # store.list-keys. The prefix is compared exactly on the first len(prefix) characters
        # (`LIKE` would read `%`, `_` and `\` as patterns, and is case-insensitive on SQLite).
        self.list_all = f"SELECT key FROM {values} WHERE {live}"
        self.list_prefix = f"SELECT key FROM {values} WHERE {live} AND substr(key, 1, %s) = %s"
        # store.increment(k, 0, some(t)): extends a live counter that has an expiry to the later
        # of the two. Only a row whose expiry is earlier than t is touched (the later of the two
        # is then t): a read that changes nothing writes nothing. Parameters: t, key, now, t.
        self.counter_extend = (
            f"UPDATE {counters} SET expires_at = %s "
            "WHERE key = %s AND expires_at IS NOT NULL AND expires_at > %s AND expires_at < %s"
        )
        self.counter_read = f"SELECT n FROM {counters} WHERE key = %s AND {live}"
        # store.increment: ONE statement under the row's lock, so no update is ever lost. An
        # expired counter starts again (absent = 0) with this expiry; a live one keeps the later
        # expiry; one kept for good stays so. Parameters: key, delta, expires_at, now, now.
        self.increment = (
            f"INSERT INTO {counters} AS c (key, n, expires_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (key) DO UPDATE SET "
            "n = CASE WHEN c.expires_at IS NOT NULL AND c.expires_at <= %s "
            "THEN excluded.n ELSE c.n + excluded.n END, "
            "expires_at = CASE WHEN c.expires_at IS NOT NULL AND c.expires_at <= %s "
            "THEN excluded.expires_at "
            "WHEN c.expires_at IS NULL OR excluded.expires_at IS NULL THEN c.expires_at "
            f"ELSE {later}(c.expires_at, excluded.expires_at) END "
            "RETURNING n"
        )
        # commit: a delete removes the value and any counter of the key; a set is an upsert.
        # The `IN (…)` and `VALUES …` lists are built for the unit's size (placeholders only).
        self.delete_values = f"DELETE FROM {values} WHERE key IN "
        self.delete_counters = f"DELETE FROM {counters} WHERE key IN "
        self.upsert_values = (
            f"INSERT INTO {values} (key, value, expires_at) VALUES {{rows}} "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at"
        )
        # audit: the newest record of a stream; a record placed at (org_id, seq).
        self.head = f"SELECT seq, hash FROM {records} WHERE org_id = %s ORDER BY seq DESC LIMIT 1"
        self.insert_record = (
            f"INSERT INTO {records} (org_id, seq, at, action, prev, hash, line) VALUES (%s, %s, %s, %s, %s, %s, %s)"
        )


def placeholders(n: int, width: int = 1) -> str:
    """``(%s, %s, …)`` for an ``IN`` list of ``n`` (``width`` 1), or ``n`` rows of ``width``."""
    if width == 1:
        return "(" + ", ".join(["%s"] * n) + ")"
    row = "(" + ", ".join(["%s"] * width) + ")"
    return ", ".join([row] * n)
