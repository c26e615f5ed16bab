"""The mfa-step component in this Python process: loaded once, a fresh instance per call, its
imports bound to Django (database, email backend, settings) in Python.

```text
 get_engine()            once per process (thread-safe): wasmtime Engine, the Component compiled
      |                  once and cached precompiled on disk (keyed by the wasm's SHA-256 and the
      |                  wasmtime version), a Linker with the six imports bound
      v
 engine.verify(ctx, …)   refuse a caller's open transaction on the alias  -> MfaError misconfigured
      |                  convert ctx (convert.py)                         -> MfaError invalid-input
      |                  FRESH Store + instance, export call; the imports run in this thread:
      |                    store.*  -> the unit of work (backends.unit) + DjangoDatabase
      |                    audit.*  -> the unit (records relinked at commit)
      |                    mailer   -> DjangoMailer;  config -> settings.MFA_STEP
      |                    clock    -> engine.now();  random -> secrets
      v
 dict / list / None      ok;   err(mfa-error) -> raise MfaError(kind, message, field, retry_after_seconds)
                         a trap, a host failure -> raise MfaUnavailable (kind "unavailable");
                         the instance and its uncommitted unit are dropped, nothing kept
```

Modules: :mod:`.convert` (WIT values <-> Python, and ``WitType``: a WIT type read from wasmtime
once), :mod:`.lowering` (wasmtime's C values <-> wasmtime-py's values with those types, for host
and export calls), :mod:`.linking` (host functions that can answer ``err`` from ``store.get``,
trap only their own call, and read their types once), :mod:`.imports` (the six imports and a
call's unit of work), :mod:`.errors` (``MfaError``, ``MfaUnavailable``); this module loads the
component and makes the calls.

Python API (``mfa_step_django.engine``)::

    engine = get_engine()
    engine.wasm_sha256                                   # hex SHA-256 of the bytes loaded
    engine.begin(context) -> {"tag": "allow" | "challenge" | "deny", "value": {...}}
    engine.send_code(context, challenge_id) -> dict      # code-sent
    engine.verify(context, challenge_id, code, remember_device) -> dict   # verified
    engine.enroll(context) -> dict; engine.change_email(context, step_up) -> dict
    engine.status(context) -> dict
    engine.list_devices(actor) -> list[dict]; engine.revoke(actor, device_id) -> None
    engine.revoke_all(actor) -> int
    engine.get_policy(actor, org_id); set_policy(actor, org_id, policy); reset_user(actor, org_id, user_id)
    engine.get_user_status(actor, org_id, user_id); credential_changed(actor, org_id, user_id, change) -> int
    engine.get_platform_roles(actor); set_platform_roles(actor, roles)
    engine.get_branding(actor, org_id); set_branding(actor, org_id, branding)
    engine.preview_email(actor, org_id, language, time_zone)
    engine.call(interface, function, *args)               # any export by its WIT names

Values: see :mod:`.convert` (records are dicts with snake_case keys, enums their WIT case names,
options ``None``, variants ``{"tag", "value"}`` with the WIT case names: a decision's tags are
``allow``, ``challenge`` and ``deny``). Returned records are :class:`~.convert.WitRecord`,
whose ``repr``/``str`` hide ``set_cookie``, ``step_up`` and ``cookie``; :func:`login_context`
builds a context whose ``repr`` hides the cookie too.

Settings (``settings.MFA_STEP``, a dict):

- ``HMAC_KEY`` (required): hex, at least 32 bytes decoded (a system check errors otherwise).
- ``DATABASE`` (default ``"default"``): the alias the store and trail live on.
- ``FROM_EMAIL`` (default ``DEFAULT_FROM_EMAIL``): the From address of code emails.
- ``CACHE_DIR`` (default ``$XDG_CACHE_HOME/mfa-step-django`` or ``~/.cache/mfa-step-django``):
  where the precompiled component is kept; ``None`` or ``""`` disables the disk cache.
- ``WASM`` (default: the ``mfa_step_plugin.wasm`` shipped in this package): another component file.
- Component settings (``wit/config.wit``), by their upper-case names (``CODE_TTL_SECONDS``,
  ``TRUST_DAYS``, ``REQUIRED_ROLES``, ``ID_CASE``, …) or lower-case under ``CONFIG``
  (``{"code_ttl_seconds": "300"}``). Values are passed as strings; booleans as ``true``/``false``.

Transactions: the engine refuses to run while the caller holds a transaction on its alias
(``ATOMIC_REQUESTS``, an ``atomic()`` block, a ``TestCase``): counters must apply at once and never
roll back (``wit/store.wit``), which a caller's transaction would break. It raises
``MfaError(kind="misconfigured")`` saying so. Either keep ``ATOMIC_REQUESTS`` off for that alias,
or (Postgres) point ``MFA_STEP["DATABASE"]`` at a dedicated alias to the same database (its own
connection, autocommit), e.g. ``DATABASES["mfa_step"] = {**DATABASES["default"], "ATOMIC_REQUESTS":
False}``: the caller's transaction then neither hides the engine's counters nor rolls them back
(tests/test_engine.py). Not on SQLite: one writer at a time, so the engine's connection would wait
for the caller's open transaction (and fail closed after the busy timeout).
Tests that call the engine use ``transaction=True`` (pytest-django) / ``TransactionTestCase``.

Testing hooks: ``engine.set_clock(fn)`` (``fn() -> float`` Unix seconds; ``None`` restores the
system clock) steps the time the component, expiries and the sweep read; ``engine.backends(...)``
swaps the database backend and mailer for a block (e.g. :class:`~mfa_step_django.backends.faults.Breakable`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator

import wasmtime
from wasmtime import component as wc

from .convert import SECRET_FIELDS, ShapeError, WitRecord, describe, from_wasm, to_wasm
from .errors import MfaError, MfaUnavailable
from .lowering import call_func
from .imports import CONFIG_NAMES, PACKAGE, _Call, _RefusalLog, _bind_imports, _current, _settings, config_value

log = logging.getLogger("mfa_step_django.engine")

__all__ = [
    "Engine",
    "MfaError",
    "MfaUnavailable",
    "get_engine",
    "reset_engine",
    "login_context",
    "WitRecord",
    "CONFIG_NAMES",
    "PACKAGE",
    "config_value",
]



class _Context(dict):
    """A ``login-context`` whose ``repr`` hides the trusted-device cookie."""

    def __repr__(self) -> str:
        def hide(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: ("<redacted>" if k in SECRET_FIELDS and v is not None else hide(v)) for k, v in value.items()}
            return value

        return f"LoginContext({hide(dict(self))!r})"

    __str__ = __repr__


def login_context(
    *,
    user_id: str,
    org_id: str,
    email: str,
    roles: list[str] | tuple[str, ...] = (),
    locale: str | None = None,
    ip: str,
    user_agent: str = "",
    cookie: str | None = None,
    **traits: Any,
) -> dict:
    """A ``login-context`` dict (``traits``: ``browser_family``, ``browser_major``, ``platform``,
    ``language``, ``time_zone``, ``screen_class``), whose ``repr`` never shows the cookie."""
    known = ("browser_family", "browser_major", "platform", "language", "time_zone", "screen_class")
    unknown = set(traits) - set(known)
    if unknown:
        raise TypeError(f"login_context: unknown browser traits {sorted(unknown)}")
    return _Context(
        user_id=user_id,
        org_id=org_id,
        email=email,
        roles=list(roles),
        locale=locale,
        device={
            "cookie": cookie,
            "traits": {"user_agent": user_agent, **{k: traits.get(k) for k in known}},
            "ip": ip,
        },
    )


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mfa-step-django"


def _wasmtime_version() -> str:
    try:
        from importlib.metadata import version

        return version("wasmtime")
    except Exception:  # noqa: BLE001
        return "unknown"


# ---------------------------------------------------------------------------------------------
# the engine


def _private(path: Path) -> bool:
    """Whether ``path`` belongs to this user and nobody else may write it. A precompiled
    component is native code that wasmtime maps and runs without validating it again, so an
    entry someone else could have written is never loaded."""
    try:
        st = path.stat()
    except OSError:
        return False
    owner_ok = not hasattr(os, "getuid") or st.st_uid == os.getuid()
    return owner_ok and not (st.st_mode & 0o022)


def _load_component(engine: wasmtime.Engine, wasm: bytes, sha256: str, cache_dir: Path | None) -> tuple[wc.Component, str]:
    """The compiled component: from the disk cache when a valid entry exists, else compiled (and
    cached, written atomically: a new file renamed into place, never a file rewritten, since a
    running process may have the old one mapped). Returns it and where it came from (``cache`` or
    ``compiled``). The cache directory is created private (0700); an entry or directory that is
    not this user's alone is ignored."""
    path = None
    if cache_dir is not None:
        path = cache_dir / f"{sha256}-wasmtime-{_wasmtime_version()}.cwasm"
        if path.is_file():
            if _private(path) and _private(path.parent):
                try:
                    return wc.Component.deserialize_file(engine, str(path)), "cache"
                except Exception:  # noqa: BLE001 - a stale or torn entry: compile again and replace it
                    log.info("mfa-step: the cached precompiled component could not be loaded; compiling again")
            else:
                log.warning("mfa-step: ignoring the precompiled component cache: %s is writable by others", cache_dir)
                path = None
    component = wc.Component(engine, wasm)
    if path is not None:
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not _private(path.parent):
                raise PermissionError("the cache directory is writable by others")
            fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=".tmp-", suffix=".cwasm")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(component.serialize())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError:
            log.info("mfa-step: could not write the precompiled component cache; continuing without it")
    return component, "compiled"


