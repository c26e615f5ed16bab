"""wasmtime's C values <-> the Python values wasmtime-py's own ``convert_from_c`` /
``convert_to_c`` produce and take, driven by a :class:`~.convert.WitType` (types read once).

Why: wasmtime-py 50.0.1 re-reads every type through the C API on every conversion (a record's
``fields``, an option's ``payload``, a variant's cases and whether it is tagged, each a fresh
object per access), and converts a ``list<u8>`` one ``val_t`` at a time through ``ctypes``. A
host call paid both on every argument and result. This module does the same conversions with the
types read once, and moves a ``list<u8>`` as one block of memory.

Exactly wasmtime-py's shapes (``Record`` objects with WIT field names, ``Variant`` for tagged
variant-likes, untagged payloads otherwise, ``bytes`` for ``list<u8>``), and exactly its
ownership rules (a lifted value's C storage is freed as wasmtime-py frees it; a lowered value is
owned by wasmtime afterwards). A kind it does not handle itself (flags, resources, floats, chars,
enums) goes to the wasmtime-py type's own method, which does no type introspection for those.
A value of the wrong Python type raises ``TypeError``/``ValueError`` as wasmtime-py would (the
host call then traps: fail closed).
"""

from __future__ import annotations

import ctypes
from ctypes import byref
from typing import Any

from wasmtime import _ffi as ffi  # noqa: PLC2701 - see engine.linking
from wasmtime.component import Record, Variant
from wasmtime.component._enter import enter_wasm  # noqa: PLC2701

from .convert import WitType

__all__ = ["lift", "lower", "call_func"]

_VAL = ffi.wasmtime_component_val_t
_VAL_SIZE = ctypes.sizeof(_VAL)
_KIND_OFFSET = _VAL.kind.offset
_OF_OFFSET = _VAL.of.offset

_K_BOOL = ffi.WASMTIME_COMPONENT_BOOL
_K_U8 = ffi.WASMTIME_COMPONENT_U8
_K_STRING = ffi.WASMTIME_COMPONENT_STRING
_K_LIST = ffi.WASMTIME_COMPONENT_LIST
_K_RECORD = ffi.WASMTIME_COMPONENT_RECORD
_K_OPTION = ffi.WASMTIME_COMPONENT_OPTION
_K_RESULT = ffi.WASMTIME_COMPONENT_RESULT
_K_VARIANT = ffi.WASMTIME_COMPONENT_VARIANT
_K_TUPLE = ffi.WASMTIME_COMPONENT_TUPLE

# A `list<u8>` element is a whole `val_t` (kind u8 + the byte in the union): the C array of a
# byte string is built from one 32-byte (val_t-sized) pattern per byte value, and read back by
# taking every val_t's byte at its offset. The kinds are checked on the way in from C.
_U8_ELEMENT = tuple(
    bytes([_K_U8.value]).ljust(_OF_OFFSET, b"\0") + bytes([b]).ljust(_VAL_SIZE - _OF_OFFSET, b"\0") for b in range(256)
)
assert _KIND_OFFSET == 0 and all(len(e) == _VAL_SIZE for e in _U8_ELEMENT)  # noqa: S101 - layout check at import


# `wasm_byte_vec_new` (copies `size` bytes into a new vector) with the data as `char *`, so a
# Python `bytes` is passed as is: one C call per string, where wasmtime-py's `str_to_capi` makes
# three and a ctypes array. Our own function object: wasmtime-py's prototype stays untouched.
_byte_vec_new = ffi.dll["wasm_byte_vec_new"]
_byte_vec_new.restype = None
_byte_vec_new.argtypes = [ctypes.POINTER(ffi.wasm_byte_vec_t), ctypes.c_size_t, ctypes.c_char_p]


def _str_to_capi(s: str) -> Any:
    if not isinstance(s, str):
        raise TypeError("expected a string")
    data = s.encode("utf-8")
    vec = ffi.wasm_byte_vec_t()
    _byte_vec_new(byref(vec), len(data), data)
    return vec


def _lift_bytes(c: Any) -> bytes:
    lst = c.of.list
    n = lst.size
    try:
        if n == 0:
            return b""
        raw = ctypes.string_at(ctypes.cast(lst.data, ctypes.c_void_p).value, n * _VAL_SIZE)
        if raw[_KIND_OFFSET::_VAL_SIZE] != bytes([_K_U8.value]) * n:
            raise TypeError("a list<u8> from wasmtime holds a value that is not a u8")
        return raw[_OF_OFFSET::_VAL_SIZE]
    finally:
        ffi.wasmtime_component_vallist_delete(byref(lst))


