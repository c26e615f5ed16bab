"""Sets the component's ``Set-Cookie`` values on a Django response, unchanged.

Django emits cookies from ``response.cookies`` (a ``SimpleCookie``); a morsel whose output is the
component's exact header value keeps its attributes (``Secure``, ``HttpOnly``, ``SameSite``,
``Path``, ``Max-Age``) as the component wrote them, while the test client and Django's handlers
still see a normal cookie (name and value parsed from it).
"""

from __future__ import annotations

from http.cookies import Morsel


class RawMorsel(Morsel):
    """A morsel that renders as the exact ``Set-Cookie`` value it was made from."""

    def __init__(self, raw: str):
        super().__init__()
        first = raw.split(";", 1)[0]
        name, _, value = first.partition("=")
        self.set(name.strip(), value.strip(), value.strip())
        self._raw = raw

    def OutputString(self, attrs=None):  # noqa: N802 (the http.cookies name)
        return self._raw

    def __repr__(self):  # never the token
        return f"<RawMorsel {self.key}=…>"


def apply(response, set_cookies) -> None:
    for raw in set_cookies or ():
        if not isinstance(raw, str) or "=" not in raw.split(";", 1)[0] or "\n" in raw or "\r" in raw:
            raise ValueError("the component returned a malformed set-cookie")
        morsel = RawMorsel(raw)
        response.cookies[morsel.key] = morsel
