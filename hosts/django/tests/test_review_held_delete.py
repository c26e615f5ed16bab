"""A counter deleted and then counted in one call (the review's finding 1): the engine holds
deletes until `commit` while increments apply at once, so without care the held delete lands
after the increment. The component's undo of a failed admin reset relies on the call's order: a
reset that answered `unavailable` must leave a locked user locked."""

import pytest
from django.core import mail

from mfa_step_django.backends.faults import Breakable
from mfa_step_django.engine import MfaError, MfaUnavailable
from mfa_step_django.models import AuditRecord

from conftest import code_in

pytestmark = pytest.mark.django_db(transaction=True)

ADMIN = {"user_id": "root", "org_id": "acme", "roles": ["org-admin"], "ip": "203.0.113.9", "user_agent": "UA"}
WINDOW = 30 * 24 * 3600


def test_a_reset_that_answered_unavailable_leaves_the_30_day_lock_in_place(engine, ctx):
    c = ctx("lk")
    cid = engine.begin(c)["value"]["challenge_id"]
    engine.send_code(c, cid)
    code = code_in(mail.outbox[-1])
    now = int(engine.now())
    window = now // WINDOW
    # 50 wrong codes already in this 30-day window (the component's own key and expiry rule).
    engine.database.increment(f"v1:failures-30d:acme:lk:{window}", 50, (window + 1) * WINDOW + 7200, now)
    with pytest.raises(MfaError) as locked:
        engine.verify(c, cid, code, False)
    assert locked.value.kind == "locked"
    records = AuditRecord.objects.filter(org_id="acme").count()

    broken = Breakable(engine.database)
    broken.broken.add("head")
    with engine.backends(database=broken):
        with pytest.raises(MfaUnavailable):
            engine.reset_user(ADMIN, "acme", "lk")
    assert AuditRecord.objects.filter(org_id="acme").count() == records, "the failed reset recorded nothing"
    assert engine.database.increment(f"v1:failures-30d:acme:lk:{window}", 0, None, now) == 50

    with pytest.raises(MfaError) as still:
        engine.verify(c, cid, code, False)
    assert still.value.kind == "locked", "a reset that answered unavailable lifted the lock"
