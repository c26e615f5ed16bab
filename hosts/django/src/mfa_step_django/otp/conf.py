"""The django-otp face's settings, read from ``settings.MFA_STEP`` (shared with the engine).

Keys this app reads (all optional):

``CONTEXT``
    Dotted path of a callable ``(request) -> dict`` giving the signed-in user's ``org_id``,
    ``roles``, ``email`` and ``locale`` (and optionally ``user_id``; default ``str(user.pk)``).
    Default: :func:`mfa_step_django.otp.context.default_context`.
``ORG_ID``
    The organization of every user for the default context callable (default ``"default"``).
``TRUSTED_PROXIES``
    CIDRs (or single addresses) of reverse proxies whose ``X-Forwarded-For`` is believed. Empty by
    default: the client address is ``REMOTE_ADDR``, and a client's own header is never trusted.
    The entry ``"unix"`` means "an empty ``REMOTE_ADDR`` is the trusted proxy" (a proxy talking to
    the server over a unix socket, where there is no peer address).
``EXEMPT_PATHS``
    Path prefixes the middleware never asks the component about (default: ``STATIC_URL``,
    ``MEDIA_URL``): assets loaded by a page must not each cost a component call.

The system check in :mod:`mfa_step_django.otp.checks` validates them at start-up.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from django.conf import settings
from django.utils.module_loading import import_string

DEFAULT_CONTEXT = "mfa_step_django.otp.context.default_context"
#: The trusted-device cookie's name. The component writes it (name and attributes) in its
#: ``set-cookie``; this host only reads it back, so it is not a setting (a different name here
#: would only make the host read a cookie the component never sets).
DEVICE_COOKIE = "__Host-mfa-device"
UNIX_SOCKET_PROXY = "unix"
DEFAULT_ORG_ID = "default"


def mfa_settings() -> dict:
    value = getattr(settings, "MFA_STEP", None)
    return value if isinstance(value, dict) else {}


def org_id() -> str:
    return str(mfa_settings().get("ORG_ID", DEFAULT_ORG_ID))


def device_cookie() -> str:
    return DEVICE_COOKIE


def context_callable():
    """The configured context callable (import errors propagate: the check reports them)."""
    return _import(str(mfa_settings().get("CONTEXT", DEFAULT_CONTEXT)))


@lru_cache(maxsize=8)
def _import(path: str):
    return import_string(path)


def _proxy_entries() -> tuple:
    return tuple(str(e).strip() for e in (mfa_settings().get("TRUSTED_PROXIES", ()) or ()))


def trusted_proxies() -> tuple:
    """The trusted proxy networks; an invalid entry raises ``ValueError`` (the check reports it)."""
    return _networks(tuple(e for e in _proxy_entries() if e.lower() != UNIX_SOCKET_PROXY))


def trusts_unix_socket() -> bool:
    """``"unix"`` is in ``TRUSTED_PROXIES``: an empty ``REMOTE_ADDR`` is the trusted proxy."""
    return any(e.lower() == UNIX_SOCKET_PROXY for e in _proxy_entries())


@lru_cache(maxsize=8)
def _networks(entries: tuple) -> tuple:
    networks = []
    for entry in entries:
        net = ipaddress.ip_network(entry, strict=False)
        # A mapped network (::ffff:10.0.0.0/104) is the IPv4 network it maps: peers are read as IPv4.
        if net.version == 6 and net.prefixlen >= 96 and net.network_address.ipv4_mapped is not None:
            net = ipaddress.ip_network(f"{net.network_address.ipv4_mapped}/{net.prefixlen - 96}")
        networks.append(net)
    return tuple(networks)


def exempt_paths() -> tuple:
    configured = mfa_settings().get("EXEMPT_PATHS")
    if configured is not None:
        return tuple(str(p) for p in configured)
    prefixes = []
    for name in ("STATIC_URL", "MEDIA_URL"):
        value = getattr(settings, name, None)
        if value and str(value) not in ("/", ""):
            prefix = str(value)
            if not prefix.startswith(("/", "http://", "https://")):
                prefix = "/" + prefix
            prefixes.append(prefix)
    return tuple(prefixes)
