"""Fail closed, no enumeration, CSRF, authentication: what an attacker or an outage meets."""

from __future__ import annotations

import secrets

import pytest
from django.core import mail
from django.test import Client

from mfa_step_django.backends.faults import Breakable
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


def _broken_database(engine, *ops):
    db = Breakable(engine.database)
    db.broken.update(ops or {"*"})
    return engine.backends(database=db)


def test_database_down_at_begin_is_a_503_and_not_verified(engine):
    make_user("ana")
    c = client()
    password_login(c)
    with _broken_database(engine):
        r = c.get("/protected/")
        assert r.status_code == 503
        assert r["Retry-After"]
        assert DEVICE_COOKIE not in r.cookies
        r = c.get("/protected/", HTTP_ACCEPT="application/json")
        assert r.status_code == 503 and r.json()["error"] == "unavailable"
    # Back up: asked for a code, not let through.
    r = c.get("/protected/")
    assert r.status_code == 302 and r["Location"].startswith("/mfa/")


def test_database_down_with_a_trusted_cookie_never_passes(engine):
    make_user("ben")
    c = client()
    verified_login(c, "ben", remember=True)
    c2 = client(cookie=device_cookie(c))
    password_login(c2, "ben")
    with _broken_database(engine, "get"):
        r = c2.get("/protected/")
        assert r.status_code == 503
    with _broken_database(engine, "commit"):
        r = c2.get("/protected/")
        assert r.status_code == 503
        assert DEVICE_COOKIE not in r.cookies
    # The same cookie still works once the database is back (nothing half-kept).
    assert c2.get("/protected/").status_code == 200


def test_database_down_at_verify_is_a_503_and_the_session_is_not_verified(engine):
    make_user("cy")
    c = client()
    password_login(c, "cy")
    assert c.get("/mfa/?next=/protected/").status_code == 200
    code = last_code("cy@clinic.example")
    with _broken_database(engine, "commit"):
        r = c.post("/mfa/verify", {"code": code, "remember": "on", "next": "/protected/"})
        assert r.status_code == 503
        assert DEVICE_COOKIE not in r.cookies
        r = c.post("/mfa/api/verify", {"code": code}, content_type="application/json")
        assert r.status_code == 503 and r.json() == {
            "error": "unavailable", "message": r.json()["message"]}
    assert c.get("/protected/").status_code == 302
    # Nothing took effect: the code still works once.
    r = c.post("/mfa/verify", {"code": code, "next": "/protected/"})
    assert r.status_code == 302 and r["Location"] == "/protected/"
    assert c.get("/protected/").status_code == 200


def test_mail_failure_sends_nothing_and_fails_closed(engine):
    make_user("dee")
    c = client()
    password_login(c, "dee")
    mailer = Breakable(engine.mailer)
    mailer.broken.add("send")
    with engine.backends(mailer=mailer):
        r = c.get("/mfa/?next=/protected/")
        assert r.status_code == 503 and r["Content-Type"].startswith("text/html")
        r = c.post("/mfa/api/send")
        assert r.status_code == 503 and r.json()["error"] == "unavailable"
    assert len(mail.outbox) == 0
    assert c.get("/protected/").status_code == 302


def test_an_engine_that_raises_anything_fails_closed(engine, monkeypatch):
    make_user("eve")
    c = client()
    password_login(c, "eve")
    from mfa_step_django.otp import flow

    class Exploding:
        def __getattr__(self, name):
            def boom(*a, **k):
                raise RuntimeError("a bug")
            return boom

    monkeypatch.setattr(flow, "engine", lambda: Exploding())
    r = c.get("/protected/")
    assert r.status_code == 503
    r = c.post("/mfa/api/verify", {"code": "123456"}, content_type="application/json")
    assert r.status_code == 503


def _api_verify(c, code):
    r = c.post("/mfa/api/verify", {"code": code}, content_type="application/json")
    return r.status_code, r.json()


def test_wrong_expired_used_and_unknown_codes_look_alike(engine, clock):
    make_user("fay")
    c = client()
    password_login(c, "fay")
    assert c.get("/mfa/?next=/protected/").status_code == 200
    code = last_code("fay@clinic.example")
    wrong_answer = _api_verify(c, wrong(code))
    assert wrong_answer[0] == 400 and wrong_answer[1]["error"] == "rejected"
    malformed = _api_verify(c, "not-a-code")
    # An unknown challenge: the session's challenge id replaced by a random one.
    s = c.session
    real = s["mfa_step_state"]["challenge_id"]
    state = dict(s["mfa_step_state"], challenge_id=secrets.token_hex(16))
    s["mfa_step_state"] = state
    s.save()
    unknown = _api_verify(c, code)
    s = c.session
    s["mfa_step_state"] = dict(state, challenge_id=real)
    s.save()
    # An expired code (past code_ttl_seconds, default 600).
    clock.advance(601)
    expired = _api_verify(c, code)
    assert wrong_answer == malformed == unknown == expired, (wrong_answer, malformed, unknown, expired)

    # A used code: a second user's right code, presented again from a second session of his.
    make_user("gil")
    g = client()
    password_login(g, "gil")
    assert g.get("/mfa/?next=/protected/").status_code == 200
    gil_state = dict(g.session["mfa_step_state"])
    good = last_code("gil@clinic.example")
    assert _api_verify(g, good)[0] == 200
    g2 = client()
    password_login(g2, "gil")
    s = g2.session
    s["mfa_step_state"] = gil_state
    s.save()
    assert _api_verify(g2, good) == wrong_answer


