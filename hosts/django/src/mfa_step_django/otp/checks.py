"""System checks of the django-otp face: the context callable, trusted proxies, middleware order,
CSRF middleware, the exception-reporter filter."""

from __future__ import annotations

from django.conf import settings
from django.core import checks

from . import conf

MIDDLEWARE = "mfa_step_django.otp.middleware.TrustedDeviceMiddleware"
OTP_MIDDLEWARE = "django_otp.middleware.OTPMiddleware"
CSRF_MIDDLEWARE = "django.middleware.csrf.CsrfViewMiddleware"
REPORTER_FILTER = "mfa_step_django.otp.reporting.SafeExceptionReporterFilter"


@checks.register(checks.Tags.security)
def check_settings(app_configs=None, **kwargs):
    errors = []
    raw = getattr(settings, "MFA_STEP", None)
    if raw is not None and not isinstance(raw, dict):
        return [checks.Error("MFA_STEP must be a dict", id="mfa_step_otp.E001")]
    try:
        if not callable(conf.context_callable()):
            errors.append(checks.Error("MFA_STEP['CONTEXT'] is not callable", id="mfa_step_otp.E002"))
    except ImportError as exc:
        errors.append(checks.Error(
            f"MFA_STEP['CONTEXT'] cannot be imported: {exc}",
            hint="a dotted path to a callable (request) -> {'org_id', 'roles', 'email', 'locale'}",
            id="mfa_step_otp.E002",
        ))
    proxies = conf.mfa_settings().get("TRUSTED_PROXIES", ())
    if isinstance(proxies, str):
        errors.append(checks.Error("MFA_STEP['TRUSTED_PROXIES'] must be a list of CIDRs, not a string",
                                   id="mfa_step_otp.E003"))
    else:
        try:
            conf.trusted_proxies()
        except (ValueError, TypeError) as exc:
            errors.append(checks.Error(f"MFA_STEP['TRUSTED_PROXIES'] holds an invalid network: {exc}",
                                       id="mfa_step_otp.E003"))
    if "DEVICE_COOKIE" in conf.mfa_settings():
        errors.append(checks.Warning(
            "MFA_STEP['DEVICE_COOKIE'] is not read: the component names its cookie (__Host-mfa-device)",
            hint="remove the setting", id="mfa_step_otp.W004"))
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if MIDDLEWARE not in middleware:
        errors.append(checks.Error(f"{MIDDLEWARE} is not in MIDDLEWARE", id="mfa_step_otp.E005"))
    elif OTP_MIDDLEWARE not in middleware or middleware.index(OTP_MIDDLEWARE) > middleware.index(MIDDLEWARE):
        errors.append(checks.Error(f"{MIDDLEWARE} must come after {OTP_MIDDLEWARE}", id="mfa_step_otp.E006"))
    if CSRF_MIDDLEWARE not in middleware:
        errors.append(checks.Warning(
            f"{CSRF_MIDDLEWARE} is not in MIDDLEWARE",
            hint="mfa-step's own views protect themselves (csrf_protect), but your login form and other "
                 "views then have no CSRF protection",
            id="mfa_step_otp.W007"))
    errors.extend(_check_reporter_filter())
    return errors


def _check_reporter_filter():
    from django.utils.module_loading import import_string

    from .reporting import SafeExceptionReporterFilter

    configured = getattr(settings, "DEFAULT_EXCEPTION_REPORTER_FILTER", "")
    try:
        cls = import_string(configured) if isinstance(configured, str) else configured
        ok = isinstance(cls, type) and issubclass(cls, SafeExceptionReporterFilter)
    except ImportError:
        ok = False
    if ok:
        return []
    return [checks.Warning(
        "DEFAULT_EXCEPTION_REPORTER_FILTER does not hide the trusted-device cookie: error reports "
        "(DEBUG pages, AdminEmailHandler mails) would show the browser's device token",
        hint=f'DEFAULT_EXCEPTION_REPORTER_FILTER = "{REPORTER_FILTER}" (or a subclass of it)',
        id="mfa_step_otp.W010")]
