"""A mail backend for the benchmarks: keeps each recipient's last message only (bounded memory
over a long run), so that a benchmark reads the code the component sent."""

import threading

from django.core.mail.backends.base import BaseEmailBackend

_last: dict[str, object] = {}
_lock = threading.Lock()


class Backend(BaseEmailBackend):
    def send_messages(self, email_messages):
        with _lock:
            for message in email_messages:
                for to in message.to:
                    _last[to] = message
        return len(email_messages)


def last_to(address: str):
    with _lock:
        return _last.get(address)
