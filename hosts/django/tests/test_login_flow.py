"""A full login through Django's test client: password, code from ``mail.outbox``, a remembered
browser, a new network, lock and admin reset, revocation. Real database (SQLite file or Postgres),
the real component; the engine refuses a caller's transaction, so every test is ``transaction=True``."""

from __future__ import annotations

import pytest
from django.core import mail

from tests.support_otp import (
    DEVICE_COOKIE,
    client,
    device_cookie,
    last_code,
    make_user,
    password_login,
    verified_login,
    wrong,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_password_then_code_then_remembered_browser_skips_the_code(engine):
    make_user("ana")
    c = client()
    password_login(c)
    # Signed in but not verified: otp_required sends to the code page; the middleware asked
    # `begin` (a challenge) and sent nothing.
    r = c.get("/protected/")
    assert r.status_code == 302 and r["Location"].startswith("/mfa/")
    assert len(mail.outbox) == 0
    r = c.get("/mfa/?next=/protected/")
    assert r.status_code == 200
    # The address is shown masked, never in full.
    assert b"a***@clinic.example" in r.content
    assert b"ana@clinic.example" not in r.content
    assert len(mail.outbox) == 1
    # A reload shows the page again and sends nothing (sends count against the window).
    assert c.get("/mfa/?next=/protected/").status_code == 200
    assert len(mail.outbox) == 1
    code = last_code("ana@clinic.example")
    assert code not in r.content.decode()
    r = c.post("/mfa/verify", {"code": code, "remember": "on", "next": "/protected/"})
    assert r.status_code == 302 and r["Location"] == "/protected/"
    raw = r.cookies[DEVICE_COOKIE].output(header="").strip()
    for attr in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/"):
        assert attr in raw
    r = c.get("/protected/")
    assert r.status_code == 200
    assert r.content == b"protected page amr=otp,mfa"

    # A new session on the same browser and network: the cookie stands in for the code.
    cookie = device_cookie(c)
    assert cookie
    c2 = client(cookie=cookie)
    password_login(c2)
    r = c2.get("/protected/")
    assert r.status_code == 200, r.status_code
    assert r.content == b"protected page amr=mfa"
    assert len(mail.outbox) == 1  # no new code
    # The component rotated the token and the middleware set it, unchanged.
    assert device_cookie(c2) and device_cookie(c2) != cookie


def test_without_remember_a_new_session_is_asked_again(engine):
    make_user("ben")
    c = client()
    verified_login(c, "ben", remember=False)
    assert device_cookie(c) is None
    c2 = client()
    password_login(c2, "ben")
    assert c2.get("/protected/").status_code == 302


def test_a_new_network_asks_again(engine):
    make_user("cy")
    c = client(ip="203.0.113.5")
    verified_login(c, "cy", remember=True)
    cookie = device_cookie(c)
    assert cookie
    other = client(ip="198.51.100.9", cookie=cookie)  # another /16
    password_login(other, "cy")
    r = other.get("/protected/")
    assert r.status_code == 302 and r["Location"].startswith("/mfa/")
    # The same network still passes (the test above is not passing for another reason).
    same = client(ip="203.0.113.77", cookie=device_cookie(c))
    password_login(same, "cy")
    assert same.get("/protected/").status_code == 200


def test_a_forwarded_header_from_a_client_is_not_believed(engine):
    make_user("dee")
    c = client(ip="203.0.113.5")
    verified_login(c, "dee", remember=True)
    # A client on another network claims the trusted network in X-Forwarded-For: ignored
    # (no TRUSTED_PROXIES configured), so it is asked for a code.
    liar = client(ip="198.51.100.9", cookie=device_cookie(c), HTTP_X_FORWARDED_FOR="203.0.113.5")
    password_login(liar, "dee")
    assert liar.get("/protected/").status_code == 302


def test_revoking_the_device_makes_the_cookie_stop_working(engine):
    make_user("eve")
    c = client()
    verified_login(c, "eve", remember=True)
    cookie = device_cookie(c)
    r = c.get("/mfa/api/devices")
    assert r.status_code == 200
    devices = r.json()["devices"]
    assert len(devices) == 1
    r = c.post(f"/mfa/api/devices/{devices[0]['device_id']}/revoke")
    assert r.status_code == 200, r.content
    assert c.get("/mfa/api/devices").json()["devices"] == []
    c2 = client(cookie=cookie)
    password_login(c2, "eve")
    assert c2.get("/protected/").status_code == 302


def test_revoke_all(engine):
    make_user("fay")
    c = client()
    verified_login(c, "fay", remember=True)
    cookie = device_cookie(c)
    r = c.post("/mfa/api/devices/revoke-all")
    assert r.status_code == 200 and r.json() == {"revoked": 1}
    c2 = client(cookie=cookie)
    password_login(c2, "fay")
    assert c2.get("/protected/").status_code == 302


def _wrong_until_locked(c, code, clock):
    """Wrong codes through the JSON API, waiting out each delay on the test clock. Returns the
    statuses of the counted guesses."""
    counted = []
    for _ in range(200):
        r = c.post("/mfa/api/verify", {"code": wrong(code)}, content_type="application/json")
        if r.status_code == 429:
            assert int(r["Retry-After"]) >= 1
            clock.advance(int(r["Retry-After"]))
            continue
        counted.append(r.status_code)
        if r.status_code == 423:
            return counted
    raise AssertionError(f"never locked: {counted}")


def test_twenty_wrong_codes_lock_and_an_admin_reset_unlocks(engine, clock):
    make_user("gus")
    admin = make_user("olga", roles=(), staff=True)  # staff -> org-admin of the same org
    c = client()
    password_login(c, "gus")
    assert c.get("/mfa/?next=/protected/").status_code == 200
    code = last_code("gus@clinic.example")
    counted = _wrong_until_locked(c, code, clock)
    assert counted[:20] == [400] * 20 and counted[20:] == [423], counted
    # Locked: even the right code (and a fresh session) does not pass.
    r = c.post("/mfa/api/verify", {"code": code}, content_type="application/json")
    assert r.status_code == 423
    c_again = client()
    password_login(c_again, "gus")
    assert c_again.get("/protected/").status_code == 302
    r = c_again.get("/mfa/?next=/protected/")
    assert r.status_code == 423

    # An org admin (verified) resets the user; the component authorizes it from the roles.
    a = client(ip="192.0.2.10")
    verified_login(a, "olga")
    gus_id = str(type(admin).objects.get(username="gus").pk)
    status = a.get(f"/mfa/api/admin/orgs/default/users/{gus_id}/status")
    assert status.status_code == 200 and status.json()["locked"] is True
    r = a.post(f"/mfa/api/admin/orgs/default/users/{gus_id}/reset")
    assert r.status_code == 200, r.content
    assert a.get(f"/mfa/api/admin/orgs/default/users/{gus_id}/status").json()["locked"] is False

    fresh = client()
    verified_login(fresh, "gus")
    assert fresh.get("/protected/").status_code == 200


def test_admin_calls_are_refused_by_the_component_for_a_plain_user(engine):
    make_user("hal")
    c = client()
    verified_login(c, "hal")
    r = c.get("/mfa/api/admin/orgs/default/policy")
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    r = c.post("/mfa/api/admin/orgs/default/users/1/reset")
    assert r.status_code == 403 and r.json()["error"] == "forbidden"


def test_an_org_admin_reads_and_sets_policy_and_branding(engine):
    make_user("ivy", roles=(), staff=True)
    c = client()
    verified_login(c, "ivy")
    r = c.get("/mfa/api/admin/orgs/default/policy")
    assert r.status_code == 200, r.content
    policy = r.json()
    policy["mandate"] = "everyone"
    r = c.post("/mfa/api/admin/orgs/default/policy", policy, content_type="application/json")
    assert r.status_code == 200 and r.json()["mandate"] == "everyone"
    # Another org: the component refuses.
    assert c.get("/mfa/api/admin/orgs/other-org/policy").status_code == 403
    # A loosened limit: invalid-input naming the field.
    bad = dict(policy, trust_days=31)
    r = c.post("/mfa/api/admin/orgs/default/policy", bad, content_type="application/json")
    assert r.status_code == 400 and r.json()["error"] == "invalid-input"
    r = c.get("/mfa/api/admin/orgs/default/email-preview?language=en")
    assert r.status_code == 200 and "123456" in r.json()["text"]
    r = c.get("/mfa/api/admin/orgs/default/branding")
    assert r.status_code == 200 and "display_name" in r.json()


def test_everyone_mandate_then_no_rule_applies_amr_is_empty(engine):
    make_user("jo", roles=())  # no role that requires MFA, org policy inherits: no rule applies
    c = client()
    password_login(c, "jo")
    r = c.get("/protected/")
    assert r.status_code == 200
    assert r.content == b"protected page amr="
    assert len(mail.outbox) == 0


def test_verification_gives_a_new_session_key(engine):
    make_user("kim")
    c = client()
    password_login(c, "kim")
    assert c.get("/mfa/?next=/protected/").status_code == 200
    before = c.cookies["sessionid"].value
    r = c.post("/mfa/verify", {"code": last_code("kim@clinic.example"), "next": "/protected/"})
    assert r.status_code == 302
    assert c.cookies["sessionid"].value != before
    # The old key is gone: a stolen pre-verification session id is worth nothing.
    old = client()
    old.cookies["sessionid"] = before
    assert old.get("/protected/").status_code == 302
    assert old.get("/mfa/api/status").status_code == 401


def test_a_fresh_password_login_is_decided_again(engine):
    make_user("lou")
    c = client()
    verified_login(c, "lou", remember=False)
    assert c.get("/protected/").status_code == 200
    password_login(c, "lou")  # the same browser signs in again
    assert c.get("/protected/").status_code == 302


def test_a_resend_after_the_challenge_ended_opens_a_new_one_and_its_code_works(engine, clock):
    make_user("max")
    c = client()
    password_login(c, "max")
    assert c.get("/mfa/?next=/protected/").status_code == 200
    first = last_code("max@clinic.example")
    clock.advance(1801)  # past challenge_ttl_seconds (default 1800)
    r = c.post("/mfa/resend", {"next": "/protected/"})
    assert r.status_code == 200 and b"new code" in r.content
    second = last_code("max@clinic.example")
    assert len(mail.outbox) == 2
    r = c.post("/mfa/verify", {"code": first, "next": "/protected/"})
    assert r.status_code == 400 and b"not valid" in r.content
    r = c.post("/mfa/verify", {"code": second, "next": "/protected/"})
    assert r.status_code == 302 and r["Location"] == "/protected/"


def test_the_page_says_throttled_with_retry_after(engine):
    make_user("ned")
    c = client()
    password_login(c, "ned")
    assert c.get("/mfa/?next=/protected/").status_code == 200
    for _ in range(2):
        assert c.post("/mfa/resend", {"next": "/protected/"}).status_code == 200
    r = c.post("/mfa/resend", {"next": "/protected/"})
    assert r.status_code == 429 and int(r["Retry-After"]) > 0
    assert len(mail.outbox) == 3


def test_an_offsite_next_is_not_followed(engine):
    make_user("oz")
    c = client()
    password_login(c, "oz")
    assert c.get("/mfa/?next=https://evil.example/").status_code == 200
    r = c.post("/mfa/verify", {"code": last_code("oz@clinic.example"), "next": "https://evil.example/"})
    assert r.status_code == 302 and not r["Location"].startswith("https://evil")
