"""The engine end to end through the real component on the real database: the login flow, the
answers that must look alike, the Python API's shapes, its refusals, and its load path."""

from __future__ import annotations

import hashlib
import os
import time

import pytest
from django.conf import settings
from django.core import mail
from django.db import transaction

from mfa_step_django.engine import Engine, MfaError, MfaUnavailable
from mfa_step_django.models import StoreCounter

from conftest import PLUGIN_WASM, code_in

pytestmark = pytest.mark.django_db(transaction=True)


def _challenge(engine, context):
    d = engine.begin(context)
    assert d["tag"] == "challenge", d
    return d["value"]["challenge_id"]


def _enrolled(engine, context):
    """Enrolls the user (first login's code to their address), as the component requires first."""
    cid = _challenge(engine, context)
    engine.send_code(context, cid)
    engine.verify(context, cid, code_in(mail.outbox[-1]), False)


def test_full_login_remembered_browser_is_trusted_on_a_fresh_instance(engine, ctx):
    timings = {}
    c = ctx("ana")
    _enrolled(engine, c)
    t = time.perf_counter()
    d = engine.begin(c)
    timings["begin"] = time.perf_counter() - t
    assert d["tag"] == "challenge" and d["value"]["purpose"] == "login"
    cid = d["value"]["challenge_id"]
    t = time.perf_counter()
    sent = engine.send_code(c, cid)
    timings["send_code"] = time.perf_counter() - t
    assert sent["resent"] is False and sent["sends_left"] == 1
    code = code_in(mail.outbox[-1])
    assert mail.outbox[-1].to == ["ana@clinic.example"]
    t = time.perf_counter()
    v = engine.verify(c, cid, code, True)
    timings["verify"] = time.perf_counter() - t
    assert v["amr"] == ["otp", "mfa"]
    assert v["set_cookie"] and v["device_id"]
    # No secret in the result's repr (the cookie carries the device token; step-up is a token).
    assert v["set_cookie"] not in repr(v) and (v["step_up"] is None or v["step_up"] not in repr(v))
    assert code not in repr(v)
    cookie = v["set_cookie"].split(";", 1)[0].split("=", 1)[1]
    again = engine.begin(ctx("ana", cookie=cookie))
    assert again["tag"] == "allow", again
    assert again["value"]["amr"] == ["mfa"] and again["value"]["device_id"] == v["device_id"]
    # The context's repr hides the cookie as well.
    assert cookie not in repr(ctx("ana", cookie=cookie))
    print("in-process ms:", {k: round(s * 1000, 2) for k, s in timings.items()})


def test_a_code_works_once(engine, ctx):
    c = ctx("ben")
    cid = _challenge(engine, c)
    engine.send_code(c, cid)
    code = code_in(mail.outbox[-1])
    engine.verify(c, cid, code, False)
    with pytest.raises(MfaError) as again:
        engine.verify(c, cid, code, False)
    assert again.value.kind == "rejected"


def test_unknown_user_wrong_code_expired_code_look_alike(engine, ctx, clock):
    answers = []
    # Unknown user and challenge.
    with pytest.raises(MfaError) as e:
        engine.verify(ctx("nobody"), "0" * 32, "123456", False)
    answers.append(e.value)
    # Wrong code.
    c = ctx("cy")
    cid = _challenge(engine, c)
    engine.send_code(c, cid)
    code = code_in(mail.outbox[-1])
    wrong = "000000" if code != "000000" else "111111"
    with pytest.raises(MfaError) as e:
        engine.verify(c, cid, wrong, False)
    answers.append(e.value)
    # Expired code: the right one, after its 10 minutes.
    clock.advance(601)
    with pytest.raises(MfaError) as e:
        engine.verify(c, cid, code, False)
    answers.append(e.value)
    assert {(a.kind, a.message, a.field) for a in answers} == {("rejected", answers[0].message, None)}, answers
    assert all(type(a) is MfaError for a in answers)


