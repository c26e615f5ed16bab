"""The second-factor step of one Django session, over the component: begin, send, verify.

Shared by the middleware, the django-otp ``Device`` and the views, so all three behave alike.

```text
 signed in, not verified ─▶ begin ─┬─ allow (trusted browser: amr ["mfa"]; no rule: amr []) ─▶ verified
                                   ├─ challenge ─▶ state kept in the session ─▶ send ─▶ verify ─▶ verified
                                   └─ deny ─▶ state "denied" (the page says why; nothing passes)
 verified: django_otp.login(request, device) + session["mfa_step_amr"]; the session key is cycled.
```

Guarantees:

- This module decides nothing: whether a code is needed, whether a browser is trusted, throttles,
  locks and expiry are the component's answers; this module only keeps them in the session.
- Only a component ``allow`` or a successful ``verify`` marks a session verified. Any exception
  (the component's ``unavailable``, a bug, a missing request) propagates: the caller fails closed.
- Every ``set-cookie`` the component returns is queued on the request and set on the response,
  unchanged, by the middleware.
- The step-up token is kept only in the session, never in a response body or a log (with
  Django's signed-cookie session engine the session is the browser's cookie: use a server-side one).
- A verification records what it rests on (:mod:`.verification`: the context's org and roles, the
  user's revocation counts read before the component was asked, the device); the middleware drops
  it when that changes.
"""

from __future__ import annotations

import logging

import django_otp
from django_otp import DEVICE_ID_SESSION_KEY

from . import context as ctxmod
from . import verification

log = logging.getLogger("mfa_step_django.otp")

STATE_KEY = "mfa_step_state"
AMR_KEY = "mfa_step_amr"
SECOND_FACTOR_AT_KEY = "mfa_step_second_factor_at"
STEP_UP_KEY = "mfa_step_step_up"
COOKIES_ATTR = "_mfa_step_set_cookies"

_TAGS = {"allow": "allow", "allowed": "allow", "challenge": "challenge", "deny": "deny", "denied": "deny"}


def engine():
    from mfa_step_django.engine import get_engine

    return get_engine()


def errors():
    """``(MfaError, MfaUnavailable)`` of the engine."""
    from mfa_step_django.engine import MfaError, MfaUnavailable

    return MfaError, MfaUnavailable


def tag_of(decision) -> str:
    """The decision's case, ``allow``, ``challenge`` or ``deny``; anything else is a failure."""
    tag = _TAGS.get(decision.get("tag")) if isinstance(decision, dict) else None
    if tag is None:
        raise ValueError("the component answered begin with an unknown decision")
    return tag


class ForUser:
    """A request seen as made by ``user`` (the device's owner), for the context callable.

    django-otp may verify a device before ``request.user`` is set (a combined password + OTP form);
    the component must then be told about the device's owner, not the anonymous requester.
    """

    def __init__(self, request, user):
        object.__setattr__(self, "_request", request)
        object.__setattr__(self, "user", user)

    def __getattr__(self, name):
        return getattr(self._request, name)


def _as_user(request, user):
    if user is None or getattr(request, "user", None) is user:
        return request
    current = getattr(request, "user", None)
    if current is not None and getattr(current, "is_authenticated", False) and current.pk == user.pk:
        return request
    return ForUser(request, user)


def state(request, user=None) -> dict | None:
    """The session's pending step for ``user`` (default: the signed-in user), if any."""
    user = user if user is not None else request.user
    value = request.session.get(STATE_KEY)
    if isinstance(value, dict) and value.get("user") == str(user.pk):
        return value
    return None


def _save_state(request, user, value: dict | None):
    if value is None:
        request.session.pop(STATE_KEY, None)
    else:
        value["user"] = str(user.pk)
        request.session[STATE_KEY] = value
    request.session.modified = True


def clear(request):
    """Forgets this session's step (pending challenge, amr, step-up, what a verification rested on)."""
    for key in (STATE_KEY, AMR_KEY, SECOND_FACTOR_AT_KEY, STEP_UP_KEY, verification.BASIS_KEY,
                verification.EPOCH_KEY):
        request.session.pop(key, None)


