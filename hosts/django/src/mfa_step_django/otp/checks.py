"""System checks of the django-otp face: the context callable, trusted proxies, middleware order."""

from __future__ import annotations

from django.conf import settings
from django.core import checks

from . import conf

MIDDLEWARE = "mfa_step_django.otp.middleware.TrustedDeviceMiddleware"
OTP_MIDDLEWARE = "django_otp.middleware.OTPMiddleware"


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
    cookie = conf.device_cookie()
    if not cookie or any(c in cookie for c in " ;,=\t\r\n"):
        errors.append(checks.Error("MFA_STEP['DEVICE_COOKIE'] is not a valid cookie name", id="mfa_step_otp.E004"))
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if MIDDLEWARE not in middleware:
        errors.append(checks.Error(f"{MIDDLEWARE} is not in MIDDLEWARE", id="mfa_step_otp.E005"))
    elif OTP_MIDDLEWARE not in middleware or middleware.index(OTP_MIDDLEWARE) > middleware.index(MIDDLEWARE):
        errors.append(checks.Error(f"{MIDDLEWARE} must come after {OTP_MIDDLEWARE}", id="mfa_step_otp.E006"))
    return errors