def test_a_wrong_shape_is_invalid_input_never_a_crash(engine, ctx):
    c = ctx("dee")
    del c["email"]
    with pytest.raises(MfaError) as e:
        engine.begin(c)
    assert e.value.kind == "invalid-input" and e.value.field == "context.email"
    c = ctx("dee")
    c["device"]["traits"]["browser_major"] = "131"
    with pytest.raises(MfaError) as e:
        engine.begin(c)
    assert e.value.kind == "invalid-input" and e.value.field == "context.device.traits.browser_major"
    with pytest.raises(MfaError) as e:
        engine.verify(ctx("dee"), "x", "123456", "yes")
    assert e.value.kind == "invalid-input" and e.value.field == "remember_device"
    with pytest.raises(MfaError) as e:
        engine.set_policy({"user_id": "a", "org_id": "acme", "roles": [], "ip": "1.2.3.4", "user_agent": ""}, "acme",
                          {"mandate": "sometimes"})
    assert e.value.kind == "invalid-input"
    # The component's own validation still answers (a well-shaped but bad id).
    with pytest.raises(MfaError) as e:
        engine.begin(ctx("bad id with spaces"))
    assert e.value.kind == "invalid-input" and e.value.field


def test_devices_and_admin_round_trip(engine, ctx):
    c = ctx("eve")
    _enrolled(engine, c)
    cid = _challenge(engine, c)
    engine.send_code(c, cid)
    engine.verify(c, cid, code_in(mail.outbox[-1]), True)
    me = {"user_id": "eve", "org_id": "acme", "roles": ["clinician"], "ip": "203.0.113.5", "user_agent": "UA"}
    devices = engine.list_devices(me)
    assert len(devices) == 1 and devices[0]["device_id"]
    assert engine.revoke_all(me) == 1
    assert engine.list_devices(me) == []
    admin = {"user_id": "root", "org_id": "acme", "roles": ["org-admin"], "ip": "203.0.113.9", "user_agent": "UA"}
    policy = engine.get_policy(admin, "acme")
    assert policy["mandate"] in ("inherit", "everyone", "by-role")
    policy = dict(policy, mandate="everyone", trust_days=7)
    assert engine.set_policy(admin, "acme", policy) is None
    assert engine.get_policy(admin, "acme")["trust_days"] == 7
    status = engine.get_user_status(admin, "acme", "eve")
    assert status["enrolled"] is True and status["locked"] is False
    with pytest.raises(MfaError) as e:
        engine.get_policy(me, "acme")
    assert e.value.kind == "forbidden"
    preview = engine.preview_email(admin, "acme", None, "America/Chicago")
    assert "123456" in preview["text"]


def test_refuses_to_run_inside_a_callers_transaction(engine, ctx):
    with transaction.atomic():
        with pytest.raises(MfaError) as e:
            engine.begin(ctx("fay"))
    assert e.value.kind == "misconfigured" and "transaction" in e.value.message
    assert not StoreCounter.objects.exists()  # nothing counted inside the caller's transaction


def test_err_from_store_get_is_answered_not_trapped(engine, ctx):
    """wasmtime-py cannot lower err for result<option<list<u8>>, _> by itself; linking.py can."""
    from mfa_step_django.backends.faults import Breakable

    broken = Breakable(engine.database)
    broken.broken.add("get")
    with engine.backends(database=broken):
        with pytest.raises(MfaUnavailable) as e:
            engine.begin(ctx("gil"))
    # The component's own answer (its message), not a trap of the call.
    assert "could not complete" not in e.value.message


def test_a_trap_fails_closed_and_keeps_nothing(engine, ctx):
    """A backend answering a value of the wrong type makes the import trap: unavailable, and the
    unit of work of that call is never committed."""

    class WrongType:
        def __init__(self, inner):
            self.inner = inner
            self.alias = inner.alias

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def get(self, key, now):
            return "not bytes"  # the import's value cannot be lowered: a trap

    c = ctx("hal")
    with engine.backends(database=WrongType(engine.database)):
        with pytest.raises(MfaUnavailable) as e:
            engine.begin(c)
    assert "could not complete" in e.value.message
    status = engine.status(c)
    assert status["active_challenge"] is None


