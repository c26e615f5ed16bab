"""The django-otp face: ``MfaStepEmailDevice`` through django-otp's own API."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.core import mail

from mfa_step_django.otp.context import NoRequest
from mfa_step_django.otp.models import MfaStepEmailDevice
from tests.support_otp import client, last_code, make_user, password_login, wrong

pytestmark = pytest.mark.django_db(transaction=True)


def op(c, name, **data):
    r = c.post(f"/device/{name}", data) if data or name.startswith("verify_token") else c.post(f"/device/{name}")
    assert r.status_code == 200, (name, r.status_code, r.content[:300])
    return r.json()


def test_generate_challenge_and_verify_token_log_the_session_in_the_django_otp_way(engine):
    make_user("ana")
    c = client()
    password_login(c)
    assert op(c, "generate_is_allowed")["ok"] is True
    msg = op(c, "generate_challenge")["message"]
    assert "@clinic.example" in msg and len(mail.outbox) == 1
    code = last_code("ana@clinic.example")
    assert code not in msg
    out = op(c, "verify_token", token=wrong(code))
    assert out == {"ok": False, "last_error": "rejected", "is_verified": False}
    out = op(c, "verify_token", token=code)
    assert out["ok"] is True and out["is_verified"] is True
    # OTPMiddleware, on the next request: user.is_verified() from the session's device id.
    r = c.get("/protected/")
    assert r.status_code == 200 and r.content == b"protected page amr=otp,mfa"
    assert c.session["otp_device_id"] == MfaStepEmailDevice.objects.get().persistent_id
    # The code works once.
    assert op(c, "verify_token", token=code)["ok"] is False


def test_generate_is_allowed_reflects_the_send_window(engine):
    make_user("ben")
    c = client()
    password_login(c, "ben")
    for _ in range(3):
        op(c, "generate_challenge")
    assert len(mail.outbox) == 3
    out = op(c, "generate_is_allowed")
    assert out["ok"] is False and out["reason"] == "COOLDOWN_DURATION_PENDING" and out["next_generation_at"]


def test_verify_is_allowed_reflects_delays_and_the_lock(engine, clock):
    make_user("cy")
    c = client()
    password_login(c, "cy")
    op(c, "generate_challenge")
    code = last_code("cy@clinic.example")
    assert op(c, "verify_is_allowed")["ok"] is True
    for _ in range(5):
        assert op(c, "verify_token", token=wrong(code))["ok"] is False
    out = op(c, "verify_is_allowed")
    assert out["ok"] is False and out["reason"] == "N_FAILED_ATTEMPTS" and out["failure_count"] == 5
    out = op(c, "verify_token", token=code)
    assert out["ok"] is False and out["last_error"] == "throttled"
    # Wait out every delay until the lock.
    for _ in range(100):
        allowed = op(c, "verify_is_allowed")
        if allowed["ok"] is False and allowed["reason"] is None:
            break
        clock.advance(3600)
        op(c, "verify_token", token=wrong(code))
    out = op(c, "verify_is_allowed")
    assert out["ok"] is False and out["error_message"]
    assert op(c, "verify_token", token=code)["last_error"] == "locked"


def test_django_otp_verify_token_in_its_transaction(engine):
    """``django_otp.verify_token`` runs the device inside ``transaction.atomic()`` on the default
    alias. When the engine's store lives on that alias, the engine refuses the caller's transaction
    (its counters must never roll back): a typed failure (503), never a pass. With a dedicated
    alias on Postgres (its own connection) django-otp's helper works; on SQLite the outer
    transaction holds the one write lock, so the engine cannot write and fails closed too."""
    from django.conf import settings
    from django.db import connections

    make_user("dee")
    c = client()
    password_login(c, "dee")
    op(c, "generate_challenge")
    code = last_code("dee@clinic.example")
    r = c.post("/device/django_otp_verify_token", {"token": code})
    alias = settings.MFA_STEP.get("DATABASE", "default")
    if alias != "default" and connections[alias].vendor == "postgresql":
        assert r.status_code == 200 and r.json() == {"ok": True}
        assert c.get("/protected/").status_code == 200
    else:
        assert r.status_code == 503
        assert c.get("/protected/").status_code == 302


def test_another_users_device_is_refused(engine):
    make_user("fin")
    make_user("gia")
    c = client()
    password_login(c, "fin")
    for name in ("generate_challenge", "verify_token", "verify_is_allowed"):
        r = c.post(f"/device/{name}?of=gia", {"token": "123456"})
        assert r.status_code == 403 and r.json() == {"error": "forbidden"}, (name, r.status_code)
    assert len(mail.outbox) == 0


def test_a_device_outside_a_request_refuses(engine):
    user = make_user("eve")
    device = MfaStepEmailDevice.for_user(user)
    with pytest.raises(NoRequest):
        device.verify_token("123456")
    with pytest.raises(NoRequest):
        device.generate_challenge()


def test_the_device_is_in_the_admin_and_holds_no_secret():
    assert MfaStepEmailDevice in admin.site._registry
    fields = {f.name for f in MfaStepEmailDevice._meta.get_fields()}
    assert fields == {"id", "user", "name", "confirmed", "created_at"}
