"""``TrustedDeviceMiddleware``: asks the component once per unverified signed-in session.

Install after ``django_otp.middleware.OTPMiddleware``::

    MIDDLEWARE = [
        ...,
        "django.contrib.sessions.middleware.SessionMiddleware",
        ...,
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django_otp.middleware.OTPMiddleware",
        "mfa_step_django.otp.middleware.TrustedDeviceMiddleware",
        ...,
    ]

On a request of a signed-in session that is not verified and has no pending step, it calls the
component's ``begin``: a trusted browser (its ``__Host-`` cookie) or "no rule applies" marks the
session verified the django-otp way (``user.is_verified()``; ``amr`` in the session, ``["mfa"]`` or
``[]``); a challenge or a refusal is kept in the session for the code page (nothing is sent here:
sending counts against the send window, so the page sends when it is shown). Every ``set-cookie``
the component returned during the request is set on the response unchanged, whatever the
response's status: a rotated device token is committed when the component answers, so a 5xx of the
project's own view must not lose it (``wit/login-step.wit``: set every ``set-cookie``).

On a request of a session verified through ``MfaStepEmailDevice``, it checks that the verification
still rests on what it was granted for (:mod:`.verification`: the context callable's org and roles
unchanged, no revocation of the user's devices or of the verifying device through this package).
If not, the verification is dropped the django-otp way and the component is asked again.

Fails closed: if the component is unavailable (or anything else goes wrong), the session stays
unverified and the request is answered 503 (JSON for API callers, a page otherwise); no cookie is
set (a failed step queues none). It also keeps the request in a context variable for the django-otp
``Device`` methods.
"""

from __future__ import annotations

import logging

from django.core.exceptions import ImproperlyConfigured

from . import conf, cookies, flow
from . import context as ctxmod
from .responses import kind_of, unavailable_response

log = logging.getLogger("mfa_step_django.otp")


class TrustedDeviceMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = ctxmod.current_request.set(request)
        try:
            early = self._decide(request)
            if early is not None:
                return early
            response = self.get_response(request)
            pending = getattr(request, flow.COOKIES_ATTR, None)
            if pending:
                # Whatever the status: the component committed the rotation it returned (a failed
                # step of ours clears the queue in flow.unverify, so a 503 of ours has none).
                cookies.apply(response, pending)
            return response
        finally:
            ctxmod.current_request.reset(token)

    def process_exception(self, request, exception):
        MfaError, _ = flow.errors()
        if isinstance(exception, (MfaError, ctxmod.NoRequest)) and kind_of(exception) in ("unavailable", "misconfigured"):
            flow.unverify(request)
            return unavailable_response(request)
        return None

    def _decide(self, request):
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None
        if not hasattr(user, "is_verified"):
            raise ImproperlyConfigured(
                "TrustedDeviceMiddleware must come after django_otp.middleware.OTPMiddleware"
            )
        if request.path.startswith(conf.exempt_paths() or ("\0",)):
            return None
        if user.is_verified():
            if not flow.verified_by_us(request):
                return None  # another django-otp device's verification: not ours to judge
            try:
                if flow.still_verified(request):
                    return None
            except Exception as exc:  # noqa: BLE001 (cannot tell: fail closed)
                flow.unverify(request)
                log.warning("mfa_step verification check failed closed (%s)", type(exc).__name__)
                return unavailable_response(request)
            # Its basis moved (roles, org, a revocation): ask the component again, as at sign-in.
            log.info("mfa_step verification dropped: context changed or devices revoked")
            flow.unverify(request)
            flow.clear(request)
        if flow.state(request) is not None:
            return None  # a pending challenge or a refusal: the code page carries on from it
        try:
            flow.begin(request)
        except Exception as exc:  # noqa: BLE001 (every failure fails closed)
            kind = kind_of(exc)
            flow.unverify(request)
            if kind in ("unavailable", "misconfigured"):
                log.warning("mfa_step begin failed closed: %s (%s)", kind, type(exc).__name__)
                return unavailable_response(request)
            # The component refused the context (e.g. a user without an email address): the
            # session stays unverified; the code page asks again and shows the answer.
            log.warning("mfa_step begin refused: %s", kind)
            request.session[flow.STATE_KEY] = {"user": str(user.pk), "failed": kind}
        return None
