"""Deferred, never dropped: rate limits, outages, uncertain answers, transports that fail
before contact, secrets in error texts, and the schema on a fresh or old database.

Every wait runs on a fake clock (test_delivery.FakeTime); nothing depends on wall time.
"""

from __future__ import annotations

import collections
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from newsletter.db import connect, migrate
from newsletter.cli.formatting import describe_deferral
from newsletter.errors import ConfigError, TransportError, register_secrets
from newsletter.ledger import (MIGRATIONS, delivery_status, failed_recipients, get_delivery, open_ledger,
                               start_or_resume)
from newsletter.schedule import dispatch_once, due, list_scheduled
from newsletter.schema import COMPONENTS, migrations
from newsletter.store import MIGRATIONS as SUBSCRIBERS
from newsletter.transports.base import SendResult, Status

from tests.helpers import FakeTime, Recorder, Sink, add_subscribers, ledger_states, make_prepared, options, send

HERE = Path(__file__).resolve().parent


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "news.db"


def attempts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute("SELECT email, attempts FROM ledger"))
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------
# Rate limits and outages
# ---------------------------------------------------------------------------------------
def test_rate_limit_answers_use_no_attempts_and_wait_for_retry_after(db):
    emails = add_subscribers(db, 12)
    limited = collections.Counter()

    def behave(msg, key, call_no):
        if call_no < 6:  # a provider saying "slow down" to the first six requests
            limited[msg.to_email] += 1
            return SendResult(msg.to_email, Status.FAILED_TEMPORARY, error="HTTP 429", retry_after=2,
                              rate_limited=True)

    ft = FakeTime()
    report, sink = send(db, transport=Recorder(behave=behave), ft=ft, batch_size=4, retry_window=0)
    # Even with a zero retry window (any real failure would be final at once), nobody is lost.
    assert report.state == "done" and sink.counts() == collections.Counter(emails)
    assert max(limited.values()) >= 2
    assert set(attempts(db).values()) == {1}  # only the answer that delivered counted
    assert all(s >= 2 - 1e-6 for s in ft.sleeps) and ft.sleeps  # Retry-After honoured


def test_an_outage_longer_than_the_foreground_wait_defers_and_dispatch_finishes_it(db):
    emails = add_subscribers(db, 30)
    ft = FakeTime()
    start = datetime(2031, 6, 1, 9, 0, tzinfo=timezone.utc)
    outage_until = ft.t + 900  # fifteen minutes of 503s after the first batch

    def behave(msg, key, call_no):
        if call_no >= 1 and ft.t < outage_until:
            return SendResult(msg.to_email, Status.FAILED_TEMPORARY, error="HTTP 503 service unavailable")

    sink = Sink()
    first, _ = send(db, transport=Recorder(sink, behave=behave), ft=ft, batch_size=10, max_wait=120,
                    now=lambda: start)
    assert first.state == "deferred" and first.sent == 10 and first.pending == first.deferred == 20
    assert first.next_retry is not None and first.next_retry > start
    assert first.reasons[0][0] == first.note == "HTTP 503 service unavailable"
    line = describe_deferral(first, "6")
    assert line.startswith("20 readers deferred (HTTP 503 service unavailable); next retry at ")
    assert line.endswith("`newsletter worker` or `newsletter resume 6` will continue")
    assert ft.t - 1000 <= 120 + 300  # it gave up waiting after the foreground bound (plus one capped backoff)
    conn = open_ledger(db)
    d = get_delivery(conn, first.delivery_id)
    assert d.state == "deferred" and d.resume_at == first.next_retry and d.lock_pid is None
    [st] = delivery_status(conn)
    assert st.deferred == 20 and st.next_retry == d.resume_at and st.reasons[0][1] == 20
    # A worker does nothing before the retry time, and finishes it after the outage.
    assert due(conn, d.resume_at - timedelta(seconds=1)) == []
    assert [x.id for x in list_scheduled(conn)] == [d.id]
    ft.t = outage_until + 1
    [r] = dispatch_once(conn, start + timedelta(hours=1), lambda slug: make_prepared(slug),
                        lambda: Recorder(sink, behave=behave), options(batch_size=10), clock=ft)
    assert r.state == "done" and r.sent == 30 and r.deferred == 0
    assert sink.counts() == collections.Counter(emails)


