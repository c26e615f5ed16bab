"""``manage.py mfa_step_conformance --kit conformance.wasm``: runs the host conformance kit over
this project's database (writes under ``conformance:<run-id>:`` keys and the organization
``conformance-<run-id>``); exits 1 on any finding."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from mfa_step_django.conformance import kit_engine, run_kit


class Command(BaseCommand):
    help = "Run the mfa-step host conformance kit over this project's store and audit trail."

    def add_arguments(self, parser):  # noqa: ANN001, ANN201
        parser.add_argument("--kit", required=True, help="the kit component (mfa-step component conformance --out FILE)")
        parser.add_argument("--instances", type=int, default=8)
        parser.add_argument("--rounds", type=int, default=25)

    def handle(self, *args, **options):  # noqa: ANN002, ANN003, ANN201
        report = run_kit(kit_engine(options["kit"]), instances=options["instances"], rounds=options["rounds"])
        if not report.ok:
            self.stderr.write(json.dumps(report.findings(), indent=2))
            raise CommandError(f"mfa-step conformance: {len(report.findings())} findings (run {report.run_id})")
        self.stdout.write(f"mfa-step conformance: no findings (run {report.run_id})")
