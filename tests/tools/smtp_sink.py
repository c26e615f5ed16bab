"""A loopback SMTP server for the email tests: saves each accepted message to <dir>/<n>.eml.

Usage: python3 smtp_sink.py <dir> <port>. Needs aiosmtpd (pip install aiosmtpd).
"""
import itertools
import os
import sys
import time

from aiosmtpd.controller import Controller

out_dir, port = sys.argv[1], int(sys.argv[2])
numbers = itertools.count(1)


class Handler:
    async def handle_DATA(self, server, session, envelope):
        n = next(numbers)
        tmp = os.path.join(out_dir, f".{n}.tmp")
        with open(tmp, "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.replace(tmp, os.path.join(out_dir, f"{n}.eml"))
        return "250 Message accepted"


controller = Controller(Handler(), hostname="127.0.0.1", port=port)
controller.start()
while True:
    time.sleep(3600)
