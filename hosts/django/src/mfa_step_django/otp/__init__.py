"""The django-otp face of mfa-step: a ``Device``, a middleware, views and pages over the component.

Map:

- :mod:`.models`      ``MfaStepEmailDevice`` (django-otp ``Device``; holds no secret, no state)
- :mod:`.middleware`  ``TrustedDeviceMiddleware`` (asks ``begin`` once per unverified session,
                      sets the component's cookies, fails closed)
- :mod:`.flow`        begin / send / verify of one session (shared by all of the above)
- :mod:`.context`     login-context and actor of a request (client IP, trusted proxies, traits)
- :mod:`.views`       JSON API; :mod:`.pages` the code page; :mod:`.urls` both
- :mod:`.responses`   error kinds -> HTTP; :mod:`.cookies` Set-Cookie unchanged; :mod:`.checks`

``amr(request)`` gives the methods the component vouched for in this session.
"""


def amr(request):
    from .flow import amr as _amr

    return _amr(request)
