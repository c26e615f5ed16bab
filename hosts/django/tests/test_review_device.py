"""The django-otp device (review findings 10 and 13): it is always confirmed, and django-otp's own
transaction-wrapped helpers work through a dedicated database alias on Postgres."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.db import connection
from django.test import RequestFactory

from mfa_step_django.otp.models import MfaStepEmailDevice
from tests.support_otp import client, last_code, make_user, password_login, verified_login

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_row_left_unconfirmed_does_not_make_verification_impossible(engine):
    user = make_user("unc")
    device = MfaStepEmailDevice.objects.create(user=user, name="Email")
    MfaStepEmailDevice.objects.filter(pk=device.pk).update(confirmed=False)  # as an old admin could
    c = client()
    verified_login(c, "unc")
    r = c.get("/protected/")
    assert r.status_code == 200 and r.content == b"protected page amr=otp,mfa"
    assert MfaStepEmailDevice.objects.get(pk=device.pk).confirmed is True


def test_the_device_cannot_be_saved_unconfirmed():
    user = User.objects.create_user("sav", "sav@clinic.example", "x")
    device = MfaStepEmailDevice(user=user, name="Email", confirmed=False)
    device.save()
    assert MfaStepEmailDevice.objects.get(pk=device.pk).confirmed is True
    device.confirmed = False
    device.save(update_fields=["name"])
    assert MfaStepEmailDevice.objects.get(pk=device.pk).confirmed is True


def test_the_admin_does_not_offer_confirmed():
    model_admin = admin.site._registry[MfaStepEmailDevice]
    request = RequestFactory().get("/admin/")
    request.user = User.objects.create_superuser("root", "root@clinic.example", "x")
    assert "confirmed" not in model_admin.get_form(request)().fields
    assert "confirmed" not in model_admin.get_list_display(request)
    assert "confirmed" not in model_admin.get_list_filter(request)


def _postgres_with_alias():
    from django.conf import settings

    return connection.vendor == "postgresql" and "mfa_step" in settings.DATABASES


@pytest.mark.django_db(transaction=True, databases="__all__")
@pytest.mark.parametrize("op", ["django_otp_verify_token", "otp_token_form"])
def test_django_otps_own_helpers_work_through_a_dedicated_alias(settings, clock, op):
    """``django_otp.verify_token`` and ``OTPTokenForm`` run the device inside
    ``transaction.atomic()`` on the default alias. With ``MFA_STEP["DATABASE"]`` on a second alias
    of the same Postgres database (its own connection, autocommit), the engine works under them.
    (tests/test_otp_device.py shows the default alias failing closed instead.)"""
    if not _postgres_with_alias():
        pytest.skip("Postgres only: a second alias to the same database (tests/settings.py adds it on Postgres)")
    from mfa_step_django import engine as engmod

    settings.MFA_STEP = {**settings.MFA_STEP, "DATABASE": "mfa_step"}
    engmod.reset_engine()
    try:
        eng = engmod.get_engine()
        eng.set_clock(clock)
        assert eng.database.alias == "mfa_step"
        make_user("dee")
        c = client()
        password_login(c, "dee")
        r = c.post("/device/generate_challenge")
        assert r.status_code == 200, r.content
        code = last_code("dee@clinic.example")
        wrong = "".join(str((int(d) + 1) % 10) for d in code)
        r = c.post(f"/device/{op}", {"token": wrong})
        assert r.status_code == 200 and r.json()["ok"] is False, r.content
        assert c.get("/protected/").status_code == 302
        r = c.post(f"/device/{op}", {"token": code})
        assert r.status_code == 200 and r.json()["ok"] is True, r.content
        r = c.get("/protected/")
        assert r.status_code == 200 and r.content == b"protected page amr=otp,mfa"
    finally:
        engmod.reset_engine()
