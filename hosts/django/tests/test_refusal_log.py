"""`audit.note-refusal` in the host's log: a refused request says so; a day count that could not
be written (rule `stats:…`, the core's only route to this log) says that instead, never
"refused request"."""

import logging

from mfa_step_django.engine.imports import _RefusalLog


def test_a_failed_day_count_is_not_logged_as_a_refused_request(caplog):
    log = _RefusalLog()
    with caplog.at_level(logging.WARNING, logger="mfa_step_django.engine"):
        log.note({"rule": "stats:not-counted:code_sent", "claimed_org": "acme", "ip": None, "user_agent": None})
        log.note({"rule": "prompt:unsigned", "claimed_org": "acme", "ip": "203.0.113.7", "user_agent": "UA"})
    stats, refusal = [r.getMessage() for r in caplog.records]
    assert "day count was not written" in stats and "stats:not-counted:code_sent" in stats
    assert "refused" not in stats
    assert "refused request" in refusal and "prompt:unsigned" in refusal