def test_precompiled_component_is_cached_on_disk(tmp_path):
    wasm = PLUGIN_WASM.read_bytes()
    first = Engine(wasm, cache_dir=tmp_path)
    second = Engine(wasm, cache_dir=tmp_path)
    assert first.loaded_from == "compiled" and second.loaded_from == "cache"
    cached = list(tmp_path.glob("*.cwasm"))
    assert len(cached) == 1 and cached[0].name.startswith(hashlib.sha256(wasm).hexdigest())
    # A bad cache entry is compiled again, never trusted. (Replaced by a rename, as the engine
    # writes it: truncating a file another engine has mapped would crash that process.)
    bad = tmp_path / "bad"
    bad.write_bytes(b"garbage")
    os.replace(bad, cached[0])
    third = Engine(wasm, cache_dir=tmp_path)
    assert third.loaded_from == "compiled"
    # An entry others could have written is native code nobody vouches for: never loaded.
    os.chmod(cached[0], 0o666)
    assert Engine(wasm, cache_dir=tmp_path).loaded_from == "compiled"
    print(f"load ms: compiled {first.load_ms:.1f}, from cache {second.load_ms:.1f}")


@pytest.mark.parametrize(
    "conf,error",
    [({}, "mfa_step.E002"), ({"HMAC_KEY": "zz"}, "mfa_step.E003"), ({"HMAC_KEY": "ab" * 16}, "mfa_step.E004"), ({"HMAC_KEY": "ab" * 32}, None)],
)
def test_system_check_requires_a_usable_hmac_key(settings, conf, error):
    from mfa_step_django.checks import check_hmac_key

    settings.MFA_STEP = conf
    ids = [e.id for e in check_hmac_key()]
    assert ids == ([error] if error else [])


def test_without_a_key_the_component_is_misconfigured_not_open(engine, ctx, settings):
    settings.MFA_STEP = {k: v for k, v in settings.MFA_STEP.items() if k != "HMAC_KEY"}
    with pytest.raises(MfaError) as e:
        engine.begin(ctx("nokey"))
    assert e.value.kind == "misconfigured"


def test_component_settings_reach_the_component(engine, ctx, settings):
    settings.MFA_STEP = {**settings.MFA_STEP, "CODE_TTL_SECONDS": 120}
    c = ctx("ttl")
    cid = _challenge(engine, c)
    sent = engine.send_code(c, cid)
    assert sent["code_expires_at"] == int(engine.now()) + 120


# The second alias exists on Postgres only (tests/settings.py).
_ALIASES = ["default", "mfa_step"] if "mfa_step" in settings.DATABASES else ["default"]


@pytest.mark.django_db(transaction=True, databases=_ALIASES)
def test_a_dedicated_alias_keeps_counters_out_of_the_callers_transaction(ctx, clock):
    """The documented alternative to refusing: MFA_STEP["DATABASE"] names its own alias (its own
    connection, autocommit). A caller's transaction on "default" then neither hides the engine's
    counters from others nor rolls them back."""
    from django.db import connection, connections

    if connection.vendor != "postgresql":
        pytest.skip("a second connection to SQLite would wait for the caller's write lock")
    from mfa_step_django.backends.database import DjangoDatabase

    eng = Engine(PLUGIN_WASM.read_bytes(), database=DjangoDatabase("mfa_step"))
    eng.set_clock(clock)
    c = ctx("alias")

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback):
        with transaction.atomic(using="default"):
            cid = eng.begin(c)["value"]["challenge_id"]
            eng.send_code(c, cid)
            # Seen at once by another connection, while the caller's transaction is still open.
            other = connections.create_connection("default")
            try:
                with other.cursor() as cur:
                    cur.execute("SELECT count(*) FROM mfa_step_counter")
                    assert cur.fetchone()[0] > 0
            finally:
                other.close()
            raise Rollback
    # The caller rolled back; the engine's writes (its own commits, its counters) stand.
    assert StoreCounter.objects.using("default").exists()
    assert eng.status(c)["active_challenge"] == cid


# -- host calls with types read once (engine/linking.py, engine/lowering.py) ---------------------


