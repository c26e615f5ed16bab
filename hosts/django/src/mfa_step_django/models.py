"""The tables behind the component's ``store`` and ``audit`` imports.

- :class:`StoreValue`: ``store.get``/``set``/``delete``/``list-keys`` (one row per key).
- :class:`StoreCounter`: ``store.increment``, its own namespace (a key used with ``increment`` is
  never read with ``get``). Incremented by one ``INSERT … ON CONFLICT … RETURNING`` statement.
- :class:`AuditRecord`: the append-only trail; ``UNIQUE (org_id, seq)`` is the real guard against
  a forked chain (two writers can never both take a position).

``expires_at`` is Unix seconds on the engine's clock, ``NULL`` for a key kept for good; a row whose
``expires_at`` has passed is absent to every reader and deleted by a sweep (the management command
``mfa_step_sweep``, and now and then after a commit). Only :mod:`mfa_step_django.backends.database`
writes these tables; the admin should treat them as read-only (values are the component's opaque
bytes, keyed hashes, never codes or tokens).
"""

from __future__ import annotations

from django.db import models


class StoreValue(models.Model):
    key = models.CharField(max_length=512, primary_key=True)
    value = models.BinaryField()
    expires_at = models.BigIntegerField(null=True, blank=True, db_index=True)

    class Meta:
        db_table = "mfa_step_value"
        verbose_name = "mfa-step stored value"

    def __repr__(self) -> str:  # values are opaque and may be sensitive: show only the length
        return f"<StoreValue {self.key!r} ({len(self.value or b'')} bytes)>"

    __str__ = __repr__


class StoreCounter(models.Model):
    key = models.CharField(max_length=512, primary_key=True)
    n = models.BigIntegerField()
    expires_at = models.BigIntegerField(null=True, blank=True, db_index=True)

    class Meta:
        db_table = "mfa_step_counter"
        verbose_name = "mfa-step counter"

    def __str__(self) -> str:
        return f"{self.key} = {self.n}"


class AuditRecord(models.Model):
    id = models.BigAutoField(primary_key=True)
    org_id = models.CharField(max_length=128)
    seq = models.BigIntegerField()
    at = models.BigIntegerField()
    action = models.CharField(max_length=64)
    prev = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)
    #: The record's canonical JSON line, byte for byte as the component (or the relinker) made it.
    line = models.TextField()

    class Meta:
        db_table = "mfa_step_audit"
        verbose_name = "mfa-step audit record"
        constraints = [models.UniqueConstraint(fields=["org_id", "seq"], name="mfa_step_audit_org_seq")]

    def __str__(self) -> str:
        return f"{self.org_id}#{self.seq} {self.action}"
