"""The ``mailer`` import through Django's email backend (whatever SMTP or ESP the project set in
``EMAIL_BACKEND``): one ``EmailMultiAlternatives`` per message, the text body with the HTML part as
an alternative. The From address is ``MFA_STEP["FROM_EMAIL"]``, else ``DEFAULT_FROM_EMAIL``; the
display name is the message's ``sender-name``.

- ``SMTPRecipientsRefused`` -> ``rejected-recipient``; any other failure -> ``unavailable`` (the
  component then fails closed: no code is sent, nothing is granted).
- A message carries a one-time code: neither its bodies nor its subject are ever logged; a failure
  is reported by the exception's class only.
"""

from __future__ import annotations

import smtplib
from email.utils import formataddr, parseaddr
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives

from . import BackendError


def _from_address(sender_name: str | None) -> str:
    conf = getattr(settings, "MFA_STEP", {}) or {}
    address = conf.get("FROM_EMAIL") or settings.DEFAULT_FROM_EMAIL
    name, addr = parseaddr(address)
    if sender_name:
        name = sender_name
    return formataddr((name, addr)) if name else addr


class DjangoMailer:
    """Sends through ``django.core.mail`` (``connection``: a backend instance, or the default)."""

    def __init__(self, connection: Any = None) -> None:
        self.connection = connection

    def __repr__(self) -> str:
        return "DjangoMailer()"

    def send(self, message: dict) -> None:
        for field in ("to", "subject"):
            if "\r" in message[field] or "\n" in message[field]:
                raise BackendError("unavailable", f"refused message: its {field} holds a line break")
        try:
            email = EmailMultiAlternatives(
                subject=message["subject"],
                body=message["text"],
                from_email=_from_address(message.get("sender_name")),
                to=[message["to"]],
                connection=self.connection,
            )
            email.attach_alternative(message["html"], "text/html")
            sent = email.send(fail_silently=False)
        except smtplib.SMTPRecipientsRefused:
            raise BackendError("rejected-recipient", "the mail service refused the recipient") from None
        except Exception as e:  # noqa: BLE001 - every other failure is `unavailable`
            raise BackendError("unavailable", f"the mail service failed ({type(e).__name__})") from None
        if sent != 1:
            raise BackendError("unavailable", "the mail service did not accept the message")