# ---------------------------------------------------------------------------------------
# Uncertain answers, and failures before any contact
# ---------------------------------------------------------------------------------------
def test_uncertain_answers_are_resent_at_most_once_and_never_blamed_on_a_crash(db):
    emails = add_subscribers(db, 3)
    tries = collections.Counter()

    def behave(msg, key, call_no):  # a server that drops every connection after DATA
        tries[msg.to_email] += 1
        return SendResult(msg.to_email, Status.UNCERTAIN, error="connection lost after DATA")

    progress: list[tuple] = []
    report, _ = send(db, transport=Recorder(behave=behave), progress=lambda *a: progress.append(a))
    assert tries == collections.Counter({e: 2 for e in emails})  # sent, then once more; never 5 or 15 times
    assert report.state == "done" and report.uncertain == 3 and report.uncertain_resent == 3
    assert report.uncertain_reported == 3 and report.interrupted_resent == 0
    assert "uncertain" in report.note  # and the CLI blames no crash: interrupted_resent is 0
    assert progress[-1][0] == progress[-1][1] == 3  # the bar ends full


def test_no_resend_uncertain_moves_the_progress_bar_to_the_end(db):
    add_subscribers(db, 10)

    def behave(msg, key, call_no):
        if msg.to_email.endswith("3@example.org"):
            return SendResult(msg.to_email, Status.UNCERTAIN, error="read timeout")

    progress: list[tuple] = []
    report, _ = send(db, transport=Recorder(behave=behave), resend_uncertain=False,
                     progress=lambda *a: progress.append(a))
    assert report.state == "done" and report.uncertain == 1 and report.sent == 9
    assert progress[-1][:2] == (10, 10)


class Broken(Recorder):
    """A transport whose open() or send() raises, the way a bad CA file, DKIM key or header would."""

    def __init__(self, sink=None, *, on_open=None, on_send=None):
        super().__init__(sink)
        self.on_open, self.on_send = on_open, on_send

    def open(self):
        if self.on_open is not None:
            raise self.on_open

    def send(self, messages, idempotency_key=None):
        if self.on_send is not None and len(self.sink.calls) >= 1:
            self.sink.calls.append((idempotency_key, []))
            raise self.on_send
        return super().send(messages, idempotency_key)


def test_a_transport_that_cannot_open_claims_nobody(db):
    add_subscribers(db, 8)
    with pytest.raises(ConfigError, match="SMTP_CA_FILE"):
        send(db, transport=Broken(on_open=ConfigError("SMTP_CA_FILE: no such file")))
    with pytest.raises(TransportError, match="could not start"):
        send(db, transport=Broken(on_open=ValueError("bad DKIM key")))
    conn = open_ledger(db)
    d = conn.execute("SELECT * FROM deliveries").fetchone()
    assert d["frozen_at"] is None and d["lock_owner"] is None  # not even the list was frozen
    assert conn.execute("SELECT COUNT(*) FROM ledger").fetchone()[0] == 0


def test_a_transport_that_raises_puts_the_batch_back_and_its_error_is_scrubbed(db):
    emails = add_subscribers(db, 10)
    register_secrets(["SG.very-secret-api-key"])
    leak = ValueError("Invalid leading whitespace in header value: ' SG.very-secret-api-key\r\n\x1b[31m'")
    sink = Sink()
    with pytest.raises(TransportError) as err:
        send(db, transport=Broken(sink, on_send=leak), batch_size=5)
    assert "SG.very-secret-api-key" not in str(err.value) and "\x1b" not in str(err.value)
    conn = open_ledger(db)
    d = conn.execute("SELECT id, reason FROM deliveries").fetchone()
    assert "SG.very" not in d["reason"] and "***" in d["reason"]
    # Nobody of the refused batch was contacted: pending again, not 'sending' or uncertain.
    assert collections.Counter(ledger_states(db, d["id"]).values()) == {"sent": 5, "pending": 5}
    # A resume that reports (not resends) in-flight readers finds none, and sends the rest.
    report, _ = send(db, sink=sink, batch_size=5, resend_uncertain=False)
    assert report.state == "done" and report.uncertain == 0 and sink.counts() == collections.Counter(emails)


