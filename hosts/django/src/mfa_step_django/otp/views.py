"""The JSON API: the seed's endpoints over the component, for a React (or any) front end.

Every view is plain Django: session authentication, CSRF enforced on every POST by the view itself
(``csrf_protect``, so it does not depend on the project's ``CsrfViewMiddleware``; send the
``csrftoken`` cookie back in ``X-CSRFToken``), JSON in and out. Unauthenticated calls
get 401; calls that need a verified session (devices, admin) get 403 ``unverified`` before one.

The views decide nothing: admin calls go to the component with the actor's roles from the context
callable, and the component answers ``forbidden``. Error kinds map to statuses as
:mod:`mfa_step_django.otp.responses` says. No body ever carries a code, a device token or the
step-up token (``set-cookie`` goes in the header; the step-up token stays in the session).

A revocation made here (one device, all, an admin reset) also ends the verification of the
sessions it concerns (:mod:`.verification`); the acting session of a user revoking their own
browsers stays verified.
"""

from __future__ import annotations

import functools
import json

from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect

from .transactions import outside_atomic_requests
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import context as ctxmod
from . import flow, verification
from .responses import error_json, kind_of


class BadBody(ValueError):
    pass


def _body(request) -> dict:
    if not request.body:
        return {}
    ctype = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        try:
            data = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            raise BadBody("the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise BadBody("the body must be a JSON object")
        return data
    return {k: request.POST.get(k) for k in request.POST}


def _bool(value) -> bool:
    return value is True or str(value).lower() in ("1", "true", "on", "yes")


def api(*, verified=False):
    """Login (and optionally verification) required, JSON errors, fail closed."""

    def wrap(view):
        @functools.wraps(view)
        @never_cache
        def inner(request, *args, **kwargs):
            user = request.user
            if not user.is_authenticated:
                return JsonResponse({"error": "unauthenticated", "message": "Sign in first."}, status=401)
            if verified and not user.is_verified():
                return JsonResponse(
                    {"error": "unverified", "message": "Complete the second factor first."}, status=403
                )
            try:
                return view(request, *args, **kwargs)
            except BadBody as exc:
                return JsonResponse({"error": "invalid-input", "message": str(exc), "field": "body"}, status=400)
            except Exception as exc:  # noqa: BLE001 (every failure is typed or fails closed)
                MfaError, _ = flow.errors()
                if not isinstance(exc, MfaError) and not isinstance(exc, ctxmod.NoRequest):
                    flow.log.exception("mfa_step view failed")
                if kind_of(exc) in ("unavailable", "misconfigured"):
                    flow.unverify(request)
                return error_json(exc)

        return inner

    return wrap


def _decision_json(decision, request):
    tag, value = decision["tag"], decision["value"]
    if tag == "allow":
        return {"decision": "allow", "verified": True, "amr": flow.amr(request),
                "why": value.get("why"), "second_factor_at": value.get("second_factor_at")}
    if tag == "challenge":
        return {"decision": "challenge", "purpose": value.get("purpose"), "masked_email": value.get("masked_email"),
                "expires_at": value.get("expires_at"), "why": value.get("why")}
    return {"decision": "deny", "why": value.get("why")}


@outside_atomic_requests
@csrf_protect
@require_POST
@api()
def begin(request):
    if request.user.is_verified():
        return JsonResponse({"decision": "allow", "verified": True, "amr": flow.amr(request)})
    return JsonResponse(_decision_json(flow.begin(request), request))


@outside_atomic_requests
@csrf_protect
@require_POST
@api()
def send(request):
    if request.user.is_verified():
        return JsonResponse({"decision": "allow", "verified": True, "amr": flow.amr(request)})
    outcome = flow.send(request)
    if "decision" in outcome:
        return JsonResponse(_decision_json(outcome["decision"], request))
    sent = outcome["sent"]
    return JsonResponse({"resent": sent.get("resent"), "code_expires_at": sent.get("code_expires_at"),
                         "sends_left": sent.get("sends_left")})


@outside_atomic_requests
@csrf_protect
@require_POST
@api()
def verify(request):
    data = _body(request)
    result = flow.verify(request, str(data.get("code") or ""), _bool(data.get("remember")))
    return JsonResponse({"verified": True, "amr": list(result.get("amr") or []),
                         "second_factor_at": result.get("second_factor_at"),
                         "device_id": result.get("device_id")})


@outside_atomic_requests
@require_GET
@api()
def status(request):
    value = flow.engine().status(ctxmod.login_context(request))
    return JsonResponse({**value, "verified": request.user.is_verified(), "amr": flow.amr(request)})


@outside_atomic_requests
@csrf_protect
@require_POST
@api()
def enroll(request):
    ch = flow.engine().enroll(ctxmod.login_context(request))
    return JsonResponse(_challenge_kept(request, ch))


@outside_atomic_requests
@csrf_protect
@require_POST
@api(verified=True)
def change_email(request):
    step_up = request.session.get(flow.STEP_UP_KEY) or ""
    ch = flow.engine().change_email(ctxmod.login_context(request), step_up)
    request.session.pop(flow.STEP_UP_KEY, None)  # it works once
    return JsonResponse(_challenge_kept(request, ch))


def _challenge_kept(request, ch):
    """Keeps an enrollment / email-change challenge in the session for ``send`` and ``verify``."""
    request.session[flow.STATE_KEY] = {
        "user": str(request.user.pk), "challenge_id": ch.get("challenge_id"), "purpose": ch.get("purpose"),
        "masked_email": ch.get("masked_email"), "expires_at": ch.get("expires_at"),
        "why": (ch.get("why") or {}).get("message", ""), "sent": False,
    }
    return {"purpose": ch.get("purpose"), "masked_email": ch.get("masked_email"), "expires_at": ch.get("expires_at")}


@outside_atomic_requests
@require_GET
@api(verified=True)
def devices(request):
    return JsonResponse({"devices": flow.engine().list_devices(ctxmod.actor(request))})


@outside_atomic_requests
@csrf_protect
@require_POST
@api(verified=True)
def revoke(request, device_id):
    ident = ctxmod.identity(request)
    flow.engine().revoke(ctxmod.actor(request, ident), device_id)
    verification.bump(ident["org_id"], ident["user_id"], device_id)
    verification.restamp(request, ident)
    return JsonResponse({"revoked": 1})


@outside_atomic_requests
@csrf_protect
@require_POST
@api(verified=True)
def revoke_all(request):
    ident = ctxmod.identity(request)
    revoked = int(flow.engine().revoke_all(ctxmod.actor(request, ident)))
    verification.bump(ident["org_id"], ident["user_id"])
    verification.restamp(request, ident)
    return JsonResponse({"revoked": revoked})


# --- admin calls: the component authorizes them from the actor's roles ---------------------------


@outside_atomic_requests
@csrf_protect
@require_http_methods(["GET", "POST"])
@api(verified=True)
def policy(request, org_id):
    actor = ctxmod.actor(request)
    if request.method == "POST":
        flow.engine().set_policy(actor, org_id, _body(request))
    return JsonResponse(flow.engine().get_policy(actor, org_id))


@outside_atomic_requests
@csrf_protect
@require_POST
@api(verified=True)
def reset_user(request, org_id, user_id):
    flow.engine().reset_user(ctxmod.actor(request), org_id, user_id)
    verification.bump(org_id, user_id)  # the target's sessions are asked again
    return JsonResponse({"reset": True})


@outside_atomic_requests
@require_GET
@api(verified=True)
def user_status(request, org_id, user_id):
    return JsonResponse(flow.engine().get_user_status(ctxmod.actor(request), org_id, user_id))


@outside_atomic_requests
@csrf_protect
@require_http_methods(["GET", "POST"])
@api(verified=True)
def branding(request, org_id):
    actor = ctxmod.actor(request)
    if request.method == "POST":
        flow.engine().set_branding(actor, org_id, _body(request))
    return JsonResponse(flow.engine().get_branding(actor, org_id))


@outside_atomic_requests
@require_GET
@api(verified=True)
def email_preview(request, org_id):
    return JsonResponse(flow.engine().preview_email(
        ctxmod.actor(request), org_id, request.GET.get("language") or None, request.GET.get("time_zone") or None
    ))
