"""Helpers of the login-flow tests: users, a password login through the test client, codes from
``mail.outbox``, the device cookie."""

from __future__ import annotations

import re

from django.contrib.auth.models import Group, User
from django.core import mail
from django.test import Client

PASSWORD = "correct horse battery staple"
DEVICE_COOKIE = "__Host-mfa-device"


def make_user(username="ana", *, roles=("provider",), staff=False, email=None):
    """A user whose default context roles are ``roles`` (group names; ``provider`` requires MFA)."""
    user = User.objects.create_user(username, email or f"{username}@clinic.example", PASSWORD)
    user.is_staff = staff
    user.save()
    for role in roles:
        group, _ = Group.objects.get_or_create(name=role)
        user.groups.add(group)
    return user


def client(ip="203.0.113.5", cookie=None, **kwargs) -> Client:
    c = Client(REMOTE_ADDR=ip, HTTP_USER_AGENT="Mozilla/5.0 (X11; Linux x86_64) Firefox/131.0", **kwargs)
    if cookie:
        c.cookies[DEVICE_COOKIE] = cookie
    return c


def password_login(c: Client, username="ana"):
    r = c.post("/accounts/login/", {"username": username, "password": PASSWORD})
    assert r.status_code == 302, r.content
    return r


def codes_to(address: str) -> list[str]:
    out = []
    for m in mail.outbox:
        if address in m.to:
            found = re.search(r"(?m)^\s*(\d{6,9})\s*$", m.body)
            assert found, "no code in the message"
            out.append(found.group(1))
    return out


def last_code(address: str) -> str:
    codes = codes_to(address)
    assert codes, f"no mail to {address}"
    return codes[-1]


def device_cookie(c: Client) -> str | None:
    morsel = c.cookies.get(DEVICE_COOKIE)
    return morsel.value if morsel is not None and morsel.value else None


def wrong(code: str) -> str:
    return "".join(str((int(d) + 1) % 10) for d in code)


def verified_login(c: Client, username="ana", remember=False):
    """Password, the code page (sends the code), the code: a verified session."""
    password_login(c, username)
    r = c.get("/mfa/?next=/protected/")
    assert r.status_code == 200, r.content
    data = {"code": last_code(f"{username}@clinic.example"), "next": "/protected/"}
    if remember:
        data["remember"] = "on"
    r = c.post("/mfa/verify", data)
    assert r.status_code == 302 and r["Location"] == "/protected/", (r.status_code, r.content[:300])
    return r