def test_secrets_and_control_characters_never_reach_the_ledger(db):
    emails = add_subscribers(db, 2)
    register_secrets(["key-ABCDEFGH12345"])

    def behave(msg, key, call_no):
        if msg.to_email == emails[0]:
            return SendResult(msg.to_email, Status.FAILED_PERMANENT,
                              error="401 bad key 'key-ABCDEFGH12345'\r\nX-Injected: yes\x07")

    report, _ = send(db, transport=Recorder(behave=behave))
    [(email, state, error)] = failed_recipients(open_ledger(db), report.delivery_id)
    assert email == emails[0] and state == "failed-permanent"
    assert "key-ABCDEFGH12345" not in error and "\r" not in error and "\n" not in error and "\x07" not in error
    raw = sqlite3.connect(db).execute("SELECT last_error FROM ledger WHERE email=?", (emails[0],)).fetchone()[0]
    assert "key-ABCDEFGH12345" not in raw and "***" in raw


def test_a_done_delivery_is_never_sent_again(db):
    emails = add_subscribers(db, 6)
    sink = Sink()
    first, _ = send(db, sink=sink, resend_uncertain=False,
                    transport=Recorder(sink, behave=lambda m, k, c: SendResult(m.to_email, Status.UNCERTAIN)
                                       if m.to_email == emails[2] else None))
    assert first.state == "done" and first.uncertain == 1
    again, _ = send(db, sink=sink)  # the default policy would resend uncertain rows: not on a done delivery
    assert again.state == "done" and again.sent_this_run == 0 and len(sink.calls) == 1


def test_idempotency_keys_differ_between_databases(tmp_path):
    keys = []
    for name in ("a.db", "b.db"):
        db = tmp_path / name
        add_subscribers(db, 3)
        _, sink = send(db)
        keys.append(sink.calls[0][0])
    assert keys[0] != keys[1] and all(k.endswith("-1-1") for k in keys)


