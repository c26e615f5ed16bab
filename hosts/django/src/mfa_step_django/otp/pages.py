"""Server-rendered pages of the step: the code form (with CSRF), resend, and status pages.

Mirrors the Node host's prompt pages: the page sends the code once when first shown (a reload
only shows it), "Send again" resends (the same code while it lives), a wrong code and an unknown or
expired one read alike, ``throttled`` says when to retry (429, ``Retry-After``), ``locked`` says to ask
an administrator (423). A failure of the component is a 503 page and never a pass. Every form is CSRF-protected by the view
itself (``csrf_protect``), whether or not the project runs ``CsrfViewMiddleware``.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpResponseRedirect
from django.shortcuts import render, resolve_url
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect

from .transactions import outside_atomic_requests
from django.views.decorators.http import require_GET, require_POST

from . import flow
from .responses import kind_of, unavailable_response

LOCKED_RULE = "user:locked"


def _next(request) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return resolve_url(settings.LOGIN_REDIRECT_URL)


def wait_words(seconds: int) -> str:
    seconds = max(1, int(seconds))
    if seconds < 90:
        return ngettext("%(n)d second", "%(n)d seconds", seconds) % {"n": seconds}
    minutes = (seconds + 59) // 60
    return ngettext("%(n)d minute", "%(n)d minutes", minutes) % {"n": minutes}


def _code_page(request, st, *, error=None, notice=None, status=200, retry_after=None):
    response = render(request, "mfa_step_otp/code.html", {
        "masked_email": st.get("masked_email", ""),
        "purpose": st.get("purpose"),
        "why": st.get("why", ""),
        "remember_offered": st.get("purpose") != "email-change",
        "error": error,
        "notice": notice,
        "next": _next(request),
    }, status=status)
    if retry_after is not None:
        response["Retry-After"] = str(int(retry_after))
    response["Cache-Control"] = "no-store"
    return response


def _status_page(request, kind, message, status):
    response = render(request, "mfa_step_otp/status.html", {"kind": kind, "message": message}, status=status)
    response["Cache-Control"] = "no-store"
    return response


def _fail(request, exc, st=None):
    """An error of the component, as a page; anything unknown fails closed (503)."""
    kind = kind_of(exc)
    if kind == "throttled" and st:
        wait = getattr(exc, "retry_after_seconds", None) or 60
        return _code_page(request, st, status=429, retry_after=wait, error=_(
            "Too many attempts. Wait %(wait)s, then try again. A code we already sent works until it expires."
        ) % {"wait": wait_words(wait)})
    if kind == "locked":
        return _status_page(request, "locked", getattr(exc, "message", "") or _(
            "Too many wrong codes. Ask an administrator to unlock your account."), 423)
    if kind in ("forbidden", "invalid-input", "rejected"):
        return _status_page(request, "denied", getattr(exc, "message", "") or _("This sign-in is refused."), 403)
    flow.unverify(request)
    if not isinstance(exc, flow.errors()[0]):
        flow.log.exception("mfa_step page failed")
    return unavailable_response(request)


def _after_decision(request, decision):
    if decision["tag"] == "allow":
        return HttpResponseRedirect(_next(request))
    why = (decision["value"].get("why") or {})
    kind = "locked" if why.get("rule") == LOCKED_RULE else "denied"
    return _status_page(request, kind, why.get("message") or _("This sign-in is refused."), 423 if kind == "locked" else 403)


@outside_atomic_requests
@csrf_protect
@require_GET
@never_cache
@login_required
def code_page(request):
    if request.user.is_verified():
        return HttpResponseRedirect(_next(request))
    st = flow.state(request)
    try:
        if not st or not st.get("challenge_id"):
            decision = flow.begin(request)
            if decision["tag"] != "challenge":
                return _after_decision(request, decision)
            st = flow.state(request)
        if not st.get("sent"):
            outcome = flow.send(request)
            if "decision" in outcome:
                return _after_decision(request, outcome["decision"])
            st = flow.state(request)
    except Exception as exc:  # noqa: BLE001
        return _fail(request, exc, st)
    return _code_page(request, st)


@outside_atomic_requests
@csrf_protect
@require_POST
@never_cache
@login_required
def verify_submit(request):
    if request.user.is_verified():
        return HttpResponseRedirect(_next(request))
    st = flow.state(request) or {}
    try:
        flow.verify(request, request.POST.get("code", ""), request.POST.get("remember") == "on")
    except Exception as exc:  # noqa: BLE001
        if kind_of(exc) == "rejected" and st.get("challenge_id"):
            return _code_page(request, st, status=400, error=_(flow.REJECTED_MESSAGE))
        if kind_of(exc) == "rejected":
            return HttpResponseRedirect(reverse("mfa_step_otp:code") + "?" + urlencode({"next": _next(request)}))
        return _fail(request, exc, st)
    return HttpResponseRedirect(_next(request))


@outside_atomic_requests
@csrf_protect
@require_POST
@never_cache
@login_required
def resend(request):
    if request.user.is_verified():
        return HttpResponseRedirect(_next(request))
    try:
        outcome = flow.send(request, resend=True)
    except Exception as exc:  # noqa: BLE001
        return _fail(request, exc, flow.state(request))
    if "decision" in outcome:
        return _after_decision(request, outcome["decision"])
    notice = (_("We sent the same code again. Check your inbox and spam folder.") if outcome["sent"].get("resent")
              else _("We sent a new code. Only the newest code works."))
    return _code_page(request, flow.state(request), notice=notice)
