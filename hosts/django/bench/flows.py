"""One second-factor login each way, as the benchmarks time it: mfa-step-django (the component
through wasmtime-py) and django-otp's own EmailDevice, both for a user seen for the first time.

- mfa-step: `begin` (opens the challenge: policy, throttles, an audit record), `send-code`
  (renders the branded email, counts the send, an audit record), `verify` (the code, single use,
  an audit record); the code read from the mail stand-in.
- django-otp: `generate_challenge` (a token on the device row, the email rendered from its
  template) and `verify_token` (the token checked and cleared, throttling counted).

Each step is timed on its own when `timings` (a dict of lists) is given."""

import re
import time

from django.contrib.auth.models import User
from django_otp.plugins.otp_email.models import EmailDevice

from mfa_step_django.engine import get_engine, login_context

from .mailbox import last_to

UA = "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0"
CODE = re.compile(r"(?m)^\s*(\d{6,9})\s*$")


def _timed(timings, name, fn):
    if timings is None:
        return fn()
    t = time.perf_counter()
    out = fn()
    timings.setdefault(name, []).append(time.perf_counter() - t)
    return out


def mfa_step_login(user: str, timings=None) -> None:
    engine = get_engine()
    email = f"{user}@clinic.example"
    ctx = login_context(
        user_id=user, org_id="bench", email=email, roles=["provider"], locale="en", ip="203.0.113.7", user_agent=UA
    )
    decision = _timed(timings, "mfa-step begin", lambda: engine.begin(ctx))
    if decision["tag"] != "challenge":
        raise RuntimeError(f"expected a challenge, got {decision['tag']}")
    cid = decision["value"]["challenge_id"]
    _timed(timings, "mfa-step send-code", lambda: engine.send_code(ctx, cid))
    code = CODE.search(last_to(email).body).group(1)
    _timed(timings, "mfa-step verify", lambda: engine.verify(ctx, cid, code, False))


def django_otp_login(user: str, timings=None) -> None:
    account, _ = User.objects.get_or_create(username=user, defaults={"email": f"{user}@clinic.example"})
    device, _ = EmailDevice.objects.get_or_create(user=account, name="email", defaults={"confirmed": True})
    _timed(timings, "django-otp generate_challenge", device.generate_challenge)
    token = device.token
    if not _timed(timings, "django-otp verify_token", lambda: device.verify_token(token)):
        raise RuntimeError("django-otp refused its own token")
