"""What a kill costs, on both backends: an unsubscribe that comes while a reader's batch is in
flight is honoured before their message goes out (PostgreSQL: an unsubscribe committed while the
message is on the wire waits for the server's answer, so once answered nothing more starts); a
takeover settles only the dead holder's claims, never a live helper's; and claims older than
the lease are put back during the run, not at its end."""

from __future__ import annotations

import collections
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from newsletter.db import connect
from newsletter.delivery import run_delivery
from newsletter.ledger import begin_run, get_delivery, open_ledger, start_or_resume, transaction
from newsletter.transports.smtp import SMTPTransport
from tests.helpers import FakeTime, add_subscribers, ledger_states, make_prepared, options, subscriber_status
from tests.smtp_server import SMTPTestServer


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    return tmp_path / "news.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")


def _smtp(server: SMTPTestServer):
    return lambda: SMTPTransport("127.0.0.1", server.port, envelope_from="news@example.org", security="none",
                                 timeout=10)


def _unsubscribe(db, email: str) -> None:
    conn = connect(db)  # another session, as serve's
    try:
        conn.execute("UPDATE subscribers SET status='unsubscribed' WHERE email=?", (email,))
    finally:
        conn.close()


def test_a_reader_who_unsubscribes_while_their_batch_is_in_flight_is_skipped_not_mailed(db):
    emails = add_subscribers(db, 12)
    late = emails[7]  # in the first batch of 10, unsubscribed while the third message is with the server

    def on_data(address: str):
        if address == emails[2]:
            _unsubscribe(db, late)
        return None

    with SMTPTestServer(data_replies=on_data) as server:
        conn = open_ledger(db)
        did = start_or_resume(conn, make_prepared())
        report = run_delivery(conn, did, make_prepared(), _smtp(server), options=options(batch_size=10),
                              clock=FakeTime())
        conn.close()
        received = collections.Counter(server.recipients())
    assert late not in received
    assert received == collections.Counter(e for e in emails if e != late)  # everyone else exactly once
    assert ledger_states(db, did)[late] == "skipped"
    assert report.state == "done" and report.sent == 11 and report.skipped == 1


def test_on_postgresql_an_unsubscribe_during_a_readers_message_waits_for_the_servers_answer(pg_url):
    """The unsubscribe's UPDATE is committed only once the server has accepted the message: `serve`
    answers after its commit, so no message reaches the server after the answer."""
    db = pg_url
    emails = add_subscribers(db, 3)
    target = emails[1]
    times: dict[str, float] = {}
    unsubscriber: list[threading.Thread] = []

    def unsubscribe() -> None:
        times["asked"] = time.monotonic()
        _unsubscribe(db, target)
        times["committed"] = time.monotonic()

    def on_data(address: str):
        if address == target:  # the message is on the wire: the reader unsubscribes now
            unsubscriber.append(threading.Thread(target=unsubscribe))
            unsubscriber[0].start()
            time.sleep(0.5)  # the server takes its time to answer
            times["accepted"] = time.monotonic()
        return None

    with SMTPTestServer(data_replies=on_data) as server:
        conn = open_ledger(db)
        did = start_or_resume(conn, make_prepared())
        report = run_delivery(conn, did, make_prepared(), _smtp(server), options=options(batch_size=10),
                              clock=FakeTime())
        conn.close()
        unsubscriber[0].join(10)
        received = collections.Counter(server.recipients())
    assert received == collections.Counter(emails)  # on the wire before the unsubscribe: delivered once
    assert times["committed"] >= times["accepted"] and times["committed"] - times["asked"] >= 0.4, times
    assert ledger_states(db, did)[target] == "sent" and subscriber_status(db, target) == "unsubscribed"
    assert report.state == "done"


def _claimed(db, did: int, rows: dict[str, tuple[str | None, datetime]]) -> None:
    """Mark readers 'sending' as claimed by a run (owner, claim time), as claim_batch does."""
    conn = connect(db)
    try:
        for email, (owner, at) in rows.items():
            conn.execute("UPDATE ledger SET state='sending', claimed_by=?, updated_at=? WHERE delivery_id=? AND email=?",
                         (owner, at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), did, email))
    finally:
        conn.close()


def test_a_takeover_settles_the_dead_holders_claims_and_leaves_a_live_helpers_alone(db):
    emails = add_subscribers(db, 6)
    conn = open_ledger(db)
    prepared = make_prepared()
    did = start_or_resume(conn, prepared)
    now = datetime.now(timezone.utc)
    with transaction(conn):
        begin_run(conn, get_delivery(conn, did), transport="smtp", resend_interrupted=True, retry_failed=False,
                  now=now)  # freezes the list
    _claimed(db, did, {emails[0]: ("dead", now), emails[1]: ("dead", now),          # the holder killed
                       emails[2]: ("helper", now),                                   # a live helper's
                       emails[3]: ("gone", now - timedelta(seconds=61)),             # older than the lease
                       emails[4]: (None, now)})                                      # a run that ended left it
    with transaction(conn):
        start = begin_run(conn, get_delivery(conn, did), transport="smtp", resend_interrupted=True,
                          retry_failed=False, now=now, taken_from="dead", lease=timedelta(seconds=60))
    conn.close()
    states = ledger_states(db, did)
    assert start.interrupted == 4
    assert [states[e] for e in emails] == ["retry", "retry", "sending", "retry", "retry", "pending"]


def test_on_postgresql_a_dead_helpers_claims_go_back_during_the_run_not_at_its_end(pg_url, monkeypatch):
    """A helper killed mid-batch left readers 'sending'; the holder puts them back once their
    claim is older than the lease (looking every RECLAIM_EVERY s), while it still has others to send."""
    import newsletter.delivery as delivery

    db = pg_url
    emails = add_subscribers(db, 40)
    conn = open_ledger(db)
    did = start_or_resume(conn, make_prepared())
    with transaction(conn):
        begin_run(conn, get_delivery(conn, did), transport="smtp", resend_interrupted=True, retry_failed=False,
                  now=datetime.now(timezone.utc))
    claimed_at = datetime.now(timezone.utc) + timedelta(seconds=2)  # not yet stale when the run begins
    _claimed(db, did, {e: ("killed-helper", claimed_at) for e in emails[-3:]})
    monkeypatch.setattr(delivery, "RECLAIM_EVERY", 1.0)
    order: list[str] = []
    ft = FakeTime()

    def on_data(address: str):
        order.append(address)
        ft.t += 0.5  # half a second of the run per message: the lease (15 s) runs out mid-run
        return None

    with SMTPTestServer(data_replies=on_data) as server:
        report = run_delivery(conn, did, make_prepared(), _smtp(server),
                              options=options(batch_size=2, lease_seconds=15), clock=ft)
    conn.close()
    assert collections.Counter(order) == collections.Counter(emails)  # everyone once, the helper's three too
    first_back = min(order.index(e) for e in emails[-3:])
    assert first_back < len(emails) - 3 - 2, order  # put back while pending readers were still being sent
    assert report.state == "done" and report.sent == 40