def queue_cookie(request, set_cookie):
    if set_cookie:
        pending = getattr(request, COOKIES_ATTR, None)
        if pending is None:
            pending = []
            setattr(request, COOKIES_ATTR, pending)
        pending.append(set_cookie)


def _asked(request, user):
    """The context of ``user``'s request, with what a verification would rest on, read before the
    component is asked: ``(login_context, identity, revocation counts)``."""
    r = _as_user(request, user)
    ident = ctxmod.identity(r)
    counts = verification.snapshot(ident)
    return ctxmod.login_context(r, ident), ident, counts


def mark_verified(request, user, amr, second_factor_at, set_cookie=None, device=None, *, basis=None):
    """Marks the session verified the django-otp way, with the component's ``amr``.

    ``basis`` is ``(identity, revocation counts, device_id)``: what the component's answer rested on,
    kept in the session (:mod:`.verification`).
    """
    from .models import MfaStepEmailDevice

    device = device if device is not None else MfaStepEmailDevice.for_user(user)
    queue_cookie(request, set_cookie)
    current = getattr(request, "user", None)
    if current is not None and getattr(current, "is_authenticated", False) and current.pk == user.pk:
        # A verified session is a new privilege: a new session key (no fixation).
        request.session.cycle_key()
        django_otp.login(request, device)
    else:
        # A combined password + OTP form: django-otp logs the device in with the user.
        user.otp_device = device
    _save_state(request, user, None)
    request.session[AMR_KEY] = [str(a) for a in (amr or [])]
    request.session[SECOND_FACTOR_AT_KEY] = second_factor_at
    if basis is not None:
        ident, counts, device_id = basis
        verification.stamp(request.session, ident, counts, device_id)
    else:  # nothing to rest on: the middleware asks again at the next request
        request.session.pop(verification.BASIS_KEY, None)
        request.session.pop(verification.EPOCH_KEY, None)
    return device


def begin(request, user=None) -> dict:
    """Asks the component whether this login needs a code; keeps the answer in the session.

    Returns the decision (``tag`` normalized to ``allow``/``challenge``/``deny``). An ``allow``
    marks the session verified at once.
    """
    user = user if user is not None else request.user
    ctx, ident, counts = _asked(request, user)
    decision = engine().begin(ctx)
    tag = tag_of(decision)
    value = decision.get("value") or {}
    if tag == "allow":
        mark_verified(request, user, value.get("amr"), value.get("second_factor_at"), value.get("set_cookie"),
                      basis=(ident, counts, value.get("device_id")))
    elif tag == "challenge":
        previous = state(request, user) or {}
        same = previous.get("challenge_id") == value.get("challenge_id")
        _save_state(request, user, {
            "challenge_id": value.get("challenge_id"),
            "purpose": value.get("purpose"),
            "masked_email": value.get("masked_email"),
            "expires_at": value.get("expires_at"),
            "why": (value.get("why") or {}).get("message", ""),
            "sent": bool(previous.get("sent")) and same,
        })
    else:
        why = value.get("why") or {}
        _save_state(request, user, {"denied": True, "rule": why.get("rule", ""), "why": why.get("message", "")})
    return {"tag": tag, "value": value}


def send(request, user=None, resend=False) -> dict:
    """Sends (or resends) the code of the session's challenge, opening one first if needed.

    Returns ``{"decision": …}`` when ``begin`` answered ``allow`` or ``deny`` (nothing to send), else
    ``{"sent": code-sent}``. A challenge that ended (``rejected``) is replaced once, as the contract
    says: ``begin`` again, then send.
    """
    MfaError, _ = errors()
    user = user if user is not None else request.user
    st = state(request, user)
    if not st or not st.get("challenge_id"):
        decision = begin(request, user)
        if decision["tag"] != "challenge":
            return {"decision": decision}
        st = state(request, user)
    ctx = ctxmod.login_context(_as_user(request, user))
    try:
        sent = engine().send_code(ctx, st["challenge_id"])
    except MfaError as err:
        if getattr(err, "kind", None) != "rejected":
            raise
        decision = begin(request, user)
        if decision["tag"] != "challenge":
            return {"decision": decision}
        st = state(request, user)
        sent = engine().send_code(ctx, st["challenge_id"])
    st["sent"] = True
    _save_state(request, user, st)
    return {"sent": sent}


