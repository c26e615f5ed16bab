"""A credential change revokes the user's trusted browsers (review finding 6): Django's
``set_password`` path reports ``password-changed`` to the component, and
``mfa_step_django.otp.credential_changed`` reports the others. Through the real component."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.forms import PasswordChangeForm
from django.contrib.auth.models import User
from django.db import transaction

from mfa_step_django.backends.faults import Breakable
from mfa_step_django.engine import MfaError
from mfa_step_django.models import AuditRecord
from mfa_step_django.otp import credential_changed, credentials
from tests.support_otp import PASSWORD, client, device_cookie, make_user, password_login, verified_login

pytestmark = pytest.mark.django_db(transaction=True)

NEW = "N3w-s3cret-pass!"


def _remembered(username):
    c = client()
    verified_login(c, username, remember=True)
    cookie = device_cookie(c)
    assert cookie
    # Control: before the change, the remembered browser skips the code.
    probe = client(cookie=cookie)
    password_login(probe, username)
    assert probe.get("/protected/").content == b"protected page amr=mfa"
    return c, device_cookie(probe)


def _asked_for_a_code(cookie, username, password=PASSWORD):
    b = client(cookie=cookie)
    r = b.post("/accounts/login/", {"username": username, "password": password})
    assert r.status_code == 302
    r = b.get("/protected/")
    return r.status_code == 302 and r["Location"].startswith("/mfa/")


def _credential_records():
    return [json.loads(line) for line in AuditRecord.objects.order_by("id").values_list("line", flat=True)
            if "password-changed" in line or "mfa-reset" in line]


def test_a_password_change_through_django_revokes_the_remembered_browsers(engine):
    make_user("pw")
    c, cookie = _remembered("pw")
    user = User.objects.get(username="pw")
    form = PasswordChangeForm(user, {"old_password": PASSWORD, "new_password1": NEW, "new_password2": NEW})
    assert form.is_valid(), form.errors
    form.save()
    assert _asked_for_a_code(cookie, "pw", NEW)
    assert _credential_records(), "no credential-change record in the audit trail"
    # The session verified before the change is asked again too (it has no trusted browser left).
    r = c.get("/protected/")
    assert r.status_code == 302 and r["Location"].startswith("/mfa/")


def test_the_session_that_changes_its_own_password_stays_verified(engine):
    make_user("own")
    c, cookie = _remembered("own")
    r = c.post("/accounts/password/", {"old_password": PASSWORD, "new_password1": NEW, "new_password2": NEW})
    assert r.status_code == 200, r.content
    assert c.get("/protected/").status_code == 200
    assert c.get("/mfa/api/devices").json()["devices"] == []
    assert _asked_for_a_code(cookie, "own", NEW)


def test_a_change_inside_a_transaction_is_reported_after_the_commit_and_a_rollback_is_not(engine):
    make_user("tx")
    _c, cookie = _remembered("tx")
    user = User.objects.get(username="tx")

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), transaction.atomic():
        user.set_password(NEW)
        user.save()
        raise Rollback
    assert not _credential_records()
    assert not _asked_for_a_code(cookie, "tx")  # still trusted: nothing changed
    user = User.objects.get(username="tx")
    with transaction.atomic():  # the engine would refuse to run in here: reported on commit
        user.set_password(NEW)
        user.save()
    assert len(_credential_records()) == 1
    assert _asked_for_a_code(cookie, "tx", NEW)


def test_saves_that_change_no_password_report_nothing(engine, monkeypatch):
    calls = []
    monkeypatch.setattr(credentials, "credential_changed", lambda *a, **k: calls.append(a))
    user = make_user("nop")  # created (set_password on a new user): not a change
    user.first_name = "No"
    user.save()
    User.objects.get(username="nop").save()
    assert calls == []
    user.set_password(NEW)
    user.save()
    assert len(calls) == 1 and calls[0][1] == "password-changed"


def test_the_public_function_reports_other_credential_changes(engine):
    user = make_user("mr")
    _c, cookie = _remembered("mr")
    assert credential_changed(user, "mfa-reset") == 1
    assert _asked_for_a_code(cookie, "mr")
    assert credential_changed(user, "mfa-reset") == 0
    with pytest.raises(ValueError):
        credential_changed(user, "email-changed")


def test_a_failure_to_report_is_raised_never_silent(engine):
    make_user("down")
    _c, cookie = _remembered("down")
    user = User.objects.get(username="down")
    broken = Breakable(engine.database)
    broken.broken.add("*")
    with engine.backends(database=broken), pytest.raises(MfaError):
        user.set_password(NEW)
        user.save()
