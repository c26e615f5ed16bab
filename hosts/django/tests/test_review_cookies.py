"""The device cookie (review findings 4 and 5): a rotation the component committed reaches the
browser whatever the project's view answered, and Django's error reports do not show the token."""

from __future__ import annotations

import sys

import pytest
from django.core import checks
from django.test import RequestFactory, override_settings
from django.views.debug import ExceptionReporter, get_default_exception_reporter_filter

from mfa_step_django.otp.checks import check_settings
from mfa_step_django.otp.reporting import SafeExceptionReporterFilter
from tests.support_otp import DEVICE_COOKIE, client, device_cookie, make_user, password_login, verified_login

FILTER = "mfa_step_django.otp.reporting.SafeExceptionReporterFilter"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path,status", [("/upstream-down/", 502), ("/broken/", 500)])
def test_a_5xx_of_the_projects_view_still_gets_the_rotated_cookie(engine, path, status):
    make_user("ana")
    c = client()
    verified_login(c, "ana", remember=True)
    old = device_cookie(c)
    assert old
    b = client(cookie=old, raise_request_exception=False)
    password_login(b, "ana")
    # The first request after sign-in asks the component (a trusted browser: allow, rotated
    # token, committed) and then reaches a project view that fails.
    r = b.get(path)
    assert r.status_code == status
    assert DEVICE_COOKIE in r.cookies
    raw = r.cookies[DEVICE_COOKIE].output(header="").strip()
    for attr in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/"):
        assert attr in raw
    assert device_cookie(b) and device_cookie(b) != old
    # The browser keeps its trust: the next sign-in with the rotated cookie passes without a code.
    again = client(cookie=device_cookie(b))
    password_login(again, "ana")
    assert again.get("/protected/").content == b"protected page amr=mfa"
    assert len(c.get("/mfa/api/devices").json()["devices"]) == 1


@pytest.fixture(autouse=True)
def _uncached_filter():
    # Django keeps the configured filter class in an lru_cache that override_settings does not clear.
    get_default_exception_reporter_filter.cache_clear()
    yield
    get_default_exception_reporter_filter.cache_clear()


TOKEN = "05a696efc141453d40110e617986b53d.SECRET-DEVICE-TOKEN-0123456789abcdef"
SESSION = "s3ss10nvalue0123456789"


def _report(html=False):
    request = RequestFactory().get("/protected/", HTTP_COOKIE=f"{DEVICE_COOKIE}={TOKEN}; sessionid={SESSION}")
    try:
        raise RuntimeError("any bug in any view of the project")
    except RuntimeError:
        reporter = ExceptionReporter(request, *sys.exc_info(), is_email=True)
        return reporter.get_traceback_html() if html else reporter.get_traceback_text()


def test_djangos_default_filter_shows_the_device_token():
    # What the filter is for (and proof that the report below would contain it).
    assert TOKEN in _report()


@override_settings(DEFAULT_EXCEPTION_REPORTER_FILTER=FILTER)
@pytest.mark.parametrize("html", [False, True])
def test_the_filter_hides_the_device_token_and_the_session_cookie(html):
    text = _report(html)
    assert TOKEN not in text and TOKEN.split(".")[-1] not in text
    assert SESSION not in text  # with signed-cookie sessions it holds the step-up token
    assert DEVICE_COOKIE in text  # the cookie's name stays, its value is replaced
    assert "********" in text


def _ids(errors):
    return {e.id for e in errors}


class Subclass(SafeExceptionReporterFilter):
    pass


def test_the_system_check_warns_unless_the_filter_is_installed():
    with override_settings(DEFAULT_EXCEPTION_REPORTER_FILTER="django.views.debug.SafeExceptionReporterFilter"):
        warnings = [e for e in check_settings() if e.id == "mfa_step_otp.W010"]
        assert warnings and warnings[0].level == checks.WARNING and FILTER in warnings[0].hint
    with override_settings(DEFAULT_EXCEPTION_REPORTER_FILTER=FILTER):
        assert "mfa_step_otp.W010" not in _ids(check_settings())
    with override_settings(DEFAULT_EXCEPTION_REPORTER_FILTER="tests.test_review_cookies.Subclass"):
        assert "mfa_step_otp.W010" not in _ids(check_settings())
    with override_settings(DEFAULT_EXCEPTION_REPORTER_FILTER="no.such.Filter"):
        assert "mfa_step_otp.W010" in _ids(check_settings())
