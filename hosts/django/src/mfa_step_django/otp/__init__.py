"""The django-otp face of mfa-step: a ``Device``, a middleware, views and pages over the component.

Map:

- :mod:`.models`      ``MfaStepEmailDevice`` (django-otp ``Device``; holds no secret, no state)
- :mod:`.middleware`  ``TrustedDeviceMiddleware`` (asks ``begin`` once per unverified session,
                      sets the component's cookies, fails closed)
- :mod:`.flow`        begin / send / verify of one session (shared by all of the above)
- :mod:`.context`     login-context and actor of a request (client IP, trusted proxies, traits)
- :mod:`.views`       JSON API; :mod:`.pages` the code page; :mod:`.urls` both
- :mod:`.responses`   error kinds -> HTTP; :mod:`.cookies` Set-Cookie unchanged; :mod:`.checks`

- :mod:`.verification` what a session's verification rests on (context, revocations), re-checked
                      on every request by the middleware
- :mod:`.credentials` a password change revokes trusted browsers; ``credential_changed`` for
                      other credential changes
- :mod:`.reporting`   an exception-reporter filter that hides the device and session cookies

``amr(request)`` gives the methods the component vouched for in this session.
``credential_changed(user, change="password-changed")`` reports a credential change made outside
Django's ``set_password`` (an email change, an MFA reset).
"""


def amr(request):
    from .flow import amr as _amr

    return _amr(request)


def credential_changed(user, change="password-changed", request=None):
    from .credentials import credential_changed as _changed

    return _changed(user, change, request)
