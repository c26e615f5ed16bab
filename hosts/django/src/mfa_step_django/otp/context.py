"""What the component is told about a request: the login-context and the actor.

Guarantees:

- The client address is ``REMOTE_ADDR`` unless that peer is one of ``MFA_STEP["TRUSTED_PROXIES"]``;
  then ``X-Forwarded-For`` is read right to left and the first hop that is not itself a trusted proxy
  is the client. A client's own header is never believed by default (a client cannot pick the
  network a trusted browser is compared against).
- An IPv4-mapped IPv6 address (``::ffff:10.0.0.2``, what a dual-stack socket reports for an IPv4
  peer) is read as the IPv4 address it maps, both to match ``TRUSTED_PROXIES`` and as the address
  given to the component (a browser's network is the same whichever socket family it came in on).
- ``"unix"`` in ``TRUSTED_PROXIES`` means "an empty ``REMOTE_ADDR`` is the trusted proxy" (a proxy
  on a unix socket, where the server has no peer address); without it an empty peer is never a
  proxy, and the component refuses a login with no address (fail closed).
- Browser traits are bounded to the component's 512 bytes; only what the host observes is passed
  (the component derives family and platform from the user agent itself).
- The org, roles, email and locale come from the configured context callable: this module decides
  nothing about policy; it only builds the record.
- The request being served is kept in a context variable by the middleware, so that a django-otp
  ``Device`` (whose API has no request argument) can build the context of the current request.
"""

from __future__ import annotations

import contextvars
import ipaddress
import re

from . import conf

#: The request being served (set by ``TrustedDeviceMiddleware``).
current_request: contextvars.ContextVar = contextvars.ContextVar("mfa_step_request", default=None)

MAX_TRAIT_BYTES = 512
_LANG = re.compile(r"^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$")


class NoRequest(RuntimeError):
    """A device operation ran outside a request served through ``TrustedDeviceMiddleware``."""


def request_or_raise(request=None):
    request = request if request is not None else current_request.get()
    if request is None:
        raise NoRequest(
            "mfa-step needs the current request: add "
            "'mfa_step_django.otp.middleware.TrustedDeviceMiddleware' to MIDDLEWARE"
        )
    return request


def _strip_zone(ip: str) -> str:
    return ip.split("%", 1)[0].strip()


def _parse(ip: str):
    try:
        addr = ipaddress.ip_address(_strip_zone(ip))
    except ValueError:
        return None
    # ::ffff:a.b.c.d is the IPv4 peer a dual-stack socket saw: compare and report it as IPv4.
    mapped = getattr(addr, "ipv4_mapped", None)
    return mapped if mapped is not None else addr


def _is_trusted(addr, networks) -> bool:
    return addr is not None and any(addr.version == n.version and addr in n for n in networks)


def client_ip(request) -> str:
    """The client's address as this host may believe it (see the module doc)."""
    peer_text = _strip_zone(request.META.get("REMOTE_ADDR", "") or "")
    peer = _parse(peer_text)
    networks = conf.trusted_proxies()
    from_unix_proxy = peer_text == "" and conf.trusts_unix_socket()
    if not from_unix_proxy and (not networks or not _is_trusted(peer, networks)):
        return str(peer) if peer is not None else peer_text
    hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
    for hop in reversed(hops):
        addr = _parse(hop)
        if addr is None:
            # A hop a trusted proxy would not have written: believe nothing further left.
            break
        if not _is_trusted(addr, networks):
            return str(addr)
    return str(peer) if peer is not None else peer_text


def _bounded(value: str) -> str:
    data = value.encode("utf-8")[:MAX_TRAIT_BYTES]
    return data.decode("utf-8", errors="ignore")


def browser_traits(request) -> dict:
    lang = request.META.get("HTTP_ACCEPT_LANGUAGE", "").split(",")[0].split(";")[0].strip()
    return {
        "user_agent": _bounded(request.META.get("HTTP_USER_AGENT", "") or ""),
        "browser_family": None,
        "browser_major": None,
        "platform": None,
        "language": lang if _LANG.match(lang) else None,
        "time_zone": None,
        "screen_class": None,
    }


def device_cookie_value(request):
    value = request.COOKIES.get(conf.device_cookie())
    return value or None


def default_context(request) -> dict:
    """The default context callable: org from ``MFA_STEP["ORG_ID"]``, roles from the user.

    Roles: the names of the user's groups, plus ``org-admin`` for staff and ``platform-admin`` for
    superusers (the component authorizes admin calls from these). Email: ``user.email``. Locale: the
    request's active language (``LocaleMiddleware``) if any.
    """
    user = request.user
    roles = [g.name for g in user.groups.all()] if hasattr(user, "groups") else []
    if getattr(user, "is_staff", False):
        roles.append("org-admin")
    if getattr(user, "is_superuser", False):
        roles.append("platform-admin")
    return {
        "org_id": conf.org_id(),
        "roles": sorted(set(roles)),
        "email": getattr(user, "email", "") or "",
        "locale": getattr(request, "LANGUAGE_CODE", None),
    }


def identity(request) -> dict:
    """The context callable's answer for this request's user, checked and normalized:
    ``{"user_id", "org_id", "email", "roles", "locale"}``."""
    info = conf.context_callable()(request)
    if not isinstance(info, dict) or not isinstance(info.get("org_id"), str):
        raise TypeError("the MFA_STEP CONTEXT callable must return a dict with a str org_id")
    roles = info.get("roles") or []
    return {
        "user_id": str(info.get("user_id") or request.user.pk),
        "org_id": info["org_id"],
        "email": str(info.get("email") or ""),
        "roles": [str(r) for r in roles],
        "locale": info.get("locale") or None,
    }


def login_context(request, ident=None) -> dict:
    """The ``login-context`` record of this request's signed-in user (its ``repr`` hides the cookie);
    ``ident`` is :func:`identity` when the caller already has it."""
    from mfa_step_django.engine import login_context as build

    ident = ident if ident is not None else identity(request)
    traits = browser_traits(request)
    return build(
        user_id=ident["user_id"],
        org_id=ident["org_id"],
        email=ident["email"],
        roles=ident["roles"],
        locale=ident["locale"],
        ip=client_ip(request),
        user_agent=traits.pop("user_agent"),
        cookie=device_cookie_value(request),
        **traits,
    )


def actor(request, ident=None) -> dict:
    """The ``actor`` record of this request's signed-in user."""
    ident = ident if ident is not None else identity(request)
    return {
        "user_id": ident["user_id"],
        "org_id": ident["org_id"],
        "roles": ident["roles"],
        "ip": client_ip(request),
        "user_agent": _bounded(request.META.get("HTTP_USER_AGENT", "") or ""),
    }
