"""Checks a received email the way a strict client would, and prints what it found as JSON.

Usage: python3 check_email.py <message.eml>. Needs html5lib (pip install html5lib).
Prints {"content_type", "headers": {...}, "text", "html", "html_errors": [...]}; html_errors lists the
parse errors of html5lib in strict mode (empty when the HTML is well formed).
"""
import email
import email.policy
import json
import sys

import html5lib

with open(sys.argv[1], "rb") as f:
    msg = email.message_from_binary_file(f, policy=email.policy.default)

parts = {}
for part in msg.walk():
    if part.get_content_maintype() == "text":
        parts[part.get_content_type()] = part.get_content()

html = parts.get("text/html", "")
parser = html5lib.HTMLParser(strict=False)
parser.parse(html)
errors = [f"{pos}: {code} {data}" for pos, code, data in parser.errors]

print(json.dumps({
    "content_type": msg.get_content_type(),
    "headers": {k: str(msg[k]) for k in ("From", "To", "Subject", "Message-ID", "Date", "Auto-Submitted") if msg[k]},
    "text": parts.get("text/plain", ""),
    "html": html,
    "html_errors": errors,
}))
