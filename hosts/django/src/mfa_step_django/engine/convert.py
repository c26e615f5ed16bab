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

__all__ = ["ShapeError", "WitRecord", "WitType", "SECRET_FIELDS", "describe", "to_wasm", "from_wasm", "snake", "kebab"]

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
# Types, read once


class WitType:
    """A ``wasmtime.component`` type read once into plain attributes.

    wasmtime-py's type objects answer ``fields``, ``element``, ``payload``, ``_cases()`` and
    ``_tagged()`` by asking wasmtime through its C API on every access (a new Python object per
    child type each time); walking a record that way on every host call was a large part of a
    call's cost. A :class:`WitType` asks once, when a function's signature is first seen, and keeps
    the answers (and ``ty``, the wasmtime-py object itself, for what only it can do). Immutable
    after :func:`describe` returns it, so any number of threads may share it.

    ``kind``: ``bool``, ``int``, ``float``, ``char``, ``string``, ``enum``, ``bytes`` (a
    ``list<u8>``), ``list``, ``record``, ``tuple``, ``flags``, ``option``, ``result``,
    ``variant``, or ``other`` (a type this host does not support).
    """

    __slots__ = (
        "ty",
        "kind",
        "name",
        "low",
        "high",
        "names",
        "element",
        "fields",
        "snake_names",
        "elements",
        "cases",
        "case_map",
        "tagged",
        "classes",
    )

    def __repr__(self) -> str:
        return f"<WitType {self.kind} {self.name}>"


def describe(ty: Any) -> WitType:
    """``ty`` (a ``wasmtime.component`` type, or a :class:`WitType`) read once."""
    if isinstance(ty, WitType):
        return ty
    t = WitType()
    t.ty = ty
    t.name = type(ty).__name__
    t.low = t.high = None
    t.names = t.element = t.fields = t.snake_names = t.elements = t.cases = t.case_map = None
    t.tagged = False
    classes: set[type] = set()
    if isinstance(ty, Bool):
        t.kind = "bool"
    elif type(ty) in _INT_RANGES:
        t.kind = "int"
        t.low, t.high = _INT_RANGES[type(ty)]
    elif isinstance(ty, (F32, F64)):
        t.kind = "float"
    elif isinstance(ty, Char):
        t.kind = "char"
    elif isinstance(ty, String):
        t.kind = "string"
    elif isinstance(ty, EnumType):
        t.kind = "enum"
        t.names = tuple(ty.names)
    elif isinstance(ty, ListType):
        element = describe(ty.element)
        t.kind = "bytes" if isinstance(element.ty, U8) else "list"
        t.element = element
    elif isinstance(ty, RecordType):
        t.kind = "record"
        t.fields = tuple((name, snake(name), describe(field_ty)) for name, field_ty in ty.fields)
        t.snake_names = frozenset(key for _, key, _ in t.fields)
    elif isinstance(ty, TupleType):
        t.kind = "tuple"
        t.elements = tuple(describe(e) for e in ty.elements)
    elif isinstance(ty, FlagsType):
        t.kind = "flags"
    elif isinstance(ty, (OptionType, ResultType, VariantType)):
        t.kind = "option" if isinstance(ty, OptionType) else "result" if isinstance(ty, ResultType) else "variant"
        t.cases = tuple((name, None if case_ty is None else describe(case_ty)) for name, case_ty in ty._cases())  # noqa: SLF001
        t.case_map = dict(t.cases)
        # wasmtime-py's own rule for how it lifts and lowers this type (tagged or not).
        t.tagged = bool(ty._tagged())  # noqa: SLF001
    else:
        t.kind = "other"
    if t.kind != "other":
        ty.add_classes(classes)
    t.classes = tuple(classes)
    return t


# ---------------------------------------------------------------------------------------------
# Python -> wasmtime-py


def to_wasm(ty: Any, value: Any, path: str = "") -> Any:
    """``value`` (the Python side) as wasmtime-py lowers ``ty`` (a ``wasmtime.component`` type or
    a :class:`WitType`). Raises :class:`ShapeError`."""
    return _to_wasm(describe(ty), value, path)


