"""Credential changes: a changed password (or a reset second factor) revokes the user's trusted
browsers (``wit/admin.wit`` ``credential-changed``; the README's trusted-device rules).

- A password set through Django (``user.set_password(...)`` then ``save()``: the password change
  and reset views and forms, the admin's password form, ``changepassword``) is reported as
  ``password-changed`` once the save is committed (``transaction.on_commit``: the engine refuses to
  run inside a caller's transaction, and a rolled-back change must not be reported).
- Anything else that changes a credential (an email change made outside ``api/change-email``, an
  MFA reset, a password written with ``QuerySet.update``) must call :func:`credential_changed`
  itself.
- The actor is the user themself (the component allows the user, an org admin of the same org and
  a platform admin; the user is the one actor always allowed, whoever made the change), with the
  current request's address when there is one.
- Every session of the user verified before the change stops being verified at its next request
  (:mod:`.verification`), except the request's own session when it is the user's (Django keeps
  the session that changed its own password signed in, and so does this).
- A failure (the component ``unavailable``) is raised to the caller, and logged: the password is
  already saved, so the trusted browsers are not revoked until it is reported again. Never silent.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.http import HttpRequest

from . import context as ctxmod
from . import flow, verification

log = logging.getLogger("mfa_step_django.otp")

CHANGES = ("password-changed", "mfa-reset")


def credential_changed(user, change: str = "password-changed", request=None) -> int:
    """Reports a credential change of ``user`` to the component, which revokes every trusted
    browser of the user; ends the verification of the user's other sessions. Returns how many
    devices were revoked.

    ``change`` is ``"password-changed"`` or ``"mfa-reset"``. ``request`` defaults to the request
    being served (if any); without one the context callable gets a bare ``HttpRequest`` whose
    ``user`` is ``user``.
    """
    if change not in CHANGES:
        raise ValueError(f"change must be one of {CHANGES}")
    current = request if request is not None else ctxmod.current_request.get()
    if current is not None:
        r = flow._as_user(current, user)
    else:
        r = HttpRequest()
        r.user = user
    ident = ctxmod.identity(r)
    actor = ctxmod.actor(r, ident)
    try:
        revoked = flow.engine().credential_changed(actor, ident["org_id"], ident["user_id"], change)
    except Exception as exc:
        log.error("mfa_step credential-changed (%s) was not recorded: %s; the user's trusted browsers "
                  "stay trusted until it is reported again", change, type(exc).__name__)
        raise
    verification.bump(ident["org_id"], ident["user_id"])
    if current is not None and r is current and hasattr(current, "session"):
        verification.restamp(current, ident)
    return int(revoked or 0)


def on_user_saved(sender, instance, created=False, raw=False, using=None, **kwargs):
    """``post_save`` of the user model: ``set_password`` leaves the new password in ``_password``
    until ``save()`` returns, so a saved, not created, user with it set changed their password."""
    if created or raw or getattr(instance, "_password", None) is None:
        return
    request = ctxmod.current_request.get()
    transaction.on_commit(lambda: credential_changed(instance, "password-changed", request), using=using)
