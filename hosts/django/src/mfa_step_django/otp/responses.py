"""How the component's answers and failures become HTTP responses (JSON or a page).

| error kind      | status | notes                                                         |
|-----------------|--------|---------------------------------------------------------------|
| rejected        | 400    | one fixed message for every code that does not verify         |
| invalid-input   | 400    | names the field                                               |
| throttled       | 429    | ``Retry-After``                                               |
| locked          | 423    |                                                               |
| forbidden       | 403    |                                                               |
| unavailable     | 503    | also any trap, host failure or bug: nothing was let through   |
| misconfigured   | 503    | the host's settings are wrong; logged; the body says unavailable |
| not-implemented | 501    |                                                               |

A failure of the step never sets a cookie (a failed call committed nothing): its 503 carries none.
(A rotation the component committed is set even on the project's own 5xx: see the middleware.)
``misconfigured`` is logged and answered as ``unavailable`` (the client cannot act on it).
"""

from __future__ import annotations

import logging

from django.http import JsonResponse
from django.shortcuts import render
from django.utils.translation import gettext as _

from . import flow

log = logging.getLogger("mfa_step_django.otp")

STATUS = {
    "rejected": 400,
    "invalid-input": 400,
    "throttled": 429,
    "locked": 423,
    "forbidden": 403,
    "unavailable": 503,
    "misconfigured": 503,
    "not-implemented": 501,
}


def kind_of(exc) -> str:
    """The error kind of ``exc``: the component's for an ``MfaError``, ``unavailable`` for anything
    else (a trap, a host failure, a bug all fail closed)."""
    MfaError, MfaUnavailable = flow.errors()
    if isinstance(exc, MfaUnavailable):
        return "unavailable"
    if isinstance(exc, MfaError):
        kind = getattr(exc, "kind", None)
        return kind if kind in STATUS else "unavailable"
    return "unavailable"


def unavailable_message() -> str:
    return _("Sign-in verification is unavailable right now. Nothing was changed; try again in a minute.")


def error_json(exc):
    kind = kind_of(exc)
    body = {"error": kind}
    if kind == "rejected":
        body["message"] = _(flow.REJECTED_MESSAGE)
    elif kind in ("unavailable", "misconfigured"):
        log.warning("mfa_step unavailable: %s (%s)", kind, type(exc).__name__)
        body["error"] = "unavailable"
        body["message"] = unavailable_message()
    else:
        body["message"] = str(getattr(exc, "message", "") or "")
        if kind == "invalid-input" and getattr(exc, "field", None):
            body["field"] = exc.field
    response = JsonResponse(body, status=STATUS.get(kind, 503))
    retry = getattr(exc, "retry_after_seconds", None)
    if kind == "throttled" and retry is not None:
        body["retry_after_seconds"] = int(retry)
        response = JsonResponse(body, status=429)
        response["Retry-After"] = str(int(retry))
    return response


def unavailable_response(request):
    """The fail-closed answer: JSON for API callers, else a page. No cookie is set."""
    wants_json = "application/json" in request.META.get("HTTP_ACCEPT", "") or request.path.startswith(
        _api_prefix()
    )
    if wants_json:
        response = JsonResponse({"error": "unavailable", "message": unavailable_message()}, status=503)
    else:
        response = render(
            request, "mfa_step_otp/status.html", {"kind": "unavailable", "message": unavailable_message()}, status=503
        )
    response["Retry-After"] = "30"
    response["Cache-Control"] = "no-store"
    return response


def _api_prefix() -> str:
    try:
        from django.urls import reverse

        return reverse("mfa_step_otp:api_status").rsplit("/", 1)[0] + "/"
    except Exception:  # noqa: BLE001 (urls not mounted: no API prefix)
        return "/\0"
