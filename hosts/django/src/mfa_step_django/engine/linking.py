"""Host functions bound into a wasmtime component linker, with two fixes over
``LinkerInstance.add_func`` of wasmtime-py 50.0.1 (pinned exactly in pyproject.toml for this
reason: these are its internals).

1. **Results are lowered explicitly.** wasmtime-py picks a ``result``'s case from the Python
   value's class, and for ``result<option<list<u8>>, store-error>`` (``store.get``) the ``ok``
   case's classes include ``object`` (from the ``option``), so every ``err`` value is tried as
   ``ok`` and raises ``ValueError: value not valid for this variant`` (a trap: the contract's
   ``err`` could never be answered). Here a host function returns ``Ok(x)`` or ``Err(e)`` for a
   ``result`` type, and the callback writes the case itself (``is_ok``) and lowers only the
   payload with wasmtime-py, so ``store.get`` answers ``err`` like every other import.
2. **A failing host function traps its own call only.** wasmtime-py keeps a Python exception
   raised inside a host function in a process-wide ``LAST_EXCEPTION`` and re-raises it from the
   *next* call that sees a trap, in whichever thread that is. Here any exception becomes a
   ``WasmtimeError`` returned to wasmtime directly (the call traps, the engine answers
   ``unavailable``), and ``LAST_EXCEPTION`` is never touched. The exception itself is kept by
   ``on_error`` for the calling thread (the engine logs its class, never its message).
3. **Types are read once.** wasmtime-py rebuilds an import's ``FuncType`` and every parameter
   and result type on each call (and walks them again to convert each value); here the first
   call reads them into :class:`~.convert.WitType` (kept on the binding) and :mod:`.lowering`
   converts with those. The values are the same as wasmtime-py's.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any, Callable

from wasmtime import StoreContext, WasmtimeError
from wasmtime import _ffi as ffi  # noqa: PLC2701 - see the module doc
from wasmtime.component._linker import FUNCTIONS, func_finalize  # noqa: PLC2701
from wasmtime.component._types import FuncType  # noqa: PLC2701

from .convert import WitType, describe, to_wasm
from .lowering import lift, lower

__all__ = ["Ok", "Err", "add_host_func"]


@dataclass(frozen=True)
class Ok:
    """The ``ok`` case of a host function's ``result``."""

    value: Any = None


@dataclass(frozen=True)
class Err:
    """The ``err`` case of a host function's ``result``."""

    value: Any = None


class _Binding:
    """One host function: what it calls, and its signature once seen (``sig``)."""

    __slots__ = ("func", "name", "on_error", "sig")

    def __init__(self, name: str, func: Callable[..., Any], on_error: Callable[[str, BaseException], None]) -> None:
        self.name = name
        self.func = func
        self.on_error = on_error
        #: ``(param types, result type or None)`` as :class:`~.convert.WitType`, read from the
        #: first call's ``FuncType`` and kept: an import's type is fixed by the component, and a
        #: binding belongs to one linker that instantiates one component (one ``Engine``). Every
        #: call still checks the argument count and whether there is a result against it.
        self.sig: tuple[tuple[WitType, ...], WitType | None] | None = None


def _signature(ty_raw: Any, store: StoreContext) -> tuple[tuple[WitType, ...], WitType | None]:
    with FuncType._from_ptr(ty_raw, owner=store) as fty:  # noqa: SLF001
        params = tuple(describe(ty) for _, ty in fty.params)
        result = fty.result
        return params, (None if result is None else describe(result))


def _lower_result(store: StoreContext, ty: WitType, value: Any, ptr: Any) -> None:
    if isinstance(value, Ok):
        is_ok, case_ty, payload = True, ty.case_map["ok"], value.value
    elif isinstance(value, Err):
        is_ok, case_ty, payload = False, ty.case_map["err"], value.value
    else:
        raise TypeError("a host function of a result type must return Ok(...) or Err(...)")
    raw = None
    if case_ty is not None:
        val = ffi.wasmtime_component_val_t()
        lower(case_ty, store, to_wasm(case_ty, payload), ctypes.pointer(val))
        raw = ffi.wasmtime_component_val_new(ctypes.byref(val))
    elif payload is not None:
        raise TypeError("this result case has no payload")
    ptr.contents.kind = ffi.WASMTIME_COMPONENT_RESULT
    ptr.contents.of.result.is_ok = is_ok
    ptr.contents.of.result.val = raw


@ffi.wasmtime_component_func_callback_t
def _host_call(idx, context, ty_raw, args, nargs, results, nresults):  # type: ignore[no-untyped-def]
    store = StoreContext(context)
    binding: _Binding | None = None
    try:
        binding = FUNCTIONS.get(idx or 0)
        sig = binding.sig
        if sig is None:
            sig = binding.sig = _signature(ty_raw, store)
        param_tys, result_ty = sig
        if nargs != len(param_tys) or nresults != (0 if result_ty is None else 1):
            raise TypeError("an import was called with another signature than it was first called with")
        pyargs = [lift(ty, args[i]) for i, ty in enumerate(param_tys)]
        result = binding.func(*pyargs)
        if result_ty is None:
            if result is not None:
                raise TypeError("a host function without a result returned a value")
        elif result_ty.kind == "result":
            _lower_result(store, result_ty, result, results)
        else:
            lower(result_ty, store, to_wasm(result_ty, result), results)
        return 0
    except BaseException as e:  # noqa: BLE001 - every failure must become a trap, never escape into C
        name = binding.name if binding is not None else "?"
        if binding is not None:
            try:
                binding.on_error(name, e)
            except BaseException:  # noqa: BLE001, S110 - reporting must not stop the trap
                pass
        error = WasmtimeError(f"mfa-step host: the import {name} failed ({type(e).__name__})")
        return ctypes.cast(error._consume(), ctypes.c_void_p).value  # noqa: SLF001
    finally:
        store._invalidate()  # noqa: SLF001


def add_host_func(
    instance: Any,
    name: str,
    func: Callable[..., Any],
    on_error: Callable[[str, BaseException], None],
    qualified: str | None = None,
) -> None:
    """Defines ``name`` in a ``LinkerInstance`` as ``func(*args)`` (no store argument).

    ``func`` returns ``Ok``/``Err`` for a ``result`` type, else the value (Python side, see
    :mod:`.convert`). Any exception traps the call; ``on_error(qualified name, exception)`` sees it.
    """
    instance._assert_not_locked()  # noqa: SLF001
    name_bytes = name.encode("utf-8")
    name_buf = ctypes.create_string_buffer(name_bytes)
    idx = FUNCTIONS.allocate(_Binding(qualified or name, func, on_error))
    err = ffi.wasmtime_component_linker_instance_add_func(
        instance.ptr(), name_buf, len(name_bytes), _host_call, idx, func_finalize
    )
    if err:
        raise WasmtimeError._from_ptr(err)  # noqa: SLF001
