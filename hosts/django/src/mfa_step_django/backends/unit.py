"""One export call's unit of work (``wit/store.wit``, "Unit of work"), held in memory until
``commit``: the last ``set``/``delete`` of each key and the audit records appended, in order.

- ``get`` and ``list-keys`` see the unit first (read-your-writes), then what is committed.
- ``head`` answers the unit's own newest record of a stream, else the stored head; records are
  relinked at commit (``chain.relink``), so the component never sees ``conflict``.
- Counters are not part of it: ``increment`` applies at once and never rolls back.
- After ``commit`` (kept or failed) the unit is empty; a call that ends without committing
  (a trap) leaves nothing behind: the unit is dropped with the instance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import invalid

MAX_KEY_BYTES = 512
MAX_VALUE_BYTES = 64 * 1024


def check_key_text(text: str, what: str = "key") -> None:
    """1 (for a key; a prefix may be empty) to 512 bytes of printable ASCII, else ``invalid``."""
    if not isinstance(text, str):
        raise invalid(f"invalid {what}: not a string")
    # The common case in C: ASCII without control characters (0x20 to 0x7E) and short enough.
    if text.isascii() and text.isprintable() and len(text) <= MAX_KEY_BYTES:
        return
    data = text.encode("utf-8", "surrogatepass")
    if len(data) > MAX_KEY_BYTES:
        raise invalid(f"invalid {what}: {len(data)} bytes is over the limit of {MAX_KEY_BYTES} bytes")
    for position, b in enumerate(data):
        if not 0x20 <= b <= 0x7E:
            raise invalid(f"invalid {what}: byte {position} is not printable ASCII (0x20 to 0x7E)")


def check_key(key: str) -> None:
    if key == "":
        raise invalid("invalid key: it is empty")
    check_key_text(key, "key")


def check_value(value: bytes) -> None:
    if len(value) > MAX_VALUE_BYTES:
        raise invalid(f"invalid value: {len(value)} bytes is over the limit of {MAX_VALUE_BYTES} bytes")


@dataclass(frozen=True)
class Put:
    """A ``set``: the bytes and their expiry. Its ``repr`` gives only the length."""

    value: bytes
    expires_at: int | None

    def __repr__(self) -> str:
        return f"Put(<{len(self.value)} bytes>, expires_at={self.expires_at!r})"


@dataclass(frozen=True)
class AuditEntry:
    """``audit.entry`` as the component built it (``line`` kept byte for byte)."""

    org_id: str
    seq: int
    at: int
    action: str
    prev: str
    hash: str
    line: str


@dataclass
class Unit:
    """The held writes of one export call. ``values[key]``: a :class:`Put`, or ``None`` for a
    delete (of the value and of any counter of that key)."""

    values: dict[str, Put | None] = field(default_factory=dict)
    records: list[AuditEntry] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not self.values and not self.records

    def take(self) -> tuple[dict[str, Put | None], list[AuditEntry]]:
        """Everything held, leaving the unit empty."""
        values, records = self.values, self.records
        self.values, self.records = {}, []
        return values, records

    def get(self, key: str) -> tuple[bool, bytes | None]:
        """``(touched, value)``: whether this unit set or deleted ``key``, and what it reads."""
        if key not in self.values:
            return False, None
        put = self.values[key]
        return True, (put.value if put is not None else None)

    def list(self, prefix: str, committed: list[str]) -> list[str]:
        keys = [k for k in committed if not (k in self.values and self.values[k] is None)]
        seen = set(keys)
        for key, put in self.values.items():
            if put is not None and key.startswith(prefix) and key not in seen:
                keys.append(key)
                seen.add(key)
        return keys

    def head(self, org_id: str) -> tuple[int, str] | None:
        for record in reversed(self.records):
            if record.org_id == org_id:
                return record.seq, record.hash
        return None
