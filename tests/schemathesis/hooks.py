"""Schemathesis hooks for the contract run (`tests/schemathesis/run.sh`).

Each hook covers one difference between the service and what JSON Schema can say, named here and
in the README; neither drops a failure, and every check stays on.

1. UTF-8 byte limits. The service bounds some strings in bytes (`core/src/kernel/input.rs`: an
   email address 254 bytes with 64 before the `@`; free text such as a user agent, 512 bytes).
   JSON Schema's `maxLength` counts characters, so the document states the same numbers as
   characters and says "bytes" in words. A positive case whose text is within the characters but
   over the bytes is one the document cannot promise: it is not generated (`filter_case`).
   Negative cases are all kept (too many characters is always too many bytes).

2. Whole numbers spelled as floats. For an `integer` field JSON Schema 2020-12 admits `57.0`, and
   schemathesis sends it; the service's body parser (serde) takes only `57`, and no schema keyword
   can say so. Bodies carry such numbers in their integer spelling (`map_body`). This one is a gap
   in the service, reported with issue 14: once the parser takes `57.0`, delete this hook.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.generation import GenerationMode

# core/src/kernel/input.rs: MAX_EMAIL, the local part's 64, MAX_TEXT.
MAX_EMAIL_BYTES = 254
MAX_LOCAL_PART_BYTES = 64
MAX_TEXT_BYTES = 512
# The fields `input::text` checks (device traits, the actor's user agent, a preview's time zone).
TEXT_FIELDS = frozenset(
    {"user_agent", "browser_family", "platform", "language", "time_zone", "screen_class"}
)


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _over_byte_limits(value: Any, key: str | None = None) -> bool:
    if isinstance(value, dict):
        return any(_over_byte_limits(v, k) for k, v in value.items())
    if isinstance(value, list):
        return any(_over_byte_limits(v, key) for v in value)
    if isinstance(value, str):
        if key == "email":
            local = value.split("@", 1)[0]
            return _utf8_len(value) > MAX_EMAIL_BYTES or _utf8_len(local) > MAX_LOCAL_PART_BYTES
        if key in TEXT_FIELDS:
            return _utf8_len(value) > MAX_TEXT_BYTES
    return False


@schemathesis.hook
def filter_case(context, case) -> bool:
    meta = case.meta
    if meta is None or meta.generation.mode != GenerationMode.POSITIVE:
        return True
    return not _over_byte_limits(case.body)


def _integer_spelling(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _integer_spelling(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integer_spelling(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@schemathesis.hook
def map_body(context, body):
    return _integer_spelling(body)
