"""Issue 22 #10/#11: a refused sender holds the delivery (charged to nobody), and losing the
server mid-send is a temporary failure retried on the backoff schedule, never exit 4."""

from __future__ import annotations

import pytest

from newsletter.db import connect
from newsletter.errors import TransportError, TransportUnavailableError
from newsletter.ledger import get_delivery, open_ledger
from newsletter.transports.base import SendResult, Status
from tests.helpers import FakeTime, Recorder, add_subscribers, ledger_states, send, subscriber_status  # noqa: F401

HELO = "SMTP server mx:25 refused the sender: RCPT 504 5.5.2 <localhost>: Helo command rejected"


@pytest.fixture
def db(any_db):
    """Each test on SQLite and on PostgreSQL (tests/conftest.py)."""
    return any_db


def rows(db, did: int = 1) -> list[tuple[str, str, int, str | None]]:
    conn = connect(db)
    try:
        return conn.execute("SELECT email, state, attempts, last_error FROM ledger WHERE delivery_id=? "
                            "ORDER BY subscriber_id", (did,)).fetchall()
    finally:
        conn.close()


def test_a_refused_sender_holds_the_delivery_and_a_fixed_configuration_resumes_it(db):
    emails = add_subscribers(db, 30)
    fixed = {"yes": False}

    def behave(msg, key, call_no):
        if fixed["yes"] or msg.to_email in emails[:5]:
            return None
        return SendResult(msg.to_email, Status.FAILED_TEMPORARY, error=HELO, about_sender=True)

    report, sink = send(db, transport=Recorder(behave=behave), batch_size=10)
    assert report.state == "held" and "Helo command rejected" in report.note
    assert get_delivery(open_ledger(db), 1).state == "held"
    states = ledger_states(db, 1)
    assert sorted(e for e, s in states.items() if s == "sent") == emails[:5]
    # Nobody charged: no failure, no attempt, no bounce; each waits with the reason.
    assert [s for e, s in states.items() if e not in emails[:5]] == ["retry"] * 5 + ["pending"] * 20
    assert all(a == 0 and err.startswith("held:") for _, s, a, err in rows(db) if s == "retry")
    assert {subscriber_status(db, e) for e in emails} == {"active"}
    assert report.pending == 25 and report.failed == 0
    assert len(sink.calls) == 1  # the run stopped at the first refusal: no other batch was tried
    # A worker or cron dispatch leaves a held delivery alone; `resume` after the fix finishes it.
    from newsletter.ledger import due_deliveries

    assert due_deliveries(open_ledger(db), report.next_retry or get_delivery(open_ledger(db), 1).created_at) == []
    fixed["yes"] = True
    report, sink = send(db, transport=Recorder(sink, behave=behave), batch_size=10)
    assert report.state == "done" and report.sent == 30 and report.failed == 0
    assert sorted(sink.counts().items()) == [(e, 1) for e in emails]


def test_losing_the_server_mid_send_is_retried_in_the_foreground_and_nobody_is_doubled(db):
    emails = add_subscribers(db, 40)
    down = {"calls": set()}

    class Flaky(Recorder):
        def send(self, messages, idempotency_key=None):
            call_no = len(self.sink.calls)
            if 1 <= call_no <= 3:  # the server goes away after the first batch, for three tries
                self.sink.calls.append((idempotency_key, [m.to_email for m in messages]))
                down["calls"].add(call_no)
                raise TransportUnavailableError("cannot use SMTP server mx:25: connection refused")
            return super().send(messages, idempotency_key)

    ft = FakeTime()
    report, sink = send(db, transport=Flaky(), ft=ft, batch_size=10)
    assert report.state == "done" and report.sent == 40 and report.failed == 0  # exit 0: nobody left
    assert sorted(sink.counts().items()) == [(e, 1) for e in emails]
    assert down["calls"] == {1, 2, 3}
    assert ft.t > 1000.0 and sum(ft.sleeps) >= 1.0  # it waited on the backoff schedule
    # The outage cost the readers no attempt (nobody answered about them): one each, the delivery.
    assert {a for _, _, a, _ in rows(db)} == {1}


def test_a_long_outage_defers_instead_of_exit_4(db):
    add_subscribers(db, 20)

    class GoneAfterFirst(Recorder):
        def send(self, messages, idempotency_key=None):
            if self.sink.calls:
                self.sink.calls.append((idempotency_key, []))
                raise TransportUnavailableError("cannot use SMTP server mx:25: connection refused")
            return super().send(messages, idempotency_key)

    report, _ = send(db, transport=GoneAfterFirst(), batch_size=10, max_wait=60)
    assert report.state == "deferred" and report.sent == 10 and report.pending == 10
    assert report.failed == 0 and "connection refused" in (report.note or "")


def test_a_transport_that_never_worked_is_exit_4_with_nobody_touched(db):
    add_subscribers(db, 5)

    class Never(Recorder):
        def send(self, messages, idempotency_key=None):
            raise TransportUnavailableError("cannot use SMTP server mx:25: connection refused")

    with pytest.raises(TransportError) as info:
        send(db, transport=Never())
    assert info.value.exit_code == 4
    assert set(ledger_states(db, 1).values()) == {"pending"}


def test_a_login_refused_mid_send_holds_instead_of_exit_4(db):
    # The password was rotated while the send ran: the transport worked, now refuses us.
    emails = add_subscribers(db, 30)

    class Rotated(Recorder):
        def send(self, messages, idempotency_key=None):
            if self.sink.calls:
                self.sink.calls.append((idempotency_key, []))
                raise TransportError("SMTP server mx:587 refused the login for news: 535 5.7.8 bad credentials")
            return super().send(messages, idempotency_key)

    report, sink = send(db, transport=Rotated(), batch_size=10)
    assert report.state == "held" and "535" in report.note
    assert report.sent == 10 and report.failed == 0 and report.pending == 20
    assert all(a == 0 for _, s, a, _ in rows(db) if s != "sent")
    assert {subscriber_status(db, e) for e in emails} == {"active"}