# ---------------------------------------------------------------------------------------
# The schema: two processes on a fresh database, and an old database
# ---------------------------------------------------------------------------------------
def test_two_processes_migrating_a_fresh_database_both_succeed(tmp_path):
    code = ("import sys, threading\nfrom newsletter.ledger import open_ledger\n"
            "go = sys.stdin.readline()\nopen_ledger(sys.argv[1]).close()\nprint('OK')\n")
    for round_ in range(3):
        db = tmp_path / f"fresh{round_}.db"
        procs = [subprocess.Popen([sys.executable, "-c", code, str(db)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
        outs = [p.communicate("go\n", timeout=60) for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outs]
        conn = open_ledger(db)
        assert dict(conn.execute("SELECT component, version FROM schema_migrations")) == {
            c.name: len(migrations(c)) for c in COMPONENTS}


def test_an_old_database_keeps_its_rows_and_learns_deferred(db):
    conn = connect(db)
    migrate(conn, "subscribers", SUBSCRIBERS)
    migrate(conn, "delivery", MIGRATIONS[:1])
    conn.execute("INSERT INTO subscribers(email, name, status, created_at, changed_at) VALUES"
                 "('a@example.org', '', 'active', '2030-01-01T00:00:00.000000Z', '2030-01-01T00:00:00.000000Z')")
    conn.execute("INSERT INTO deliveries(slug, content_hash, state, created_at) VALUES('x', 'h', 'paused', "
                 "'2030-01-01T00:00:00.000000Z')")
    conn.execute("INSERT INTO ledger(delivery_id, subscriber_id, email, state, next_attempt_at) "
                 "VALUES(1, 1, 'a@example.org', 'retry', 12345.0)")
    conn.close()
    conn = open_ledger(db)
    row = conn.execute("SELECT state, next_attempt_at, first_failure_at, uncertain_resends FROM ledger").fetchone()
    assert tuple(row) == ("retry", 0, None, 0)  # an old process's clock: due now
    nonce = conn.execute("SELECT nonce FROM deliveries").fetchone()[0]
    assert len(nonce) == 16
    conn.execute("UPDATE deliveries SET state='deferred'")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE deliveries SET state='nonsense'")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# ---------------------------------------------------------------------------------------
# Stored rows a worker cannot read
# ---------------------------------------------------------------------------------------
def test_an_unreadable_stored_send_time_is_held_not_a_crash(db):
    add_subscribers(db, 2)
    conn = open_ledger(db)
    did = start_or_resume(conn, make_prepared(), scheduled_for=datetime(2031, 1, 1, tzinfo=timezone.utc))
    conn.execute("UPDATE deliveries SET send_at='202-03-10T01:00:00.000000Z', created_at='garbage' WHERE id=?",
                 (did,))
    [d] = list_scheduled(conn)
    assert d.send_at is None and d.send_at_text == "202-03-10T01:00:00.000000Z"
    assert delivery_status(conn)[0].delivery.state == "scheduled"
    sink = Sink()
    [r] = dispatch_once(conn, datetime(2031, 1, 2, tzinfo=timezone.utc), make_prepared, lambda: Recorder(sink),
                        options())
    assert r.state == "held" and "cannot be read" in r.note and sink.calls == []


def test_scrub_is_bounded_and_removes_secrets_and_control_characters():
    from newsletter.errors import scrub

    register_secrets(["pw-0123456789"])
    assert scrub("login pw-0123456789 refused") == "login *** refused"
    assert scrub("key ' pw-0123456789\r' invalid") == "key ' *** ' invalid"  # a CRLF .env's stray CR
    assert len(scrub("A" * 10_000_000)) == 500
    assert scrub("a\x1b[2Jb\u2028c\x00d") == "a [2Jb c d"


def test_v3_renames_the_final_row_state_so_failed_temporary_means_only_retry_later(db):
    conn = connect(db)
    migrate(conn, "subscribers", SUBSCRIBERS)
    migrate(conn, "delivery", MIGRATIONS[:2])
    conn.executemany("INSERT INTO subscribers(email, created_at, changed_at) VALUES(?, 'x', 'x')",
                     [(f"r{i}@example.org",) for i in range(3)])
    conn.execute("INSERT INTO deliveries(slug, content_hash, state, created_at) VALUES('x', 'h', 'done', 'x')")
    conn.executemany("INSERT INTO ledger(delivery_id, subscriber_id, email, state) VALUES(1, ?, 'e', ?)",
                     [(1, "failed-temporary"), (2, "retry"), (3, "sent")])
    conn.close()
    conn = open_ledger(db)
    assert dict(conn.execute("SELECT subscriber_id, state FROM ledger")) == {1: "gave-up", 2: "retry", 3: "sent"}
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE ledger SET state='failed-temporary' WHERE subscriber_id=2")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert failed_recipients(conn, 1) == [("e", "gave-up", None)]
    # The counts `status` reads (v4's triggers) moved with the rows, and a new delivery counts gave-up too.
    counts = dict(conn.execute("SELECT state, n FROM delivery_counts WHERE delivery_id=1"))
    assert counts["gave-up"] == 1 and counts["retry"] == 1 and counts["sent"] == 1 and "failed-temporary" not in counts
    conn.execute("INSERT INTO deliveries(slug, content_hash, state, created_at) VALUES('y', 'h', 'done', 'x')")
    assert "gave-up" in dict(conn.execute("SELECT state, n FROM delivery_counts WHERE delivery_id=2"))
