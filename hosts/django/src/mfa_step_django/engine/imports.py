"""The component's imports, bound in Python: ``store``, ``audit``, ``mailer``, ``config``,
``wasi:clocks/wall-clock`` and ``wasi:random/random`` (exactly the ``plugin`` world; the
``conformance`` world has the same minus ``mailer``).

Each export call runs with a :class:`_Call` on its thread (a ``threading.local``): the database
backend and mailer it uses, its unit of work, its clock and settings. An import:

- answers the contract's ``err`` for every backend failure (``store-error``, ``audit-error``,
  ``mail-error``), never "absent" for a read that failed; ``store.get`` too, through
  :mod:`.linking`;
- holds ``set``/``delete``/``audit.append`` in the unit (read-your-writes for ``get``,
  ``list-keys`` and ``head``) until ``commit``, which writes all of it or none; ``increment``
  applies at once;
- traps the call (the engine answers ``MfaUnavailable``) only for a failure of this host itself,
  e.g. a backend answering a value of the wrong type;
- logs a failure by operation and class, never a key's value, a code or a token.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Any, Callable

from wasmtime import component as wc

from ..backends import BackendError
from ..backends.unit import AuditEntry, Put, Unit, check_key, check_value
from .linking import Err, Ok, add_host_func

log = logging.getLogger("mfa_step_django.engine")

#: The WIT package of the component's interfaces (instance names need the version).
PACKAGE = "mfa-step:plugin"
VERSION = "0.2.0"
WASI_VERSION = "0.2.12"

#: The settings the component reads through `config.get` (wit/config.wit).
CONFIG_NAMES = (
    "hmac_key",
    "api_key",
    "code_ttl_seconds",
    "code_digits",
    "sends_per_window",
    "send_window_seconds",
    "challenge_ttl_seconds",
    "trust_days",
    "allow_remember_device",
    "ipv4_change_prefix",
    "ipv6_change_prefix",
    "required_roles",
    "id_case",
    "prompt_key",
    "prompt_client_id",
    "prompt_return_urls",
    "client_ip_header",
)


# ---------------------------------------------------------------------------------------------
# settings


def _settings() -> dict:
    from django.conf import settings

    return dict(getattr(settings, "MFA_STEP", None) or {})


def config_value(conf: dict, name: str) -> str | None:
    """The value of component setting ``name`` from ``MFA_STEP`` (upper-case key first, then
    ``CONFIG``), as the string the component reads, or ``None``. Only the names of
    :data:`CONFIG_NAMES`: the package's own settings (``DATABASE``, ``CACHE_DIR``…) are never
    handed to the component."""
    if name not in CONFIG_NAMES:
        return None
    value = conf.get(name.upper())
    if value is None:
        value = (conf.get("CONFIG") or {}).get(name)
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


# ---------------------------------------------------------------------------------------------
# one call


class _Call:
    """The state of one export call, on the thread running it."""

    __slots__ = ("database", "mailer", "unit", "now", "conf", "failure", "trapped_import")

    def __init__(self, database: Any, mailer: Any, now: Callable[[], float], conf: dict) -> None:
        self.database = database
        self.mailer = mailer
        self.unit = Unit()
        self.now = now
        self.conf = conf
        self.failure: BaseException | None = None
        self.trapped_import: str | None = None


_current = threading.local()


def _call() -> _Call:
    call = getattr(_current, "call", None)
    if call is None:
        # An import outside an export call: a bug of this module, never a plausible answer.
        raise RuntimeError("an import ran outside an export call")
    return call


def _store_error(e: BaseException) -> dict:
    if isinstance(e, BackendError) and e.kind == "invalid":
        return {"tag": "invalid", "value": e.message}
    if isinstance(e, BackendError):
        return {"tag": "unavailable", "value": e.message}
    return {"tag": "unavailable", "value": f"the store failed ({type(e).__name__})"}


def _note_failure(call: _Call, op: str, e: BaseException) -> None:
    """Logs a backend failure by operation and class (never its message: it may quote a key)."""
    if isinstance(e, BackendError) and e.kind == "invalid":
        return  # the component's own input; it decides what to do
    log.warning("mfa-step: %s failed: %s", op, type(e).__name__ if not isinstance(e, BackendError) else e.message)
    try:
        after = getattr(call.database, "after_failure", None)
        if after is not None:
            after()
    except Exception:  # noqa: BLE001, S110
        pass


class _RefusalLog:
    """``audit.note-refusal`` -> Python logging, at most ``per_minute`` lines a minute."""

    def __init__(self, per_minute: int = 60) -> None:
        self.per_minute = per_minute
        self.window = 0
        self.count = 0
        self.lock = threading.Lock()

    def note(self, note: dict) -> None:
        minute = int(time.monotonic() // 60)
        with self.lock:
            if minute != self.window:
                self.window, self.count = minute, 0
            self.count += 1
            if self.count > self.per_minute:
                return
        if str(note.get("rule") or "").startswith("stats:"):
            # Not a refusal: a day count the admin console reads could not be written (the
            # component's only route to this log); the call's answer did not change.
            log.warning(
                "mfa-step: a day count was not written, the admin console's figures may be short: rule=%s org=%s",
                note.get("rule"),
                note.get("claimed_org"),
            )
            return
        ua = (note.get("user_agent") or "")[:120]
        log.warning(
            "mfa-step: refused request: rule=%s claimed_org=%s ip=%s user_agent=%r",
            note.get("rule"),
            note.get("claimed_org"),
            note.get("ip"),
            ua,
        )


# ---------------------------------------------------------------------------------------------
# the imports


def _bind_imports(linker: wc.Linker, refusals: _RefusalLog, world: str) -> None:
    def on_error(name: str, e: BaseException) -> None:
        call = getattr(_current, "call", None)
        if call is not None and call.failure is None:
            call.failure, call.trapped_import = e, name
        log.error("mfa-step: the import %s failed and trapped the call (%s)", name, type(e).__name__)

    def now() -> int:
        return int(_call().now())

    # -- store --
    def store_get(key: str) -> Ok | Err:
        call = _call()
        try:
            check_key(key)
            touched, value = call.unit.get(key)
            if touched:
                return Ok(value)
            return Ok(call.database.get(key, now()))
        except Exception as e:  # noqa: BLE001
            _note_failure(call, "store.get", e)
            return Err(_store_error(e))

    def store_set(key: str, value: bytes, expires_at: int | None) -> Ok | Err:
        call = _call()
        try:
            check_key(key)
            check_value(value)
            call.unit.values[key] = Put(bytes(value), expires_at)
            return Ok(None)
        except Exception as e:  # noqa: BLE001
            return Err(_store_error(e))

    def store_delete(key: str) -> Ok | Err:
        call = _call()
        try:
            check_key(key)
            call.unit.values[key] = None
            return Ok(None)
        except Exception as e:  # noqa: BLE001
            return Err(_store_error(e))

    def store_increment(key: str, delta: int, expires_at: int | None) -> Ok | Err:
        call = _call()
        try:
            check_key(key)
            held = call.unit.values
            if key in held and held[key] is None:
                # The call deleted this counter before counting it. Counters apply at once, so
                # the held delete would land after this increment at commit: apply it first, as
                # the call ordered it (a read sees the counter as the delete leaves it and writes
                # nothing). The component's undo of an admin reset relies on this order.
                if delta == 0 and expires_at is None:
                    return Ok(0)
                call.database.commit({key: None}, [], now(), None)
                del held[key]
            return Ok(call.database.increment(key, delta, expires_at, now()))
        except Exception as e:  # noqa: BLE001
            _note_failure(call, "store.increment", e)
            return Err(_store_error(e))

    def store_list_keys(prefix: str) -> Ok | Err:
        call = _call()
        try:
            committed = call.database.list_keys(prefix, now())
            return Ok(call.unit.list(prefix, committed))
        except Exception as e:  # noqa: BLE001
            _note_failure(call, "store.list-keys", e)
            return Err(_store_error(e))

    def store_commit() -> Ok | Err:
        call = _call()
        values, records = call.unit.take()  # kept or not, the unit is over
        try:
            call.database.commit(values, records, now(), config_value(call.conf, "hmac_key"))
            return Ok(None)
        except Exception as e:  # noqa: BLE001
            _note_failure(call, "store.commit", e)
            return Err(_store_error(e))

    # -- audit --
    def audit_head(org_id: str) -> Ok | Err:
        call = _call()
        try:
            head = call.unit.head(org_id)
            if head is None:
                head = call.database.head(org_id)
            return Ok(None if head is None else {"seq": head[0], "hash": head[1]})
        except Exception as e:  # noqa: BLE001
            _note_failure(call, "audit.head", e)
            return Err({"tag": "unavailable", "value": _store_error(e)["value"]})

    def audit_append(entry: Any) -> Ok | Err:
        call = _call()
        record = AuditEntry(
            org_id=getattr(entry, "org-id"),
            seq=entry.seq,
            at=entry.at,
            action=entry.action,
            prev=entry.prev,
            hash=entry.hash,
            line=entry.line,
        )
        if not record.line or "\r" in record.line or "\n" in record.line:
            return Err({"tag": "unavailable", "value": "refused audit record: its line must be one line"})
        # Accepted into the unit; placed (relinked under the stream's own order) at commit.
        call.unit.records.append(record)
        return Ok(None)

    def audit_note_refusal(note: Any) -> None:
        try:
            refusals.note(
                {
                    "rule": note.rule,
                    "claimed_org": getattr(note, "claimed-org"),
                    "ip": note.ip,
                    "user_agent": getattr(note, "user-agent"),
                }
            )
        except Exception:  # noqa: BLE001, S110 - the call cannot fail; a note may be dropped
            pass

    # -- mailer --
    def mailer_send(message: Any) -> Ok | Err:
        call = _call()
        msg = {
            "to": message.to,
            "sender_name": getattr(message, "sender-name"),
            "subject": message.subject,
            "html": message.html,
            "text": message.text,
        }
        try:
            call.mailer.send(msg)
            return Ok(None)
        except Exception as e:  # noqa: BLE001
            if isinstance(e, BackendError) and e.kind == "rejected-recipient":
                return Err({"tag": "rejected-recipient", "value": e.message})
            log.warning("mfa-step: mailer.send failed: %s", e.message if isinstance(e, BackendError) else type(e).__name__)
            return Err({"tag": "unavailable", "value": "the mail service failed"})

    # -- config, clock, random --
    def config_get(name: str) -> str | None:
        return config_value(_call().conf, name)

    def clock_now() -> dict:
        t = _call().now()
        seconds = int(t // 1)
        nanos = int(round((t - seconds) * 1e9))
        if nanos >= 1_000_000_000:
            seconds, nanos = seconds + 1, 0
        return {"seconds": seconds, "nanoseconds": nanos}

    def clock_resolution() -> dict:
        return {"seconds": 0, "nanoseconds": 1000}

    def random_bytes(n: int) -> bytes:
        if n > 1 << 20:
            raise ValueError("get-random-bytes: more than 1 MiB asked")
        return secrets.token_bytes(n)

    def random_u64() -> int:
        return secrets.randbits(64)

    def bind(instance: Any, iface: str, funcs: dict[str, Callable[..., Any]]) -> None:
        for fname, func in funcs.items():
            add_host_func(instance, fname, func, on_error, qualified=f"{iface}.{fname}")

    with linker.root() as root:
        with root.add_instance(f"{PACKAGE}/types@{VERSION}"):
            pass
        with root.add_instance(f"{PACKAGE}/store@{VERSION}") as inst:
            bind(
                inst,
                "store",
                {
                    "get": store_get,
                    "set": store_set,
                    "delete": store_delete,
                    "increment": store_increment,
                    "list-keys": store_list_keys,
                    "commit": store_commit,
                },
            )
        with root.add_instance(f"{PACKAGE}/audit@{VERSION}") as inst:
            bind(inst, "audit", {"head": audit_head, "append": audit_append, "note-refusal": audit_note_refusal})
        if world == "plugin":
            with root.add_instance(f"{PACKAGE}/mailer@{VERSION}") as inst:
                bind(inst, "mailer", {"send": mailer_send})
        with root.add_instance(f"{PACKAGE}/config@{VERSION}") as inst:
            bind(inst, "config", {"get": config_get})
        with root.add_instance(f"wasi:clocks/wall-clock@{WASI_VERSION}") as inst:
            bind(inst, "wall-clock", {"now": clock_now, "resolution": clock_resolution})
        with root.add_instance(f"wasi:random/random@{WASI_VERSION}") as inst:
            bind(inst, "random", {"get-random-bytes": random_bytes, "get-random-u64": random_u64})