def _lower_bytes(val: Any, ptr: Any) -> None:
    if not isinstance(val, bytes):
        raise TypeError("expected bytes value")
    n = len(val)
    raw = ffi.wasmtime_component_vallist_t()
    ffi.wasmtime_component_vallist_new_uninit(raw, n)
    if n:
        ctypes.memmove(raw.data, b"".join(map(_U8_ELEMENT.__getitem__, val)), n * _VAL_SIZE)
    ptr.contents.kind = _K_LIST
    ptr.contents.of.list = raw


def lift(t: WitType, c: Any) -> Any:
    """The wasmtime-py value of the C value ``c`` (a ``wasmtime_component_val_t``) of type ``t``;
    frees what ``c`` owns, as ``t.ty.convert_from_c(c)`` would."""
    kind = t.kind
    if kind == "string":
        assert c.kind == _K_STRING.value  # noqa: S101 - as wasmtime-py checks it
        ret = ffi.to_str(c.of.string)
        ffi.wasm_byte_vec_delete(byref(c.of.string))
        return ret
    if kind == "bytes":
        assert c.kind == _K_LIST.value  # noqa: S101
        return _lift_bytes(c)
    if kind == "record":
        assert c.kind == _K_RECORD.value  # noqa: S101
        try:
            ret = Record()
            data = c.of.record.data
            for i, (name, _key, field_t) in zip(range(c.of.record.size), t.fields):
                raw_field = data[i]
                setattr(ret, name, lift(field_t, raw_field.val))
                raw_field.val.kind = _K_BOOL
                raw_field.val.of.boolean = False
            return ret
        finally:
            ffi.wasmtime_component_valrecord_delete(c.of.record)
    if kind == "option":
        assert c.kind == _K_OPTION.value  # noqa: S101
        return _lift_case(t, "some" if c.of.option else "none", c.of.option)
    if kind == "result":
        assert c.kind == _K_RESULT.value  # noqa: S101
        return _lift_case(t, "ok" if c.of.result.is_ok else "err", c.of.result.val)
    if kind == "variant":
        assert c.kind == _K_VARIANT.value  # noqa: S101
        tag = ffi.to_str(c.of.variant.discriminant)
        ffi.wasm_byte_vec_delete(byref(c.of.variant.discriminant))
        return _lift_case(t, tag, c.of.variant.val)
    if kind == "list":
        assert c.kind == _K_LIST.value  # noqa: S101
        try:
            out = []
            element = t.element
            data = c.of.tuple.data
            for i in range(c.of.tuple.size):
                raw = data[i]
                out.append(lift(element, raw))
                raw.kind = _K_BOOL
                raw.of.boolean = False
            return out
        finally:
            ffi.wasmtime_component_valtuple_delete(byref(c.of.tuple))
    if kind == "tuple":
        assert c.kind == _K_TUPLE.value  # noqa: S101
        try:
            items = []
            data = c.of.tuple.data
            for i, element in zip(range(c.of.tuple.size), t.elements):
                raw = data[i]
                items.append(lift(element, raw))
                raw.kind = _K_BOOL
                raw.of.boolean = False
            return tuple(items)
        finally:
            ffi.wasmtime_component_valtuple_delete(byref(c.of.tuple))
    # bool, integers, floats, char, enum, flags, resources: wasmtime-py's own (no type walk).
    return t.ty.convert_from_c(c)


def _lift_case(t: WitType, tag: str, ptr: Any) -> Any:
    """``VariantLikeType._lift`` with the cases read once."""
    if tag not in t.case_map:
        raise ValueError(f"tag {tag} not found in variant cases")
    case_t = t.case_map[tag]
    if case_t is None:
        return Variant(tag) if t.tagged else None
    payload = lift(case_t, ptr.contents)
    ptr.contents.kind = _K_BOOL
    ptr.contents.of.boolean = False
    ffi.wasmtime_component_val_delete(ptr)
    return Variant(tag, payload) if t.tagged else payload


