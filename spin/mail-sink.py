#!/usr/bin/env python3
"""A stand-in for the mail API, for trying mfa-step on Spin locally: prints every email it is sent.

    python3 spin/mail-sink.py [PORT] [TOKEN]    (defaults: 8025, dev-token)

It accepts what the Spin adapter sends (POST, JSON {to, sender_name, subject, html, text},
Authorization: Bearer TOKEN), prints the recipient, the subject and the plain-text part (where the
code is), and answers 202. A wrong token gets 401. Loopback only; never use it for real mail.
"""
import http.server
import json
import sys

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 8025
TOKEN = sys.argv[2] if len(sys.argv) > 2 else "dev-token"


class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.send_response(401)
            self.end_headers()
            return
        length = int(self.headers.get("Content-Length", "0"))
        message = json.loads(self.rfile.read(length))
        print(f"--- to {message['to']} from {message['sender_name']!r}: {message['subject']}")
        print(message["text"], flush=True)
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    print(f"mail sink on http://127.0.0.1:{PORT} (token {TOKEN})", flush=True)
    http.server.HTTPServer(("127.0.0.1", PORT), Sink).serve_forever()
