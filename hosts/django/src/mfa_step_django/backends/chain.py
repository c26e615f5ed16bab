"""Relinking an audit record to its stream's head at commit (``wit/audit.wit``, "The chain,
exactly"): ``seq`` and ``prev`` rewritten in the line, ``hash`` = SHA-256 of the prefix (the line
up to and including ``"prev":"<P>"``), ``seal`` = HMAC-SHA256(seal key, the 64 ASCII bytes of the
hash), seal key = HMAC-SHA256(hex-decoded ``hmac_key``, ``mfa-step/audit-seal/v1``). Every other
byte stays as the component wrote it. A line that is not of that shape is refused (the commit
fails closed), never stored half-understood.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re

from . import unavailable
from .unit import AuditEntry

GENESIS = "0" * 64
SEAL_LABEL = b"mfa-step/audit-seal/v1"

# `"seq":` follows the record id (hex); `,"prev":"` can only be the field itself, since a quote
# inside a JSON string is always escaped.
_LINE = re.compile(
    r'\A(\{"v":[0-9]+,"id":"[0-9a-f]+","seq":)([0-9]+)(,.*,"prev":")([0-9a-f]{64})'
    r'(","hash":"[0-9a-f]{64}","seal":(?:null|"[0-9a-f]{64}")\})\Z',
    re.DOTALL,
)


def seal_key(hmac_key_hex: str) -> bytes:
    return hmac.new(bytes.fromhex(hmac_key_hex), SEAL_LABEL, hashlib.sha256).digest()


def links_to(entry: AuditEntry, head: tuple[int, str] | None) -> bool:
    if head is None:
        return entry.seq == 1 and entry.prev == GENESIS
    return entry.seq == head[0] + 1 and entry.prev == head[1]


def check_line(entry: AuditEntry) -> None:
    if not entry.line or "\r" in entry.line or "\n" in entry.line:
        raise unavailable("refused audit record: its line must be one non-empty line of JSON")


def relink(entry: AuditEntry, head: tuple[int, str] | None, key: bytes | None) -> AuditEntry:
    """``entry`` placed after ``head``: itself when it links there already, else resealed."""
    check_line(entry)
    if links_to(entry, head):
        return entry
    if key is None:
        raise unavailable("cannot relink an audit record: no usable hmac_key to seal it with")
    m = _LINE.match(entry.line)
    if m is None:
        raise unavailable("cannot relink an audit record: its line is not of the chain's schema")
    try:
        org = json.loads(entry.line).get("org")
    except ValueError:
        raise unavailable("cannot relink an audit record: its line is not JSON") from None
    if org != entry.org_id:
        raise unavailable("cannot relink an audit record: its line names another organization")
    seq, prev = (1, GENESIS) if head is None else (head[0] + 1, head[1])
    prefix = f"{m.group(1)}{seq}{m.group(3)}{prev}\""
    digest = hashlib.sha256(prefix.encode("utf-8")).hexdigest()
    seal = hmac.new(key, digest.encode("ascii"), hashlib.sha256).hexdigest()
    line = f'{prefix},"hash":"{digest}","seal":"{seal}"}}'
    return AuditEntry(entry.org_id, seq, entry.at, entry.action, prev, digest, line)