def _to_wasm(t: WitType, value: Any, path: str) -> Any:
    kind = t.kind
    if kind == "string":
        if not isinstance(value, str):
            raise ShapeError(path, "a string")
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ShapeError(path, "a string of Unicode scalar values") from None
        return value
    if kind == "int":
        low, high = t.low, t.high
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ShapeError(path, f"an integer from {low} to {high}")
        return value
    if kind == "bytes":
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise ShapeError(path, "bytes")
        return bytes(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ShapeError(path, "a bool")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ShapeError(path, "a number")
        return float(value)
    if kind == "char":
        if not isinstance(value, str):
            raise ShapeError(path, "a string")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ShapeError(path, "a string of Unicode scalar values") from None
        if len(value) != 1:
            raise ShapeError(path, "one character")
        return value
    if kind == "enum":
        names = t.names
        if not isinstance(value, str) or value not in names:
            raise ShapeError(path, "one of " + ", ".join(repr(n) for n in names))
        return value
    if kind == "list":
        if not isinstance(value, (list, tuple)):
            raise ShapeError(path, "a list")
        element = t.element
        return [_to_wasm(element, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if kind == "record":
        if not isinstance(value, dict):
            raise ShapeError(path, "a dict (a record)")
        names = t.snake_names
        extra = [k for k in value if k not in names]
        if extra:
            raise ShapeError(_join(path, str(extra[0])), "no such field (fields: " + ", ".join(sorted(names)) + ")")
        record = Record()
        for name, key, field_t in t.fields:
            if key in value:
                field_value = value[key]
            elif field_t.kind == "option":
                field_value = None  # an absent optional field is `none`
            else:
                raise ShapeError(_join(path, key), "a value (the field is required)")
            setattr(record, name, _to_wasm(field_t, field_value, _join(path, key)))
        return record
    if kind == "tuple":
        elements = t.elements
        if not isinstance(value, (list, tuple)) or len(value) != len(elements):
            raise ShapeError(path, f"a tuple of {len(elements)}")
        return tuple(_to_wasm(e, v, f"{path}[{i}]") for i, (e, v) in enumerate(zip(elements, value)))
    if kind == "flags":
        if not isinstance(value, (set, frozenset, list)) or not all(isinstance(v, str) for v in value):
            raise ShapeError(path, "a set of flag names")
        return set(value)
    if kind == "option":
        tagged = t.tagged
        if value is None:
            return Variant("none") if tagged else None
        payload = _to_wasm(t.case_map["some"], value, path)
        return Variant("some", payload) if tagged else payload
    if kind in ("variant", "result"):
        cases = t.case_map
        if not isinstance(value, dict) or set(value) - {"tag", "value"} or value.get("tag") not in cases:
            raise ShapeError(path, "a dict {'tag': one of " + ", ".join(repr(c) for c in cases) + ", 'value': ...}")
        tag = value["tag"]
        case_t = cases[tag]
        if case_t is None:
            if value.get("value") is not None:
                raise ShapeError(_join(path, "value"), f"None (case {tag!r} has no payload)")
            payload = None
        else:
            payload = _to_wasm(case_t, value.get("value"), _join(path, "value"))
        if t.tagged:
            return Variant(tag, payload)
        if _untagged_case(t, payload) != tag:
            # wasmtime-py would lower this payload as another case (a case whose Python classes
            # include `object` comes first). Only a host function's top-level result can be
            # lowered explicitly (engine.linking); anywhere else it is refused, never mis-sent.
            raise ShapeError(path, f"a value wasmtime-py can lower as case {tag!r}")
        return payload
    raise ShapeError(path, f"a value of a WIT type this host does not support ({t.name})")


def _case_classes(case_t: WitType | None) -> tuple[type, ...]:
    return (object,) if case_t is None else case_t.classes


def _untagged_case(t: WitType, payload: Any) -> str | None:
    """The case wasmtime-py picks when it lowers ``payload`` for an untagged variant-like type
    (the same walk as ``VariantLikeType._lower``)."""
    for name, case_t in t.cases:
        if case_t is None:
            if payload is None:
                return name
            continue
        if isinstance(payload, case_t.classes):
            return name
    return None


# ---------------------------------------------------------------------------------------------
# wasmtime-py -> Python


def _lifted_case(t: WitType, value: Any) -> tuple[str, Any]:
    """Which case an untagged variant-like value lifted by wasmtime-py is, and its payload.

    wasmtime-py lifts untagged only when the cases' Python classes are disjoint; a case with no
    payload (or whose payload is an ``option``) contributes ``object``. So: the case whose
    *specific* classes (without ``object``) match the value, else the one that holds ``object``.
    """
    fallback = None
    for name, case_t in t.cases:
        classes = _case_classes(case_t)
        specific = tuple(c for c in classes if c is not object)
        if specific and isinstance(value, specific) and not (isinstance(value, bool) and bool not in specific and int in specific):
            return name, value
        if object in classes and fallback is None:
            fallback = name
    if fallback is not None:
        return fallback, value
    raise ShapeError("", "a value of one of the variant's cases")


def from_wasm(ty: Any, value: Any) -> Any:
    """A value lifted by wasmtime-py, as the Python side sees it (``ty``: a ``wasmtime.component``
    type or a :class:`WitType`)."""
    return _from_wasm(describe(ty), value)


def _from_wasm(t: WitType, value: Any) -> Any:
    kind = t.kind
    if kind == "bytes":
        return bytes(value)
    if kind == "list":
        element = t.element
        return [_from_wasm(element, v) for v in value]
    if kind == "record":
        out = WitRecord()
        for name, key, field_t in t.fields:
            out[key] = _from_wasm(field_t, getattr(value, name))
        return out
    if kind == "tuple":
        return tuple(_from_wasm(e, v) for e, v in zip(t.elements, value))
    if kind == "option":
        if t.tagged:
            if value.tag == "none":
                return None
            return _from_wasm(t.case_map["some"], value.payload)
        if value is None:
            return None
        return _from_wasm(t.case_map["some"], value)
    if kind in ("variant", "result"):
        if t.tagged:
            tag, payload = value.tag, value.payload
        else:
            tag, payload = _lifted_case(t, value)
        case_t = t.case_map[tag]
        return {"tag": tag, "value": None if case_t is None else _from_wasm(case_t, payload)}
    if kind == "flags":
        return set(value)
    # bool, integers, floats, char, string, enum: as wasmtime-py lifts them.
    return value
