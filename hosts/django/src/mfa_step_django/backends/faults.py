"""Backends that fail on demand, for outage tests and the conformance kit's ``expect-failures``.

:class:`Breakable` wraps a database backend (:class:`~.database.DjangoDatabase`) or a mailer:
while ``broken`` holds an operation name (or ``"*"``), that operation raises
:class:`~mfa_step_django.backends.BackendError` ``unavailable`` as a database that went away would.
With ``lying`` set, broken reads answer "absent" instead: the fail-open mistake the conformance
kit must catch (a test proves it does). ``calls`` counts what reached the real backend.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from . import unavailable

_LIES = {
    "get": lambda *a: None,
    "list_keys": lambda *a: [],
    "increment": lambda *a: 0,
    "head": lambda *a: None,
    "commit": lambda *a: None,
    "send": lambda *a: None,
}


class Breakable:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.broken: set[str] = set()
        self.lying = False
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Breakable({self.inner!r}, broken={sorted(self.broken)!r})"

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if not callable(target) or name.startswith("_") or name in ("after_failure",):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            if name in self.broken or "*" in self.broken:
                if self.lying and name in _LIES:
                    return _LIES[name](*args)
                raise unavailable(f"injected fault: {name} is broken")
            with self._lock:
                self.calls[name] += 1
            return target(*args, **kwargs)

        return call