def verify(request, code: str, remember: bool, user=None, device=None) -> dict:
    """Verifies ``code`` for the session's challenge; on success marks the session verified.

    Raises the engine's ``MfaError``: ``rejected`` for every wrong, used, expired or unknown code
    (and for a session with no challenge: the same answer), ``throttled``, ``locked``.
    """
    MfaError, _ = errors()
    user = user if user is not None else request.user
    st = state(request, user)
    code = "".join(str(code or "").split())
    if not st or not st.get("challenge_id"):
        raise rejected()
    ctx, ident, counts = _asked(request, user)
    try:
        result = engine().verify(ctx, st["challenge_id"], code, bool(remember))
    except MfaError as err:
        # A malformed code reads like a wrong one (one answer for every code that does not verify).
        if getattr(err, "kind", None) == "invalid-input" and getattr(err, "field", None) in ("code", None):
            raise rejected() from None
        raise
    mark_verified(
        request, user, result.get("amr"), result.get("second_factor_at"), result.get("set_cookie"), device,
        basis=(ident, counts, result.get("device_id")),
    )
    if result.get("step_up"):
        request.session[STEP_UP_KEY] = result["step_up"]
    return result


REJECTED_MESSAGE = "That code is not valid. Check the newest email, or ask for a new code."


def rejected():
    """The one ``rejected`` answer (wrong, used, expired code, unknown challenge alike)."""
    MfaError, _ = errors()
    return make_error(MfaError, "rejected", REJECTED_MESSAGE)


def make_error(cls, kind, message, field=None, retry_after_seconds=None):
    try:
        return cls(kind=kind, message=message, field=field, retry_after_seconds=retry_after_seconds)
    except TypeError:
        err = cls(message)
        err.kind, err.message, err.field, err.retry_after_seconds = kind, message, field, retry_after_seconds
        return err


def unverify(request):
    """Undoes anything a failed step may have done to this request (fail closed)."""
    from .models import MfaStepEmailDevice

    setattr(request, COOKIES_ATTR, None)
    persistent = request.session.get(DEVICE_ID_SESSION_KEY, "")
    if isinstance(persistent, str) and persistent.startswith(MfaStepEmailDevice.model_label() + "/"):
        del request.session[DEVICE_ID_SESSION_KEY]
        user = getattr(request, "user", None)
        if user is not None and getattr(user, "otp_device", None) is not None:
            user.otp_device = None
    for key in (AMR_KEY, SECOND_FACTOR_AT_KEY, verification.BASIS_KEY, verification.EPOCH_KEY):
        request.session.pop(key, None)


def amr(request) -> list:
    """The methods the component vouched for in this session: ``["otp", "mfa"]`` after a code,
    ``["mfa"]`` for a trusted browser, ``[]`` when no rule asked for a second factor."""
    value = request.session.get(AMR_KEY)
    return list(value) if isinstance(value, list) else []


def verified_by_us(request) -> bool:
    """The session is verified through ``MfaStepEmailDevice`` (not another django-otp device)."""
    from .models import MfaStepEmailDevice

    persistent = request.session.get(DEVICE_ID_SESSION_KEY, "")
    return isinstance(persistent, str) and persistent.startswith(MfaStepEmailDevice.model_label() + "/")


def still_verified(request) -> bool:
    """Whether this verified session's verification still rests on the same context and
    unrevoked devices (:mod:`.verification`); exceptions propagate (the caller fails closed)."""
    return verification.holds(request.session, ctxmod.identity(request))


def on_user_logged_in(sender, request, user, **kwargs):
    """A fresh password login is asked again (a trusted browser passes at once, with a new cookie).

    A login made through a django-otp form that verified one of our devices keeps it.
    """
    if request is None or not hasattr(request, "session"):
        return
    if getattr(user, "otp_device", None) is not None:
        return
    clear(request)
    persistent = request.session.get(DEVICE_ID_SESSION_KEY, "")
    from .models import MfaStepEmailDevice

    if isinstance(persistent, str) and persistent.startswith(MfaStepEmailDevice.model_label() + "/"):
        del request.session[DEVICE_ID_SESSION_KEY]
