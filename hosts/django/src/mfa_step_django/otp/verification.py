"""What a session's verification was based on, and when it stops holding.

The component decides once per sign-in (``begin``, then maybe ``verify``); django-otp then keeps
the session verified for its whole life. Two things can make that decision stale, and this module
notices both on every request of a session verified by ``MfaStepEmailDevice``:

- **The context changed.** The decision was made for the org and roles the context callable gave
  at that time (a user with no MFA rule was let in with ``amr == []``). At verification the session
  keeps a hash of ``(user_id, org_id, roles)``; when the callable's answer differs (the user became
  an org admin, moved org), the verification is dropped and the component is asked again. This is
  cache invalidation, not a policy decision: whether the new roles need a code is the component's
  answer to the new ``begin``.
- **A device was revoked through this package** (one device, all of them, an admin reset, a
  credential change). :class:`~.models.MfaStepRevocationEpoch` counts revocations per user
  (``device_id == ""``) and per device. A session remembers the counts it was verified under (read
  *before* the component was asked, so a revocation racing the verification is never missed) and
  the device that verified it (a trusted browser, or the one remembered at ``verify``); when the
  user's count or that device's count moved, the verification is dropped.

Limit: revocations made outside this package (another host of the same component, ``mfa-step
serve``, a direct engine call) do not move the counts; they are seen at the next sign-in.

```text
 verified session ─▶ request ─▶ basis hash same? ─no─▶ drop verification ─▶ begin again
                                     │yes
                                     ▼
                         epochs (user, device) same? ─no─▶ drop verification ─▶ begin again
                                     │yes
                                     ▼
                                  verified
```
"""

from __future__ import annotations

import hashlib
import json

from django.db import IntegrityError
from django.db.models import F

BASIS_KEY = "mfa_step_basis"
EPOCH_KEY = "mfa_step_epochs"


def _canon(value) -> str:
    """An org or user id as the component compares it (``ID_CASE = "fold"`` lower-cases ids)."""
    from . import conf

    settings = conf.mfa_settings()
    case = settings.get("ID_CASE") or (settings.get("CONFIG") or {}).get("id_case") or "exact"
    value = str(value)
    return value.lower() if str(case).lower() == "fold" else value


def basis(ident: dict) -> str:
    """The hash of what the component's decision depended on: the user, the org, the roles."""
    data = json.dumps([ident["user_id"], ident["org_id"], sorted(set(ident["roles"]))], separators=(",", ":"))
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def snapshot(ident: dict) -> dict:
    """The user's revocation counts now: ``{"": all, device_id: n, ...}`` (absent = 0)."""
    from .models import MfaStepRevocationEpoch

    rows = MfaStepRevocationEpoch.objects.filter(org_id=_canon(ident["org_id"]), user_id=_canon(ident["user_id"]))
    return {r.device_id: int(r.epoch) for r in rows}


def stamp(session, ident: dict, counts: dict, device_id) -> None:
    """Records, in the session being verified, what the verification rests on."""
    device_id = str(device_id or "")
    session[BASIS_KEY] = basis(ident)
    session[EPOCH_KEY] = {
        "all": int(counts.get("", 0)),
        "device": device_id,
        "device_epoch": int(counts.get(device_id, 0)) if device_id else 0,
    }


def holds(session, ident: dict) -> bool:
    """Whether a session's verification still rests on the same context and unrevoked devices.

    A session verified before this was recorded (no basis) does not hold: it is asked again.
    """
    stamped = session.get(EPOCH_KEY)
    if session.get(BASIS_KEY) != basis(ident) or not isinstance(stamped, dict):
        return False
    counts = snapshot(ident)
    if int(counts.get("", 0)) != stamped.get("all"):
        return False
    device_id = stamped.get("device") or ""
    return not device_id or int(counts.get(device_id, 0)) == stamped.get("device_epoch")


def bump(org_id: str, user_id: str, device_id: str = "") -> None:
    """Counts one revocation (of ``device_id``, or of all the user's devices when empty).

    Call it after the component revoked: a session verified meanwhile read the older count before
    asking the component, so it is dropped too.
    """
    from .models import MfaStepRevocationEpoch

    key = {"org_id": _canon(org_id), "user_id": _canon(user_id), "device_id": str(device_id or "")}
    if MfaStepRevocationEpoch.objects.filter(**key).update(epoch=F("epoch") + 1):
        return
    try:
        MfaStepRevocationEpoch.objects.create(**key, epoch=1)
    except IntegrityError:  # created meanwhile by a concurrent revocation: count ours on it
        MfaStepRevocationEpoch.objects.filter(**key).update(epoch=F("epoch") + 1)


def restamp(request, ident: dict) -> None:
    """Keeps the acting session verified after its own user's revocation (an owner revoking their
    other browsers does not sign themselves out). Only for a session that is verified and holds a
    stamp for this same user."""
    session = request.session
    stamped = session.get(EPOCH_KEY)
    if not isinstance(stamped, dict) or session.get(BASIS_KEY) != basis(ident):
        return
    user = getattr(request, "user", None)
    if user is None or not getattr(user, "is_verified", lambda: False)():
        return
    stamp(session, ident, snapshot(ident), stamped.get("device"))
