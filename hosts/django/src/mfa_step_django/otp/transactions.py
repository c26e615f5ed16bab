"""Keeps the step's views out of ``ATOMIC_REQUESTS``.

The engine refuses to run inside a caller's transaction on its database alias (its counters must
apply at once and never roll back: ``wit/store.wit``), so a project with ``ATOMIC_REQUESTS = True``
would see every step view fail closed. These views write nothing of their own that needs the
request's transaction, so they opt out of it on every alias, as Django allows per view.
"""

from django.conf import settings
from django.db import transaction


def outside_atomic_requests(view):
    for alias in getattr(settings, "DATABASES", {}) or {"default": None}:
        view = transaction.non_atomic_requests(using=alias)(view)
    return view
