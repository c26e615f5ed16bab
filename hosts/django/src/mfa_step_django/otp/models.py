"""``MfaStepEmailDevice``: the django-otp device whose every decision is the component's.

The row holds no secret and no state of its own: no code, no expiry, no counter, no throttle. It
exists so that django-otp's machinery works unchanged (``django_otp.login``, ``OTPMiddleware``,
``otp_required``, ``user.is_verified()``, the admin). Each method asks the component through
:mod:`mfa_step_django.otp.flow`, with the context of the request being served (kept by
``TrustedDeviceMiddleware`` in a context variable); the pending challenge lives in that request's
session, because a challenge belongs to one browser on one network.

- ``generate_challenge()`` opens or resumes the challenge and sends the code (counts against the
  send window, like every send).
- ``verify_token(token)`` verifies through the component; ``True`` only on its success. A
  ``throttled`` or ``locked`` answer is ``False`` too, kept in ``last_error`` for the caller.
- ``verify_is_allowed()`` / ``generate_is_allowed()`` report the component's ``status`` (lock,
  wrong-guess delay, send window).
- The device is always ``confirmed``: its one "confirmation" is the component's, per login.
  ``for_user`` and ``save`` keep it so, and the admin does not offer the field (an unconfirmed row
  would make django-otp drop every verification the component granted).

``MfaStepRevocationEpoch`` counts, per user (the component's org and user ids) and per device, the
revocations made through this package; see :mod:`mfa_step_django.otp.verification`.
"""

from __future__ import annotations

import datetime

from django.db import models
from django.utils.translation import gettext_lazy as _
from django_otp.models import Device, GenerateNotAllowed, VerifyNotAllowed

from . import context as ctxmod
from . import flow


def _when(unix_seconds):
    if unix_seconds is None:
        return None
    return datetime.datetime.fromtimestamp(int(unix_seconds), tz=datetime.timezone.utc)


class MfaStepEmailDevice(Device):
    """A user's email second factor, decided by the mfa-step component (one per user)."""

    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("mfa-step email device")
        verbose_name_plural = _("mfa-step email devices")
        constraints = [models.UniqueConstraint(fields=["user"], name="mfa_step_otp_one_device_per_user")]

    last_error = None

    @classmethod
    def for_user(cls, user):
        device, _created = cls.objects.get_or_create(user=user, defaults={"name": "Email", "confirmed": True})
        if not device.confirmed:
            cls.objects.filter(pk=device.pk).update(confirmed=True)
            device.confirmed = True
        return device

    def save(self, *args, **kwargs):
        self.confirmed = True  # see the module doc: never unconfirmed
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "confirmed" not in update_fields:
            kwargs["update_fields"] = [*update_fields, "confirmed"]
        super().save(*args, **kwargs)

    def _request(self):
        request = ctxmod.request_or_raise()
        current = getattr(request, "user", None)
        if current is not None and getattr(current, "is_authenticated", False) and current.pk != self.user_id:
            # Another signed-in user's device: never send to, count against or verify it.
            MfaError, _u = flow.errors()
            raise flow.make_error(MfaError, "forbidden", "This device belongs to another user.")
        return request

    def _status(self):
        request = self._request()
        return flow.engine().status(ctxmod.login_context(flow._as_user(request, self.user)))

    def generate_is_allowed(self):
        status = self._status()
        if status.get("locked"):
            return False, {"error_message": str(_("Too many wrong codes: ask an administrator to unlock you."))}
        if status.get("next_send_at") is not None:
            return False, {
                "reason": GenerateNotAllowed.COOLDOWN_DURATION_PENDING,
                "next_generation_at": _when(status["next_send_at"]),
            }
        return True, None

    def generate_challenge(self):
        request = self._request()
        outcome = flow.send(request, self.user)
        if "sent" in outcome:
            st = flow.state(request, self.user) or {}
            return str(_("We emailed a code to %(address)s.") % {"address": st.get("masked_email", "")})
        decision = outcome["decision"]
        if decision["tag"] == "allow":
            return str(_("No code is needed for this sign-in."))
        MfaError, _u = flow.errors()
        why = (decision["value"].get("why") or {}).get("message") or str(_("This sign-in is refused."))
        raise flow.make_error(MfaError, "forbidden", why)

    def verify_is_allowed(self):
        status = self._status()
        if status.get("locked"):
            return False, {"error_message": str(_("Too many wrong codes: ask an administrator to unlock you."))}
        if status.get("verify_blocked_until") is not None:
            return False, {
                "reason": VerifyNotAllowed.N_FAILED_ATTEMPTS,
                "failure_count": int(status.get("consecutive_failures") or 0),
                "locked_until": _when(status["verify_blocked_until"]),
            }
        return True, None

    def verify_token(self, token, remember_device=None):
        """Verifies ``token`` through the component; ``remember_device`` defaults to the request's
        ``remember`` form field (``on``/``true``/``1``)."""
        MfaError, _u = flow.errors()
        request = self._request()
        self.last_error = None
        if remember_device is None:
            remember_device = str(request.POST.get("remember", "")).lower() in ("on", "true", "1")
        try:
            flow.verify(request, token, remember_device, user=self.user, device=self)
        except MfaError as err:
            if getattr(err, "kind", None) in ("rejected", "throttled", "locked", "invalid-input"):
                self.last_error = err
                return False
            raise
        return True


class MfaStepRevocationEpoch(models.Model):
    """How many times this package revoked a user's devices (``device_id == ""``: all of them) or
    one device (``device_id``). Only ever incremented; a session remembers the values it was
    verified under, and a moved value ends that verification (see :mod:`.verification`)."""

    org_id = models.CharField(max_length=128)
    user_id = models.CharField(max_length=128)
    device_id = models.CharField(max_length=128, blank=True, default="")
    epoch = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = _("mfa-step revocation epoch")
        constraints = [
            models.UniqueConstraint(fields=["org_id", "user_id", "device_id"], name="mfa_step_otp_one_epoch_per_device")
        ]

    def __str__(self):
        return f"{self.org_id}/{self.user_id}/{self.device_id or '*'}: {self.epoch}"
