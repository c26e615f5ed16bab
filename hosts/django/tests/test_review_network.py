"""The client address behind proxies (review findings 3 and 8): an IPv4-mapped IPv6 peer is its IPv4
address, and ``"unix"`` in ``TRUSTED_PROXIES`` trusts a proxy on a unix socket (empty
``REMOTE_ADDR``)."""

from __future__ import annotations

import pytest
from django.core import checks
from django.test import RequestFactory, override_settings

from mfa_step_django.otp import conf
from mfa_step_django.otp.checks import check_settings
from mfa_step_django.otp.context import client_ip

rf = RequestFactory()


@pytest.fixture(autouse=True)
def _fresh_networks():
    conf._networks.cache_clear()
    yield
    conf._networks.cache_clear()


def _req(peer, xff=None):
    extra = {"REMOTE_ADDR": peer}
    if xff is not None:
        extra["HTTP_X_FORWARDED_FOR"] = xff
    return rf.get("/", **extra)


def _proxies(*entries, base=None):
    return override_settings(MFA_STEP={**(base or {}), "TRUSTED_PROXIES": list(entries)})


def test_an_ipv4_mapped_peer_matches_an_ipv4_proxy_network():
    with _proxies("10.0.0.0/8"):
        assert client_ip(_req("::ffff:10.0.0.2", "198.51.100.7")) == "198.51.100.7"
        assert client_ip(_req("10.0.0.2", "198.51.100.7")) == "198.51.100.7"
        # Mapped hops in the header are read the same way (a proxy on a dual-stack socket).
        assert client_ip(_req("::ffff:10.0.0.2", "198.51.100.7, ::ffff:10.0.0.9")) == "198.51.100.7"


def test_a_mapped_proxy_network_matches_an_ipv4_peer():
    with _proxies("::ffff:10.0.0.0/104"):
        assert client_ip(_req("10.0.0.2", "198.51.100.7")) == "198.51.100.7"


def test_the_component_gets_the_ipv4_form_of_a_mapped_address():
    with _proxies():
        assert client_ip(_req("::ffff:203.0.113.5")) == "203.0.113.5"
    with _proxies("10.0.0.0/8"):
        assert client_ip(_req("10.0.0.2", "::ffff:198.51.100.7")) == "198.51.100.7"
        # Only proxies in the header: the peer, as IPv4.
        assert client_ip(_req("::ffff:10.0.0.2", "10.9.9.9")) == "10.0.0.2"


def test_a_mapped_untrusted_peer_still_cannot_forward():
    with _proxies("10.0.0.0/8"):
        assert client_ip(_req("::ffff:203.0.113.5", "198.51.100.7")) == "203.0.113.5"


def test_an_empty_peer_is_a_trusted_proxy_only_with_unix():
    with _proxies("127.0.0.1/32", "::1/128"):
        assert client_ip(_req("", "203.0.113.5")) == ""  # not believed: refused downstream
    with _proxies("unix"):
        assert client_ip(_req("", "203.0.113.5")) == "203.0.113.5"
        assert client_ip(_req("", "1.2.3.4, 203.0.113.5")) == "203.0.113.5"
        # A real peer is not the unix proxy: its header is not believed.
        assert client_ip(_req("198.51.100.1", "203.0.113.5")) == "198.51.100.1"
        # No usable hop: no address (and the component refuses the login).
        assert client_ip(_req("", "junk")) == ""
    with _proxies("unix", "10.0.0.0/8"):
        assert client_ip(_req("", "203.0.113.5, 10.1.1.1")) == "203.0.113.5"


def test_unix_passes_the_system_check():
    with _proxies("unix", "10.0.0.0/8"):
        assert not [e for e in check_settings() if e.level >= checks.ERROR]
    with _proxies("unix-socket"):
        assert "mfa_step_otp.E003" in {e.id for e in check_settings()}


pytestmark_db = pytest.mark.django_db(transaction=True)


@pytestmark_db
@pytest.mark.parametrize("proxy", ["10.0.0.3", "::ffff:10.0.0.3"])
def test_a_trusted_browser_moved_to_another_network_behind_a_listed_proxy_is_asked_again(engine, settings, proxy):
    from tests.support_otp import client, device_cookie, make_user, password_login, verified_login

    make_user("pia")
    with _proxies("10.0.0.0/8", base=settings.MFA_STEP):
        c = client(ip=proxy, HTTP_X_FORWARDED_FOR="203.0.113.5")
        verified_login(c, "pia", remember=True)
        same = client(ip=proxy, cookie=device_cookie(c), HTTP_X_FORWARDED_FOR="203.0.113.9")
        password_login(same, "pia")
        assert same.get("/protected/").status_code == 200
        moved = client(ip=proxy, cookie=device_cookie(same), HTTP_X_FORWARDED_FOR="198.51.100.9")
        password_login(moved, "pia")
        assert moved.get("/protected/").status_code == 302


@pytestmark_db
def test_a_sign_in_behind_a_unix_socket_proxy(engine, settings):
    from tests.support_otp import client, last_code, make_user, password_login

    make_user("ux")
    with _proxies("unix", base=settings.MFA_STEP):
        c = client(ip="", HTTP_X_FORWARDED_FOR="203.0.113.5")
        password_login(c, "ux")
        r = c.get("/mfa/?next=/protected/")
        assert r.status_code == 200, r.content[-300:]
        r = c.post("/mfa/verify", {"code": last_code("ux@clinic.example"), "next": "/protected/"})
        assert r.status_code == 302 and r["Location"] == "/protected/"
        assert c.get("/protected/").status_code == 200
    # Without "unix" the same request has no address and is refused (fail closed), never let in.
    with _proxies("127.0.0.1/32", base=settings.MFA_STEP):
        d = client(ip="", HTTP_X_FORWARDED_FOR="203.0.113.5")
        password_login(d, "ux")
        assert d.get("/mfa/?next=/protected/").status_code == 403
        assert d.get("/protected/").status_code == 302
