"""WIT values <-> Python values: the one conversion module, both directions, driven by the types
the component itself declares (``wasmtime.component`` type objects), never by guesses.

The Python side (what callers of :mod:`mfa_step_django.engine` pass and get back):

=====================  =========================================================================
WIT                    Python
=====================  =========================================================================
record                 ``dict`` with snake_case keys (``user-id`` -> ``user_id``); returned
                       records are :class:`WitRecord` (a ``dict`` whose ``repr`` hides secrets)
enum                   its WIT case name as a ``str`` (``"invalid-input"``, ``"login"``)
option<T>              ``None`` or the value
list<u8>               ``bytes``;  other lists: ``list``
variant                ``{"tag": case, "value": payload or None}`` (``decision``: tags ``allow``,
                       ``challenge``, ``deny``, the WIT case names)
result<T, E>           ``{"tag": "ok" | "err", "value": ...}`` (export results are unwrapped by
                       the engine: ``ok`` returned, ``err`` raised as ``MfaError``)
bool, integers, string ``bool``, ``int`` (range-checked), ``str``
=====================  =========================================================================

Guarantees: a value of the wrong shape from a caller raises :class:`ShapeError` naming the path
(``context.device.traits.browser_major``) *before* anything reaches wasmtime, so a caller's mistake
is an ``invalid-input`` and never a crash inside a call. wasmtime-py lifts some WIT types
"untagged" (an ``option`` as ``None``-or-value, a ``result`` as bare payload when the cases'
Python classes differ); :func:`from_wasm` reads those back with the same type information
wasmtime used to lift them, so the case is never ambiguous.
"""

from __future__ import annotations

from typing import Any

from wasmtime.component import (
    Bool,
    Char,
    EnumType,
    F32,
    F64,
    FlagsType,
    ListType,
    OptionType,
    Record,
    RecordType,
    ResultType,
    S8,
    S16,
    S32,
    S64,
    String,
    TupleType,
    U8,
    U16,
    U32,
    U64,
    ValType,
    Variant,
    VariantType,
)

__all__ = ["ShapeError", "WitRecord", "SECRET_FIELDS", "to_wasm", "from_wasm", "snake", "kebab"]

#: Fields whose values are secrets (a device token inside a cookie, a step-up token, a code):
#: never shown by ``repr``/``str`` of a :class:`WitRecord`.
SECRET_FIELDS = frozenset({"set_cookie", "step_up", "cookie", "code"})

_INT_RANGES = {
    S8: (-(2**7), 2**7 - 1),
    S16: (-(2**15), 2**15 - 1),
    S32: (-(2**31), 2**31 - 1),
    S64: (-(2**63), 2**63 - 1),
    U8: (0, 2**8 - 1),
    U16: (0, 2**16 - 1),
    U32: (0, 2**32 - 1),
    U64: (0, 2**64 - 1),
}


class ShapeError(ValueError):
    """A value does not have the shape its WIT type gives it. ``field`` names where."""

    def __init__(self, field: str, expected: str) -> None:
        super().__init__(f"{field or 'value'}: expected {expected}")
        self.field = field
        self.expected = expected


class WitRecord(dict):
    """A WIT record as a ``dict``; ``repr``/``str`` replace secret fields by ``'<redacted>'``."""

    def __repr__(self) -> str:
        shown = {k: ("<redacted>" if k in SECRET_FIELDS and v is not None else v) for k, v in self.items()}
        return f"{type(self).__name__}({shown!r})"

    __str__ = __repr__


def snake(name: str) -> str:
    """``user-id`` -> ``user_id``."""
    return name.replace("-", "_")


def kebab(name: str) -> str:
    """``user_id`` -> ``user-id``."""
    return name.replace("_", "-")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


# ---------------------------------------------------------------------------------------------
# Python -> wasmtime-py


