"""The imports' backends: what the component's ``store``, ``audit`` and ``mailer`` calls reach.

Map (arrows one way: the engine calls these, these never call the engine):

- :mod:`.unit`      limits of keys and values, and one export call's unit of work (the ``set``s,
                    ``delete``s and audit records held until ``commit``; read-your-writes).
- :mod:`.chain`     relinking an audit record to the head its stream has at commit (seq, prev,
                    hash and seal recomputed exactly as ``wit/audit.wit`` says).
- :mod:`.database`  :class:`DjangoDatabase`: values, counters and the audit trail on a Django
                    database alias (the models of :mod:`mfa_step_django.models`).
- :mod:`.sql`       the statements :mod:`.database` runs, written once per vendor (SQLite,
                    Postgres) from the models' tables.
- :mod:`.mail`      :class:`DjangoMailer`: messages through Django's email backend.
- :mod:`.faults`    :class:`Breakable`: a wrapper that fails (or lies) on demand, for outage and
                    conformance tests.

Every backend failure is a :class:`BackendError` (``kind`` ``"unavailable"`` or ``"invalid"``);
the engine turns it into the import's ``err``. A backend never answers "absent" for a read that
failed.
"""

from __future__ import annotations


class BackendError(Exception):
    """A backend call failed. ``kind``: ``"unavailable"`` (retry may succeed), ``"invalid"``
    (the key or value broke the limits), or for the mailer ``"rejected-recipient"``. The message
    never quotes a value, a code or a key's secret."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def unavailable(message: str) -> BackendError:
    return BackendError("unavailable", message)


def invalid(message: str) -> BackendError:
    return BackendError("invalid", message)
