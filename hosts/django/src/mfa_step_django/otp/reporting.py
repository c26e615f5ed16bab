"""An exception-reporter filter that keeps the trusted-device token out of Django's error reports.

Django's ``SafeExceptionReporterFilter`` hides a cookie only when its *name* matches
``API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE``; ``__Host-mfa-device`` does not, so any exception in
any view of the project would mail (``AdminEmailHandler``) or show (``DEBUG``) the browser's device
token, which stands in for a second factor on its network. This filter also hides:

- the device cookie (:data:`.conf.DEVICE_COOKIE`);
- the session cookie (``SESSION_COOKIE_NAME``): a bearer credential in itself, and with the
  signed-cookie session engine it *is* the session, step-up token included.

The raw ``Cookie`` header is already hidden by Django (``HTTP_COOKIE`` in ``META``). Install it::

    DEFAULT_EXCEPTION_REPORTER_FILTER = "mfa_step_django.otp.reporting.SafeExceptionReporterFilter"

A system check (``mfa_step_otp.W010``) warns when the setting is not this class or a subclass.
"""

from __future__ import annotations

from django.conf import settings
from django.views import debug

from . import conf


class SafeExceptionReporterFilter(debug.SafeExceptionReporterFilter):
    def hidden_cookie_names(self) -> set:
        return {conf.DEVICE_COOKIE, getattr(settings, "SESSION_COOKIE_NAME", "sessionid")}

    def get_safe_cookies(self, request):
        cookies = super().get_safe_cookies(request)
        hidden = self.hidden_cookie_names()
        return {k: (self.cleansed_substitute if k in hidden else v) for k, v in cookies.items()}
