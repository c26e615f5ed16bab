"""``manage.py mfa_step_audit_export --org ORG --out FILE.jsonl``: writes an organization's audit
trail as JSON Lines, each record's line byte for byte, in ``seq`` order, so that
``mfa-step audit verify --audit FILE.jsonl --data-dir D`` (D holding ``hmac.key``, or
``MFA_STEP_HMAC_KEY`` set) checks the chain and the seals. ``--org`` may repeat; without it every
organization is written (streams one after another). The file is created with mode 0600."""

from __future__ import annotations

import os

from django.core.management.base import BaseCommand, CommandError

from mfa_step_django.backends.database import DjangoDatabase
from mfa_step_django.engine import _settings
from mfa_step_django.models import AuditRecord


def export_jsonl(path: str, orgs: list[str] | None = None, alias: str = "default") -> int:
    """Writes the trail of ``orgs`` (all when empty) to ``path``; returns the number of lines."""
    db = DjangoDatabase(alias)
    if not orgs:
        orgs = sorted(set(AuditRecord.objects.using(alias).values_list("org_id", flat=True)))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    count = 0
    with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
        for org in orgs:
            for line in db.records(org).values_list("line", flat=True).iterator():
                f.write(line)
                f.write("\n")
                count += 1
    return count


class Command(BaseCommand):
    help = "Export mfa-step audit trails as JSONL for `mfa-step audit verify`."

    def add_arguments(self, parser):  # noqa: ANN001, ANN201
        parser.add_argument("--org", action="append", default=[], help="organization id (repeatable; default: all)")
        parser.add_argument("--out", required=True, help="the JSONL file to write")
        parser.add_argument("--database", default=None)

    def handle(self, *args, **options):  # noqa: ANN002, ANN003, ANN201
        alias = options["database"] or _settings().get("DATABASE", "default")
        try:
            n = export_jsonl(options["out"], options["org"], alias)
        except OSError as e:
            raise CommandError(f"cannot write {options['out']}: {e.strerror}") from None
        self.stdout.write(f"mfa-step: wrote {n} records to {options['out']}")