def test_no_session_challenge_is_the_same_answer(engine):
    make_user("hal")
    c = client()
    password_login(c, "hal")
    s = c.session
    s.pop("mfa_step_state", None)
    s.save()
    status, body = _api_verify(c, "123456")
    assert status == 400 and body["error"] == "rejected"


CSRF_FAILED = b"CSRF verification failed"
POST_ROUTES = {"verify", "resend", "api_begin", "api_send", "api_verify", "api_enroll", "api_change_email",
               "api_revoke_all", "api_revoke", "api_policy", "api_branding", "api_reset_user"}


def _routes():
    """Every route of ``mfa_step_django.otp.urls``: ``{name: path}`` (arguments filled in)."""
    from django.urls import reverse

    from mfa_step_django.otp import urls as otp_urls

    args = {"org_id": "default", "user_id": "1", "device_id": "dev-x"}
    return {p.name: reverse(f"mfa_step_otp:{p.name}", kwargs={k: args[k] for k in p.pattern.converters})
            for p in otp_urls.urlpatterns}


def _verified_csrf_client(username):
    """A verified session, in a client that enforces CSRF like a browser (no test-client bypass)."""
    plain = client()
    verified_login(plain, username)
    c = client(enforce_csrf_checks=True)
    c.cookies["sessionid"] = plain.cookies["sessionid"].value
    assert c.get("/protected/").status_code == 200
    return c


@pytest.mark.parametrize("with_middleware", [True, False], ids=["csrf-middleware", "no-csrf-middleware"])
def test_csrf_is_enforced_on_every_post_route_of_a_verified_session(engine, settings, with_middleware):
    """Every route of the package that accepts POST (read from its urls, by the methods each
    allows) refuses a POST without the CSRF token with Django's CSRF failure, from a verified
    session (so a 403 cannot come from "unverified"), with or without the project's
    CsrfViewMiddleware; with the token, the request reaches the view."""
    from django.middleware.csrf import _get_new_csrf_string

    if not with_middleware:
        settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "Csrf" not in m]
    make_user("ike")
    c = _verified_csrf_client("ike")
    routes = _routes()
    post_routes = {}
    for name, path in routes.items():
        allowed = c.options(path)
        assert allowed.status_code == 405, (path, allowed.status_code)
        if "POST" in allowed["Allow"]:
            post_routes[name] = path
    assert set(post_routes) == POST_ROUTES, sorted(post_routes)
    for name, path in post_routes.items():
        r = c.post(path, {"code": "123456"})
        assert r.status_code == 403 and CSRF_FAILED in r.content, (path, r.status_code, r.content[:200])
    secret = _get_new_csrf_string()
    c.cookies["csrftoken"] = secret
    for name, path in post_routes.items():
        r = c.post(path, {"code": "123456"}, HTTP_X_CSRFTOKEN=secret)
        assert CSRF_FAILED not in r.content, (path, r.status_code)
        assert r.status_code != 403 or r.json()["error"] == "forbidden", (path, r.status_code, r.content[:200])


def test_csrf_with_the_token_reaches_the_view_of_an_unverified_session(engine):
    make_user("ivo")
    c = client(enforce_csrf_checks=True)
    password_login_csrf = client()
    password_login(password_login_csrf, "ivo")
    c.cookies["sessionid"] = password_login_csrf.cookies["sessionid"].value
    r = c.post("/mfa/api/send")
    assert r.status_code == 403 and CSRF_FAILED in r.content
    page = c.get("/mfa/?next=/protected/")
    assert page.status_code == 200
    token = c.cookies["csrftoken"].value
    r = c.post("/mfa/api/send", HTTP_X_CSRFTOKEN=token)
    assert r.status_code == 200, r.content


def test_unauthenticated_calls_are_refused(engine):
    c = client()
    r = c.get("/mfa/")
    assert r.status_code == 302 and "/accounts/login/" in r["Location"]
    assert c.get("/protected/").status_code == 302
    for path in ("/mfa/api/begin", "/mfa/api/send", "/mfa/api/verify", "/mfa/api/devices/revoke-all"):
        assert c.post(path).status_code == 401, path
    for path in ("/mfa/api/status", "/mfa/api/devices", "/mfa/api/admin/orgs/default/policy"):
        assert c.get(path).status_code == 401, path
    assert len(mail.outbox) == 0


def test_unverified_sessions_cannot_manage_devices_or_administer(engine):
    make_user("jan", staff=True)
    c = client()
    password_login(c, "jan")
    assert c.get("/mfa/api/devices").status_code == 403
    assert c.post("/mfa/api/devices/revoke-all").status_code == 403
    assert c.get("/mfa/api/admin/orgs/default/policy").status_code == 403
    # A code is pending (the page sent it): the status shows the challenge, never the code.
    assert c.get("/mfa/?next=/protected/").status_code == 200
    code = last_code("jan@clinic.example")
    r = c.get("/mfa/api/status")
    assert r.status_code == 200 and r.json()["verified"] is False
    assert "code" not in r.json()
    assert code not in r.content.decode()
