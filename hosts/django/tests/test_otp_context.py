"""The request -> login-context mapping: client address, trusted proxies, traits; the system check."""

from __future__ import annotations

import pytest
from django.core import checks
from django.test import RequestFactory, override_settings

from mfa_step_django.otp import conf
from mfa_step_django.otp.checks import check_settings
from mfa_step_django.otp.context import browser_traits, client_ip

rf = RequestFactory()


def _req(peer, xff=None):
    extra = {"REMOTE_ADDR": peer}
    if xff is not None:
        extra["HTTP_X_FORWARDED_FOR"] = xff
    return rf.get("/", **extra)


def _proxies(*nets):
    conf._networks.cache_clear()
    return override_settings(MFA_STEP={"TRUSTED_PROXIES": list(nets)})


def test_the_peer_is_the_client_and_a_forwarded_header_is_ignored_by_default():
    with _proxies():
        assert client_ip(_req("203.0.113.5")) == "203.0.113.5"
        assert client_ip(_req("203.0.113.5", "198.51.100.1")) == "203.0.113.5"


def test_a_forwarded_header_from_an_untrusted_peer_is_ignored():
    with _proxies("10.0.0.0/8"):
        assert client_ip(_req("203.0.113.5", "198.51.100.1")) == "203.0.113.5"


def test_a_trusted_proxy_chain_is_read_right_to_left():
    with _proxies("10.0.0.0/8", "192.0.2.1"):
        # client-chosen junk, the real client, then our two proxies
        assert client_ip(_req("10.1.2.3", "1.2.3.4, 198.51.100.7, 192.0.2.1")) == "198.51.100.7"
        assert client_ip(_req("10.1.2.3", "198.51.100.7")) == "198.51.100.7"
        # Only proxies in the header: the peer.
        assert client_ip(_req("10.1.2.3", "10.9.9.9")) == "10.1.2.3"
        # A hop no proxy would write: believe nothing left of it.
        assert client_ip(_req("10.1.2.3", "198.51.100.7, not-an-ip")) == "10.1.2.3"
        assert client_ip(_req("10.1.2.3", "2001:db8::1")) == "2001:db8::1"


def test_traits_are_bounded_and_the_language_is_checked():
    long_ua = "é" * 400  # 800 bytes
    t = browser_traits(rf.get("/", HTTP_USER_AGENT=long_ua, HTTP_ACCEPT_LANGUAGE="es-MX,es;q=0.9"))
    assert len(t["user_agent"].encode()) <= 512 and t["user_agent"].startswith("é")
    assert t["language"] == "es-MX"
    assert browser_traits(rf.get("/", HTTP_ACCEPT_LANGUAGE="<script>"))["language"] is None


def _ids(errors):
    return {e.id for e in errors if e.level >= checks.ERROR}


def test_the_system_check_reports_bad_settings():
    assert _ids(check_settings()) == set()
    conf._networks.cache_clear()
    with override_settings(MFA_STEP={"TRUSTED_PROXIES": ["10.0.0.0/33"]}):
        assert "mfa_step_otp.E003" in _ids(check_settings())
    with override_settings(MFA_STEP={"TRUSTED_PROXIES": "10.0.0.0/8"}):
        assert "mfa_step_otp.E003" in _ids(check_settings())
    with override_settings(MFA_STEP={"CONTEXT": "no.such.module.fn"}):
        assert "mfa_step_otp.E002" in _ids(check_settings())
    from django.conf import settings

    wrong_order = [m for m in settings.MIDDLEWARE if "TrustedDevice" not in m]
    wrong_order.insert(0, "mfa_step_django.otp.middleware.TrustedDeviceMiddleware")
    with override_settings(MIDDLEWARE=wrong_order):
        assert "mfa_step_otp.E006" in _ids(check_settings())
    with override_settings(MIDDLEWARE=[m for m in settings.MIDDLEWARE if "TrustedDevice" not in m]):
        assert "mfa_step_otp.E005" in _ids(check_settings())


@pytest.mark.django_db(transaction=True)
def test_trusted_proxy_setting_reaches_the_component(engine):
    """Behind a listed proxy, a trusted browser on the same network passes; a forwarded address
    on another network is asked again (the header is believed only from the proxy)."""
    from tests.support_otp import client, device_cookie, make_user, password_login, verified_login

    make_user("pia")
    conf._networks.cache_clear()
    with override_settings(MFA_STEP={**__import__("django.conf").conf.settings.MFA_STEP,
                                      "TRUSTED_PROXIES": ["10.0.0.0/8"]}):
        c = client(ip="10.0.0.2", HTTP_X_FORWARDED_FOR="203.0.113.5")
        verified_login(c, "pia", remember=True)
        same = client(ip="10.0.0.3", cookie=device_cookie(c), HTTP_X_FORWARDED_FOR="203.0.113.9")
        password_login(same, "pia")
        assert same.get("/protected/").status_code == 200
        moved = client(ip="10.0.0.3", cookie=device_cookie(same), HTTP_X_FORWARDED_FOR="198.51.100.9")
        password_login(moved, "pia")
        assert moved.get("/protected/").status_code == 302
    conf._networks.cache_clear()