def to_wasm(ty: ValType, value: Any, path: str = "") -> Any:
    """``value`` (the Python side) as wasmtime-py lowers ``ty``. Raises :class:`ShapeError`."""
    if isinstance(ty, Bool):
        if not isinstance(value, bool):
            raise ShapeError(path, "a bool")
        return value
    for int_ty, (low, high) in _INT_RANGES.items():
        if isinstance(ty, int_ty):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ShapeError(path, f"an integer from {low} to {high}")
            return value
    if isinstance(ty, (F32, F64)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ShapeError(path, "a number")
        return float(value)
    if isinstance(ty, (String, Char)):
        if not isinstance(value, str):
            raise ShapeError(path, "a string")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ShapeError(path, "a string of Unicode scalar values") from None
        if isinstance(ty, Char) and len(value) != 1:
            raise ShapeError(path, "one character")
        return value
    if isinstance(ty, EnumType):
        names = ty.names
        if not isinstance(value, str) or value not in names:
            raise ShapeError(path, "one of " + ", ".join(repr(n) for n in names))
        return value
    if isinstance(ty, ListType):
        element = ty.element
        if isinstance(element, U8):
            if not isinstance(value, (bytes, bytearray, memoryview)):
                raise ShapeError(path, "bytes")
            return bytes(value)
        if not isinstance(value, (list, tuple)):
            raise ShapeError(path, "a list")
        return [to_wasm(element, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(ty, RecordType):
        if not isinstance(value, dict):
            raise ShapeError(path, "a dict (a record)")
        fields = ty.fields
        names = {snake(n) for n, _ in fields}
        extra = [k for k in value if k not in names]
        if extra:
            raise ShapeError(_join(path, str(extra[0])), "no such field (fields: " + ", ".join(sorted(names)) + ")")
        record = Record()
        for name, field_ty in fields:
            key = snake(name)
            if key in value:
                field_value = value[key]
            elif isinstance(field_ty, OptionType):
                field_value = None  # an absent optional field is `none`
            else:
                raise ShapeError(_join(path, key), "a value (the field is required)")
            setattr(record, name, to_wasm(field_ty, field_value, _join(path, key)))
        return record
    if isinstance(ty, TupleType):
        elements = ty.elements
        if not isinstance(value, (list, tuple)) or len(value) != len(elements):
            raise ShapeError(path, f"a tuple of {len(elements)}")
        return tuple(to_wasm(t, v, f"{path}[{i}]") for i, (t, v) in enumerate(zip(elements, value)))
    if isinstance(ty, FlagsType):
        if not isinstance(value, (set, frozenset, list)) or not all(isinstance(v, str) for v in value):
            raise ShapeError(path, "a set of flag names")
        return set(value)
    if isinstance(ty, OptionType):
        payload_ty = ty.payload
        tagged = ty._tagged()  # noqa: SLF001 - wasmtime-py's own rule for how it lowers this type
        if value is None:
            return Variant("none") if tagged else None
        payload = to_wasm(payload_ty, value, path)
        return Variant("some", payload) if tagged else payload
    if isinstance(ty, (VariantType, ResultType)):
        cases = dict(ty._cases())  # noqa: SLF001
        if not isinstance(value, dict) or set(value) - {"tag", "value"} or value.get("tag") not in cases:
            raise ShapeError(path, "a dict {'tag': one of " + ", ".join(repr(c) for c in cases) + ", 'value': ...}")
        tag = value["tag"]
        case_ty = cases[tag]
        if case_ty is None:
            if value.get("value") is not None:
                raise ShapeError(_join(path, "value"), f"None (case {tag!r} has no payload)")
            payload = None
        else:
            payload = to_wasm(case_ty, value.get("value"), _join(path, "value"))
        if ty._tagged():  # noqa: SLF001
            return Variant(tag, payload)
        if _untagged_case(ty, payload) != tag:
            # wasmtime-py would lower this payload as another case (a case whose Python classes
            # include `object` comes first). Only a host function's top-level result can be
            # lowered explicitly (engine.linking); anywhere else it is refused, never mis-sent.
            raise ShapeError(path, f"a value wasmtime-py can lower as case {tag!r}")
        return payload
    raise ShapeError(path, f"a value of a WIT type this host does not support ({type(ty).__name__})")


def _classes(ty: ValType | None) -> set[type]:
    found: set[type] = set()
    if ty is None:
        found.add(object)
    else:
        ty.add_classes(found)
    return found


def _untagged_case(ty: Any, payload: Any) -> str | None:
    """The case wasmtime-py picks when it lowers ``payload`` for an untagged variant-like type
    (the same walk as ``VariantLikeType._lower``)."""
    for name, case_ty in ty._cases():  # noqa: SLF001
        if case_ty is None:
            if payload is None:
                return name
            continue
        if isinstance(payload, tuple(_classes(case_ty))):
            return name
    return None


# ---------------------------------------------------------------------------------------------
# wasmtime-py -> Python


def _lifted_case(ty: Any, value: Any) -> tuple[str, Any]:
    """Which case an untagged variant-like value lifted by wasmtime-py is, and its payload.

    wasmtime-py lifts untagged only when the cases' Python classes are disjoint; a case with no
    payload (or whose payload is an ``option``) contributes ``object``. So: the case whose
    *specific* classes (without ``object``) match the value, else the one that holds ``object``.
    """
    cases = ty._cases()  # noqa: SLF001
    fallback = None
    for name, case_ty in cases:
        classes = _classes(case_ty)
        specific = tuple(c for c in classes if c is not object)
        if specific and isinstance(value, specific) and not (isinstance(value, bool) and bool not in specific and int in specific):
            return name, value
        if object in classes and fallback is None:
            fallback = name
    if fallback is not None:
        return fallback, value
    raise ShapeError("", "a value of one of the variant's cases")


def from_wasm(ty: ValType, value: Any) -> Any:
    """A value lifted by wasmtime-py, as the Python side sees it."""
    if isinstance(ty, ListType):
        if isinstance(ty.element, U8):
            return bytes(value)
        element = ty.element
        return [from_wasm(element, v) for v in value]
    if isinstance(ty, RecordType):
        out = WitRecord()
        for name, field_ty in ty.fields:
            out[snake(name)] = from_wasm(field_ty, getattr(value, name))
        return out
    if isinstance(ty, TupleType):
        return tuple(from_wasm(t, v) for t, v in zip(ty.elements, value))
    if isinstance(ty, OptionType):
        if ty._tagged():  # noqa: SLF001
            if value.tag == "none":
                return None
            return from_wasm(ty.payload, value.payload)
        if value is None:
            return None
        return from_wasm(ty.payload, value)
    if isinstance(ty, (VariantType, ResultType)):
        cases = dict(ty._cases())  # noqa: SLF001
        if ty._tagged():  # noqa: SLF001
            tag, payload = value.tag, value.payload
        else:
            tag, payload = _lifted_case(ty, value)
        case_ty = cases[tag]
        return {"tag": tag, "value": None if case_ty is None else from_wasm(case_ty, payload)}
    if isinstance(ty, FlagsType):
        return set(value)
    # bool, integers, floats, char, string, enum: as wasmtime-py lifts them.
    return value