def lower(t: WitType, store: Any, val: Any, ptr: Any) -> None:
    """Writes the wasmtime-py value ``val`` of type ``t`` into ``*ptr``, as
    ``t.ty.convert_to_c(store, val, ptr)`` would."""
    kind = t.kind
    if kind == "string":
        if not isinstance(val, str):
            raise TypeError("expected string type")
        ptr.contents.kind = _K_STRING
        ptr.contents.of.string = _str_to_capi(val)
        return
    if kind == "bytes":
        _lower_bytes(val, ptr)
        return
    if kind == "record":
        fields = t.fields
        raw = ffi.wasmtime_component_valrecord_t()
        ffi.wasmtime_component_valrecord_new_uninit(raw, len(fields))
        i = 0
        cleanup = True
        try:
            for name, _key, field_t in fields:
                lower(field_t, store, getattr(val, name), ctypes.pointer(raw.data[i].val))
                raw.data[i].name = _str_to_capi(name)
                i += 1
            ptr.contents.kind = _K_RECORD
            ptr.contents.of.record = raw
            cleanup = False
        finally:
            if cleanup:
                for j in range(i, len(fields)):
                    raw.data[j].val.kind = _K_BOOL
                    raw.data[j].val.of.boolean = False
                ffi.wasmtime_component_valrecord_delete(byref(raw))
        return
    if kind in ("option", "result", "variant"):
        name, raw_case = _lower_case(t, store, val)
        if kind == "option":
            ptr.contents.kind = _K_OPTION
            ptr.contents.of.option = raw_case
        elif kind == "result":
            ptr.contents.kind = _K_RESULT
            ptr.contents.of.result.is_ok = name == "ok"
            ptr.contents.of.result.val = raw_case
        else:
            ptr.contents.kind = _K_VARIANT
            ptr.contents.of.variant.discriminant = _str_to_capi(name)
            ptr.contents.of.variant.val = raw_case
        return
    if kind == "list":
        if not isinstance(val, list):
            raise TypeError("expected list value")
        element = t.element
        raw = ffi.wasmtime_component_vallist_t()
        ffi.wasmtime_component_vallist_new_uninit(raw, len(val))
        i = 0
        cleanup = True
        try:
            for e in val:
                lower(element, store, e, ctypes.pointer(raw.data[i]))
                i += 1
            ptr.contents.kind = _K_LIST
            ptr.contents.of.list = raw
            cleanup = False
        finally:
            if cleanup:
                for j in range(i, len(val)):
                    raw.data[j].kind = _K_BOOL
                    raw.data[j].of.boolean = False
                ffi.wasmtime_component_vallist_delete(byref(raw))
        return
    # bool, integers, floats, char, enum, flags, tuples, resources: wasmtime-py's own.
    t.ty.convert_to_c(store, val, ptr)


def _lower_case(t: WitType, store: Any, val: Any) -> tuple[str, Any]:
    """``VariantLikeType._lower`` with the cases read once: the case and its payload's C value."""
    tagged = t.tagged
    if tagged and not isinstance(val, Variant):
        raise TypeError("expected Variant type")
    for name, case_t in t.cases:
        if tagged:
            if name != val.tag:
                continue
        elif case_t is None:
            if val is not None:
                continue
        elif not isinstance(val, case_t.classes):
            continue
        if case_t is None:
            return name, None
        raw = _VAL()
        lower(case_t, store, val.payload if tagged else val, ctypes.pointer(raw))
        return name, ffi.wasmtime_component_val_new(byref(raw))
    raise ValueError("value not valid for this variant")


def call_func(func: Any, store: Any, params: list[WitType], result: WitType | None, values: list[Any]) -> Any:
    """``func(store, *values)`` (a ``wasmtime.component.Func``) as wasmtime-py's ``Func.__call__``
    does it, but with the export's types read once (``params``, ``result``) instead of asking
    wasmtime for them on every call. Traps and errors surface as there (``enter_wasm``)."""
    if len(values) != len(params):
        raise TypeError(f"wrong number of parameters provided: given {len(values)}, expected {len(params)}")
    param_capi = (_VAL * len(values))()
    n = 0
    try:
        for t, val in zip(params, values):
            lower(t, store, val, ctypes.pointer(param_capi[n]))
            n += 1
        result_space = _VAL() if result is not None else None
        context = store._context()  # noqa: SLF001

        def run() -> Any:
            return ffi.wasmtime_component_func_call(
                byref(func._func),  # noqa: SLF001
                context,
                param_capi,
                n,
                None if result_space is None else byref(result_space),
                0 if result_space is None else 1,
            )

        enter_wasm(run)
        if result_space is None:
            return None
        return lift(result, result_space)
    finally:
        for i in range(n):
            ffi.wasmtime_component_val_delete(byref(param_capi[i]))