def _import_types(engine, ctx, name):
    """The signature the import ``name`` (e.g. ``store.get``) read from the component."""
    from wasmtime.component._linker import FUNCTIONS

    from mfa_step_django.engine.linking import _Binding

    engine.begin(ctx("sig-reader"))  # every import the login's first step uses has been called
    for binding in list(FUNCTIONS.handles.values()):
        if isinstance(binding, _Binding) and binding.name == name and binding.sig is not None:
            return binding.sig
    raise AssertionError(f"no binding of {name} has read its signature")


def test_a_login_reads_no_type_from_wasmtime_after_the_first_call(engine, ctx, monkeypatch):
    from wasmtime.component import Func

    from mfa_step_django.engine import linking

    def login(user):
        c = ctx(user)
        cid = _challenge(engine, c)
        engine.send_code(c, cid)
        assert engine.verify(c, cid, code_in(mail.outbox[-1]), False)["amr"] == ["otp", "mfa"]

    login("types-first")  # every import a login uses reads its signature here, once
    reads = []
    real = linking.FuncType

    class Counting:
        @staticmethod
        def _from_ptr(*args, **kwargs):
            reads.append(args)
            return real._from_ptr(*args, **kwargs)

    monkeypatch.setattr(linking, "FuncType", Counting)
    monkeypatch.setattr(Func, "type", lambda self, store: pytest.fail("an export call asked wasmtime for its type"))
    login("types-again")
    assert reads == []


def _roundtrips(t, values):
    """Each value lowered by lowering.py and lifted by wasmtime-py, and the other way round."""
    import ctypes

    from wasmtime import Store
    from wasmtime import _ffi as ffi

    from mfa_step_django.engine.lowering import lift, lower

    store = Store()
    for value in values:
        ours = ffi.wasmtime_component_val_t()
        lower(t, store, value, ctypes.pointer(ours))
        assert t.ty.convert_from_c(ours) == value
        theirs = ffi.wasmtime_component_val_t()
        t.ty.convert_to_c(store, value, ctypes.pointer(theirs))
        assert lift(t, theirs) == value


def test_lowering_gives_exactly_wasmtime_pys_values(engine, ctx):
    from wasmtime.component import Record, Variant

    (key_t,), get_result = _import_types(engine, ctx, "store.get")
    value_t = get_result.case_map["ok"]  # option<list<u8>>
    bytes_t = value_t.case_map["some"]
    assert (key_t.kind, get_result.kind, value_t.kind, bytes_t.kind) == ("string", "result", "option", "bytes")
    _roundtrips(bytes_t, [b"", b"\x00", bytes(range(256)), bytes(range(256)) * 256])
    _roundtrips(value_t, [None, b"", b"\xff\x00"])
    _roundtrips(key_t, ["", "v1:key", "h\u00e9\u4e2d\U0001f600"])
    err_t = get_result.case_map["err"]  # store-error: variant { unavailable(string), invalid(string) }
    assert err_t.kind == "variant" and err_t.tagged
    _roundtrips(err_t, [Variant(case, None if payload_t is None else "why") for case, payload_t in err_t.cases])
    (entry_t,), _ = _import_types(engine, ctx, "audit.append")
    record = Record()
    for name, _key, field_t in entry_t.fields:
        setattr(record, name, {"string": "x\"y", "int": 2**32 + 5}[field_t.kind])
    _roundtrips(entry_t, [record])


def test_a_list_u8_holding_another_kind_is_refused():
    from wasmtime import _ffi as ffi

    from mfa_step_django.engine.lowering import _lift_bytes

    raw = ffi.wasmtime_component_vallist_t()
    ffi.wasmtime_component_vallist_new_uninit(raw, 2)
    raw.data[0].kind = ffi.WASMTIME_COMPONENT_U8
    raw.data[0].of.u8 = 7
    raw.data[1].kind = ffi.WASMTIME_COMPONENT_BOOL
    raw.data[1].of.boolean = True
    c = ffi.wasmtime_component_val_t()
    c.kind = ffi.WASMTIME_COMPONENT_LIST
    c.of.list = raw
    with pytest.raises(TypeError):
        _lift_bytes(c)
