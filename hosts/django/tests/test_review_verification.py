"""A verified session keeps its verification only while what it was granted for holds
(review findings 2 and 7): the context callable's org and roles, and no revocation through this
package of the user's devices or of the device that verified it. Through the test client, the real
component, a real database."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.core import mail
from django.test import override_settings

from mfa_step_django.otp import conf
from tests.support_otp import client, device_cookie, last_code, make_user, password_login, verified_login

pytestmark = pytest.mark.django_db(transaction=True)

POLICY = "/mfa/api/admin/orgs/default/policy"


def _json_error(r):
    return r.json().get("error") if r["Content-Type"].startswith("application/json") else None


# --- finding 2: the context changed ---------------------------------------------------------------


def test_a_session_let_in_without_a_second_factor_is_asked_for_a_code_once_it_becomes_an_admin(engine):
    make_user("rex", roles=())  # no rule requires MFA: verified with amr []
    c = client()
    password_login(c, "rex")
    r = c.get("/protected/")
    assert r.status_code == 200 and r.content == b"protected page amr="
    r = c.get(POLICY)
    assert r.status_code == 403 and _json_error(r) == "forbidden"  # verified, but not an admin yet
    assert len(mail.outbox) == 0

    User.objects.filter(username="rex").update(is_staff=True)  # -> org-admin, which requires MFA

    # The next request asks the component again: org-admin needs a code; the session is no longer
    # verified, so the admin endpoints say "unverified" (not the component's answer for a verified
    # org admin), and otp_required pages send to the code page.
    r = c.get(POLICY)
    assert r.status_code == 403 and _json_error(r) == "unverified", r.content
    r = c.post(POLICY, {"mandate": "inherit"}, content_type="application/json")
    assert r.status_code == 403 and _json_error(r) == "unverified", r.content
    r = c.get("/protected/")
    assert r.status_code == 302 and r["Location"].startswith("/mfa/")
    status = c.get("/mfa/api/status").json()
    assert status["verified"] is False and status["amr"] == []

    # With the code, the org admin gets in, now with a second factor.
    assert c.get("/mfa/?next=/protected/").status_code == 200
    r = c.post("/mfa/verify", {"code": last_code("rex@clinic.example"), "next": "/protected/"})
    assert r.status_code == 302 and r["Location"] == "/protected/"
    assert c.get("/protected/").content == b"protected page amr=otp,mfa"
    assert c.get(POLICY).status_code == 200


def test_a_role_change_that_needs_no_code_is_decided_again_and_still_passes(engine):
    user = make_user("una", roles=())
    c = client()
    password_login(c, "una")
    assert c.get("/protected/").content == b"protected page amr="
    basis = c.session["mfa_step_basis"]
    user.groups.add(Group.objects.create(name="reader"))  # a role no rule requires MFA for
    r = c.get("/protected/")
    assert r.status_code == 200 and r.content == b"protected page amr="
    assert c.session["mfa_step_basis"] != basis  # asked again, and the new answer recorded
    assert len(mail.outbox) == 0


def test_a_move_to_another_org_asks_again_even_after_a_code(engine, settings):
    make_user("ole")
    c = client()
    verified_login(c, "ole")
    assert c.get("/protected/").status_code == 200
    with override_settings(MFA_STEP={**settings.MFA_STEP, "ORG_ID": "other-org"}):
        r = c.get("/protected/")
        assert r.status_code == 302 and r["Location"].startswith("/mfa/")
    # Back in the org it was verified for, the session is still unverified (dropped for good).
    assert c.get("/protected/").status_code == 302


def failing_context(request):
    raise RuntimeError("the directory is down")


def test_a_context_callable_failing_on_a_verified_session_fails_closed(engine, settings):
    make_user("fio")
    c = client()
    verified_login(c, "fio")
    with override_settings(MFA_STEP={**settings.MFA_STEP, "CONTEXT": "tests.test_review_verification.failing_context"}):
        for _ in range(2):  # every request while it fails, never a pass
            r = c.get("/protected/")
            assert r.status_code == 503 and r["Retry-After"]
            assert b"protected page" not in r.content
        r = c.get("/mfa/api/devices")
        assert r.status_code == 503 and r.json()["error"] == "unavailable"
    # Django does not save a session on a 5xx: once the callable answers again, the check runs
    # again on the same basis, and it holds.
    assert c.get("/protected/").status_code == 200


def test_a_session_verified_before_the_basis_was_recorded_is_asked_again(engine):
    make_user("old")
    c = client()
    verified_login(c, "old")
    s = c.session
    del s["mfa_step_basis"]
    s.save()
    assert c.get("/protected/").status_code == 302


# --- finding 7: revocations end the sessions they concern ---------------------------------------


def test_revoke_all_ends_the_sessions_verified_by_a_stolen_browser_and_keeps_the_owners(engine):
    make_user("vic")
    owner = client()
    verified_login(owner, "vic", remember=True)
    thief = client(cookie=device_cookie(owner))  # same /16, password phished, device cookie stolen
    password_login(thief, "vic")
    assert thief.get("/protected/").content == b"protected page amr=mfa"
    r = owner.post("/mfa/api/devices/revoke-all")
    assert r.status_code == 200 and r.json() == {"revoked": 1}
    r = thief.get("/protected/")
    assert r.status_code == 302 and r["Location"].startswith("/mfa/")
    assert thief.get("/mfa/api/devices").status_code == 403
    # The owner, who did it from a verified session, stays verified.
    assert owner.get("/protected/").status_code == 200
    assert owner.get("/mfa/api/devices").status_code == 200


def test_revoking_one_device_ends_only_the_sessions_it_verified(engine):
    make_user("wes")
    first = client()
    verified_login(first, "wes", remember=True)  # remembers browser A
    borrowed = client(cookie=device_cookie(first))
    password_login(borrowed, "wes")
    assert borrowed.get("/protected/").content == b"protected page amr=mfa"  # verified by A
    other = client(ip="203.0.113.80")
    verified_login(other, "wes")  # a code, no device
    devices = other.get("/mfa/api/devices").json()["devices"]
    assert len(devices) == 1
    r = other.post(f"/mfa/api/devices/{devices[0]['device_id']}/revoke")
    assert r.status_code == 200, r.content
    # The sessions A verified (or that remembered A) are asked again; the one verified by a code
    # without A is not.
    assert borrowed.get("/protected/").status_code == 302
    assert first.get("/protected/").status_code == 302
    assert other.get("/protected/").status_code == 200


def test_an_admin_reset_ends_the_users_verified_sessions(engine):
    make_user("gus")
    make_user("olga", roles=(), staff=True)
    g = client()
    verified_login(g, "gus", remember=True)
    assert g.get("/protected/").status_code == 200
    a = client(ip="192.0.2.10")
    verified_login(a, "olga")
    gus_id = str(User.objects.get(username="gus").pk)
    r = a.post(f"/mfa/api/admin/orgs/default/users/{gus_id}/reset")
    assert r.status_code == 200, r.content
    assert g.get("/protected/").status_code == 302
    assert a.get("/protected/").status_code == 200  # the admin's own session is not the target


def test_a_stamp_taken_before_a_revocation_does_not_hold(engine):
    """The counts are read before the component is asked: a revocation that lands between the
    read and the stamp still ends the session (the ordering the middleware relies on)."""
    from django.contrib.sessions.backends.db import SessionStore

    from mfa_step_django.otp import verification

    ident = {"user_id": "7", "org_id": "default", "roles": ["provider"]}
    session = SessionStore()
    before = verification.snapshot(ident)
    verification.bump("default", "7", "dev-1")
    verification.stamp(session, ident, before, "dev-1")
    assert verification.holds(session, ident) is False
    verification.stamp(session, ident, verification.snapshot(ident), "dev-1")
    assert verification.holds(session, ident) is True
    verification.bump("default", "7", "dev-2")  # another device: not this session's
    assert verification.holds(session, ident) is True
    verification.bump("default", "7")  # all of them
    assert verification.holds(session, ident) is False


def test_epochs_follow_the_components_id_case(engine, settings):
    from mfa_step_django.otp import verification

    ident = {"user_id": "Ann", "org_id": "Acme", "roles": []}
    with override_settings(MFA_STEP={**settings.MFA_STEP, "ID_CASE": "fold"}):
        before = verification.snapshot(ident)
        verification.bump("ACME", "ANN")
        assert verification.snapshot(ident) != before
    conf._import.cache_clear()