class Engine:
    """The component, compiled once; a fresh wasmtime ``Store`` and instance for every call.

    Thread-safe: calls may run on any number of threads at once (each has its own store,
    instance, unit of work and Django connection).
    """

    def __init__(
        self,
        wasm: bytes | None = None,
        *,
        world: str = "plugin",
        cache_dir: Path | str | None | bool = True,
        database: Any = None,
        mailer: Any = None,
    ) -> None:
        from ..backends.database import DjangoDatabase
        from ..backends.mail import DjangoMailer

        conf = _settings()
        if wasm is None:
            wasm_path = conf.get("WASM")
            if wasm_path:
                wasm = Path(wasm_path).read_bytes()
            else:
                try:
                    wasm = resources.files("mfa_step_django").joinpath("mfa_step_plugin.wasm").read_bytes()
                except FileNotFoundError:
                    raise MfaUnavailable(
                        "mfa_step_plugin.wasm is not in the package: build it (hosts/django/scripts/build_wasm.sh) "
                        "or set MFA_STEP['WASM']"
                    ) from None
        self.wasm_sha256 = hashlib.sha256(wasm).hexdigest()
        self.world = world
        if cache_dir is True:
            configured = conf.get("CACHE_DIR", True)
            cache_dir = default_cache_dir() if configured is True else (Path(configured) if configured else None)
        elif cache_dir is False or cache_dir == "":
            cache_dir = None
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._wt_engine = wasmtime.Engine()
        started = time.perf_counter()
        self._component, self.loaded_from = _load_component(self._wt_engine, wasm, self.wasm_sha256, self.cache_dir)
        self.load_ms = (time.perf_counter() - started) * 1000
        self._linker = wc.Linker(self._wt_engine)
        self._refusals = _RefusalLog()
        _bind_imports(self._linker, self._refusals, world)
        self._funcs: dict[tuple[str, str], Any] = {}
        self._types: dict[tuple[str, str], Any] = {}
        self._index_exports()
        self._clock: Callable[[], float] | None = None
        self._database = database if database is not None else DjangoDatabase(conf.get("DATABASE", "default"))
        self._mailer = mailer if mailer is not None else DjangoMailer()
        self._override = threading.Lock()
        #: Optional ``fn(interface, function, ms_instantiate, ms_total, outcome)``, for timings.
        self.on_call: Callable[[str, str, float, float, str], None] | None = None

    def __repr__(self) -> str:
        return f"<mfa-step Engine world={self.world} wasm_sha256={self.wasm_sha256[:16]}…>"

    def _index_exports(self) -> None:
        ctype = self._component.type
        for name, item in ctype.exports(self._wt_engine).items():
            ity = item.ty
            if not isinstance(ity, wc.ComponentInstanceType):
                continue
            iface = name.split("/", 1)[-1].split("@", 1)[0]
            outer = self._component.get_export_index(name)
            for fname, fitem in ity.exports(self._wt_engine).items():
                fty = fitem.ty
                if isinstance(fty, wc.FuncType):
                    self._funcs[(iface, fname)] = self._component.get_export_index(fname, instance=outer)
                    # Read once (convert.WitType): a call never asks wasmtime for these types again.
                    result = fty.result
                    self._types[(iface, fname)] = (
                        [(pname, describe(pty)) for pname, pty in fty.params],
                        None if result is None else describe(result),
                    )

    # -- clock and backends (for tests and operators) ------------------------------------

    def now(self) -> float:
        """The time the component and the backends read (Unix seconds)."""
        clock = self._clock
        return clock() if clock is not None else time.time()

    def set_clock(self, clock: Callable[[], float] | None) -> None:
        """Replaces the clock (``None``: the system clock again). For tests."""
        self._clock = clock

    @contextlib.contextmanager
    def backends(self, database: Any = None, mailer: Any = None) -> Iterator[None]:
        """Uses ``database`` and/or ``mailer`` for every call (on every thread) within the block."""
        with self._override:
            old = (self._database, self._mailer)
            if database is not None:
                self._database = database
            if mailer is not None:
                self._mailer = mailer
        try:
            yield
        finally:
            with self._override:
                self._database, self._mailer = old

    @property
    def database(self) -> Any:
        return self._database

    @property
    def mailer(self) -> Any:
        return self._mailer

    # -- calls ---------------------------------------------------------------------------

    def _refuse_open_transaction(self) -> None:
        alias = getattr(self._database, "alias", None)
        if alias is None:
            return
        from django.db import connections

        if connections[alias].in_atomic_block:
            raise MfaError(
                "misconfigured",
                f"mfa-step cannot run inside a transaction on database alias {alias!r} (ATOMIC_REQUESTS, an "
                "atomic() block or a TestCase): its counters must apply at once and never roll back. Turn "
                "ATOMIC_REQUESTS off for that alias or set MFA_STEP['DATABASE'] to a dedicated alias of the "
                "same database; in tests, use transaction=True.",
            )

    def call(self, iface: str, fname: str, *args: Any) -> Any:
        """Calls export ``iface.fname`` (WIT names, e.g. ``login-step``, ``send-code``) on a fresh
        instance; returns the ``ok`` value or raises :class:`MfaError` / :class:`MfaUnavailable`."""
        key = (iface, fname)
        if key not in self._funcs:
            raise MfaError("invalid-input", f"the component exports no function {iface}.{fname}")
        params, result_ty = self._types[key]
        if len(args) != len(params):
            raise MfaError("invalid-input", f"{fname} takes {len(params)} arguments, got {len(args)}")
        lowered = []
        for (pname, pty), value in zip(params, args):
            try:
                lowered.append(to_wasm(pty, value, pname.replace("-", "_")))
            except ShapeError as e:
                raise MfaError(
                    "invalid-input", f"{fname}: {e.field or 'an argument'} does not have its WIT shape ({e.expected})", field=e.field
                ) from None
        self._refuse_open_transaction()
        conf = _settings()
        call = _Call(self._database, self._mailer, self.now, conf)
        if getattr(_current, "call", None) is not None:
            raise MfaError("misconfigured", "an export call ran inside another export call on the same thread")
        _current.call = call
        started = time.perf_counter()
        instantiated = started
        outcome = "failure"
        try:
            store = wasmtime.Store(self._wt_engine)
            instance = self._linker.instantiate(store, self._component)
            func = instance.get_func(store, self._funcs[key])
            instantiated = time.perf_counter()
            if func is None:
                raise MfaUnavailable(f"the component exports no function {iface}.{fname}")
            raw = call_func(func, store, [t for _, t in params], result_ty, lowered)
            outcome = "returned"
        except MfaError:
            raise
        except Exception as e:  # noqa: BLE001 - a trap or a host failure: fail closed
            culprit = call.trapped_import or "the component"
            cause = type(call.failure).__name__ if call.failure is not None else type(e).__name__
            log.error("mfa-step: %s.%s failed (%s in %s); nothing was granted", iface, fname, cause, culprit)
            raise MfaUnavailable(
                f"{fname} could not complete ({culprit} failed); nothing was granted and nothing uncommitted was kept"
            ) from None
        finally:
            _current.call = None
            # Whatever the unit still holds was never committed: it is dropped here with the
            # instance (the store goes out of scope), never written.
            call.unit.take()
            if self.on_call is not None:
                done = time.perf_counter()
                try:
                    self.on_call(iface, fname, (instantiated - started) * 1000, (done - started) * 1000, outcome)
                except Exception:  # noqa: BLE001, S110
                    pass
        if result_ty is None:
            return None
        try:
            value = from_wasm(result_ty, raw)
        except Exception:  # noqa: BLE001 - an answer this host cannot read grants nothing
            raise MfaUnavailable(f"{fname} answered a value of an unexpected shape; nothing was granted") from None
        if result_ty.kind == "result":
            if value["tag"] == "ok":
                return value["value"]
            err = value["value"] or {}
            if isinstance(err, dict) and "kind" in err:
                if err["kind"] == "unavailable":
                    raise MfaUnavailable(err.get("message") or "the store, mailer or audit sink failed; nothing took effect")
                raise MfaError(err["kind"], err.get("message") or "", err.get("field"), err.get("retry_after_seconds"))
            raise MfaError("unavailable", "the component answered an error of an unknown shape")
        return value

    # -- login-step --
    def begin(self, context: dict) -> dict:
        return self.call("login-step", "begin", context)

    def send_code(self, context: dict, challenge_id: str) -> dict:
        return self.call("login-step", "send-code", context, challenge_id)

    def verify(self, context: dict, challenge_id: str, code: str, remember_device: bool) -> dict:
        return self.call("login-step", "verify", context, challenge_id, code, remember_device)

    def enroll(self, context: dict) -> dict:
        return self.call("login-step", "enroll", context)

    def change_email(self, context: dict, step_up: str) -> dict:
        return self.call("login-step", "change-email", context, step_up)

    def status(self, context: dict) -> dict:
        return self.call("login-step", "status", context)

    # -- devices --
    def list_devices(self, actor: dict) -> list:
        return self.call("devices", "list-devices", actor)

    def revoke(self, actor: dict, device_id: str) -> None:
        return self.call("devices", "revoke", actor, device_id)

    def revoke_all(self, actor: dict) -> int:
        return self.call("devices", "revoke-all", actor)

    # -- admin --
    def get_policy(self, actor: dict, org_id: str) -> dict:
        return self.call("admin", "get-policy", actor, org_id)

    def set_policy(self, actor: dict, org_id: str, policy: dict) -> None:
        return self.call("admin", "set-policy", actor, org_id, policy)

    def reset_user(self, actor: dict, org_id: str, user_id: str) -> None:
        return self.call("admin", "reset-user", actor, org_id, user_id)

    def get_user_status(self, actor: dict, org_id: str, user_id: str) -> dict:
        return self.call("admin", "get-user-status", actor, org_id, user_id)

    def credential_changed(self, actor: dict, org_id: str, user_id: str, change: str) -> int:
        return self.call("admin", "credential-changed", actor, org_id, user_id, change)

    def get_platform_roles(self, actor: dict) -> list:
        return self.call("admin", "get-platform-roles", actor)

    def set_platform_roles(self, actor: dict, roles: list) -> None:
        return self.call("admin", "set-platform-roles", actor, roles)

    def get_branding(self, actor: dict, org_id: str) -> dict:
        return self.call("admin", "get-branding", actor, org_id)

    def set_branding(self, actor: dict, org_id: str, branding: dict) -> None:
        return self.call("admin", "set-branding", actor, org_id, branding)

    def preview_email(self, actor: dict, org_id: str, language: str | None = None, time_zone: str | None = None) -> dict:
        return self.call("admin", "preview-email", actor, org_id, language, time_zone)


_engine: Engine | None = None
_engine_lock = threading.Lock()


def get_engine() -> Engine:
    """The process-wide engine, built on first use (thread-safe)."""
    global _engine
    engine = _engine
    if engine is not None:
        return engine
    with _engine_lock:
        if _engine is None:
            _engine = Engine()
        return _engine


def reset_engine() -> None:
    """Forgets the process-wide engine (tests; after changing ``MFA_STEP['WASM']``)."""
    global _engine
    with _engine_lock:
        _engine = None
