"""Several workers on one database (SQLite file, or PostgreSQL as on several hosts): a scheduled
delivery starts once however many poll, and a silent sender's delivery is taken over after the
lease (NEWSLETTER_LEASE_SECONDS) and not before."""

from __future__ import annotations

import collections
import threading
from contextlib import closing
import time
from datetime import datetime, timedelta, timezone

import pytest

from newsletter.db import connect
from newsletter.delivery import DeliveryOptions
from newsletter.errors import ConfigError, DeliveryLockedError
from newsletter.ledger import get_delivery, open_ledger, start_or_resume
from newsletter.schedule import dispatch_once, schedule

from test_delivery import FakeTime, Recorder, Sink, add_subscribers, db, ledger_states, make_prepared, send  # noqa: F401

T = datetime(2031, 5, 6, 7, 0, tzinfo=timezone.utc)


def test_a_scheduled_delivery_is_started_once_however_many_workers_poll(db):
    emails = add_subscribers(db, 60)
    conn = open_ledger(db)
    schedule(conn, make_prepared(), T)
    conn.close()
    sink, barrier, results, errors = Sink(), threading.Barrier(3), [], []

    def worker() -> None:
        own = open_ledger(db)  # each worker its own connection, as on its own host
        ft = FakeTime()
        try:
            barrier.wait()
            results.append(dispatch_once(own, T + timedelta(seconds=30), lambda slug: make_prepared(slug),
                                         lambda: Recorder(sink), DeliveryOptions(batch_size=7),
                                         clock=ft))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert sink.counts() == collections.Counter(emails)  # every reader exactly once
    reports = [r for rs in results for r in rs]
    # One worker holds it and finishes it; on PostgreSQL the others may help (each reader still once).
    assert any(r.state == "done" for r in reports) and sum(r.sent_this_run for r in reports) == 60
    assert set(ledger_states(db, reports[0].delivery_id).values()) == {"sent"}
    with closing(open_ledger(db)) as conn:
        assert get_delivery(conn, reports[0].delivery_id).state == "done"


def _silent_sender(db, did: int, heartbeat: datetime, *, in_flight: int) -> None:
    """A sender on another host that claimed ``in_flight`` readers and went silent at ``heartbeat``."""
    conn = connect(db)
    try:
        conn.execute("UPDATE deliveries SET lock_owner='gone', lock_pid=4242, lock_host='elsewhere.example', "
                     "lock_heartbeat=?, frozen_at=?, total=(SELECT COUNT(*) FROM subscribers) WHERE id=?",
                     (heartbeat.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), heartbeat.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), did))
        conn.execute("INSERT INTO ledger(delivery_id, subscriber_id, email, name, state, batch_no) "
                     "SELECT ?, id, email, name, CASE WHEN id <= ? THEN 'sending' ELSE 'pending' END, 1 "
                     "FROM subscribers", (did, in_flight))
    finally:
        conn.close()


@pytest.mark.parametrize("lease", [20, 60])
def test_a_silent_senders_delivery_is_taken_over_after_the_lease_and_not_before(db, lease):
    emails = add_subscribers(db, 12)
    conn = open_ledger(db)
    did = start_or_resume(conn, make_prepared())
    conn.close()
    now = datetime.now(timezone.utc)
    _silent_sender(db, did, now - timedelta(seconds=lease - 5), in_flight=3)
    with pytest.raises(DeliveryLockedError, match=f"silent for {lease} s"):
        send(db, lease_seconds=lease)
    conn = connect(db)
    conn.execute("UPDATE deliveries SET lock_heartbeat=? WHERE id=?",
                 ((now - timedelta(seconds=lease + 1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), did))
    conn.close()
    report, sink = send(db, lease_seconds=lease)
    assert report.state == "done" and report.sent == 12
    assert sink.counts() == collections.Counter(emails)  # the 3 in flight sent again (policy: resend)
    assert report.interrupted_resent == 3
    conn = open_ledger(db)
    assert get_delivery(conn, did).lock_host is None  # released
    conn.close()


@pytest.mark.parametrize("value", ["5", "0", "99999", "nan", "soon"])
def test_an_unusable_lease_setting_is_one_line(tmp_path, value):
    from newsletter.config import load_settings

    (tmp_path / "newsletter.toml").write_text('name = "N"\n')
    settings = load_settings(tmp_path, environ={"NEWSLETTER_LEASE_SECONDS": value})
    with pytest.raises(ConfigError, match="NEWSLETTER_LEASE_SECONDS"):
        DeliveryOptions.from_settings(settings)


def test_workers_on_postgresql_send_one_delivery_together(pg_url):
    """Three workers polling one PostgreSQL database: one holds the delivery, the others join it
    and claim readers of their own (SKIP LOCKED); each reader is mailed once and the holder
    finishes it ``done`` once the helpers' readers are in."""
    db = pg_url
    emails = add_subscribers(db, 240)
    conn = open_ledger(db)
    did = schedule(conn, make_prepared(), T)
    conn.close()
    sink, barrier, errors = Sink(), threading.Barrier(3), []
    sent_by: collections.Counter = collections.Counter()

    def worker(name: str) -> None:
        own = open_ledger(db)

        def slow(messages, key):  # a relay that takes its time, so the others can join
            time.sleep(0.02)
            sent_by[name] += len(messages)

        try:
            barrier.wait()
            while get_delivery(own, did).state != "done":
                ft = FakeTime()
                dispatch_once(own, T + timedelta(seconds=30), lambda slug: make_prepared(slug),
                              lambda: Recorder(sink, before=slow), DeliveryOptions(batch_size=8),
                              clock=ft)
                time.sleep(0.02)  # the poll interval
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert sink.counts() == collections.Counter(emails)  # every reader exactly once
    assert len([n for n in sent_by.values() if n]) >= 2, sent_by  # more than one worker sent
    assert set(ledger_states(db, did).values()) == {"sent"}


def test_the_holder_takes_back_readers_a_silent_helper_left_sending(pg_url):
    from newsletter.ledger import in_flight_elsewhere, transaction

    db = pg_url
    add_subscribers(db, 4)
    conn = open_ledger(db)
    did = start_or_resume(conn, make_prepared())
    now = datetime.now(timezone.utc)
    stamp = lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # noqa: E731
    conn.execute("INSERT INTO ledger(delivery_id, subscriber_id, email, state, updated_at) SELECT ?, id, email, "
                 "'sending', CASE WHEN id <= 2 THEN ? ELSE ? END FROM subscribers",
                 (did, stamp(now - timedelta(seconds=61)), stamp(now)))
    with transaction(conn):
        assert in_flight_elsewhere(conn, did, now - timedelta(seconds=60)) == 2  # the fresh two still count
    assert ledger_states(db, did) == {"user00000@example.org": "retry", "user00001@example.org": "retry",
                                      "user00002@example.org": "sending", "user00003@example.org": "sending"}
    conn.close()
