"""``manage.py mfa_step_sweep``: deletes expired values and counters (expired rows are already
absent to every reader; this only frees the space). Safe to run at any time, e.g. from cron."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand

from mfa_step_django.backends.database import DjangoDatabase
from mfa_step_django.engine import _settings


class Command(BaseCommand):
    help = "Delete expired mfa-step values and counters."

    def add_arguments(self, parser):  # noqa: ANN001, ANN201
        parser.add_argument("--database", default=None, help="the alias (default: MFA_STEP['DATABASE'] or 'default')")
        parser.add_argument("--now", type=int, default=None, help="Unix seconds to sweep as of (default: now)")

    def handle(self, *args, **options):  # noqa: ANN002, ANN003, ANN201
        alias = options["database"] or _settings().get("DATABASE", "default")
        now = options["now"] if options["now"] is not None else int(time.time())
        gone = DjangoDatabase(alias).sweep(now)
        self.stdout.write(f"mfa-step: swept {gone} expired rows from {alias!r}")
