"""The delivery engine on real SQLite files, with an in-test recording transport.

Time never passes for real here: the engine gets a fake clock whose ``sleep``
only advances the fake time and records what was asked, so retries, backoff
and pacing are asserted exactly and the tests run instantly.
"""

from __future__ import annotations

import collections
import os
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from newsletter.db import connect
from newsletter.config import Publication
from newsletter.delivery import DeliveryOptions, run_delivery
from newsletter.ledger import delivery_status, failed_recipients, get_delivery, open_ledger, start_or_resume
from newsletter.errors import ConfigError, ContentChangedError, DeliveryLockedError, InputError, TransportError
from newsletter.message import PreparedIssue
from newsletter.pacing import BACKOFF_CAP, Pacer, backoff_delay
from newsletter.store import SubscriberStore
from newsletter.tokens import verify_token
from newsletter.transports.base import SendResult, Status

from tests.helpers import (DAY1, SECRET, FakeTime, Recorder, Sink, add_subscribers, key, ledger_states,  # noqa: F401
                     make_prepared, make_rendered, options, send, subscriber_status)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path) -> Path | str:
    """The database of one test: a SQLite file, or a fresh PostgreSQL database (its URL)."""
    return tmp_path / "news.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")


@pytest.fixture
def sqlite_db(tmp_path) -> Path:
    return tmp_path / "news.db"


# ---------------------------------------------------------------------------------------
# The basics
# ---------------------------------------------------------------------------------------
def test_everyone_active_gets_exactly_one_personal_copy(db):
    emails = add_subscribers(db, 250)
    store = SubscriberStore.open(db)
    store.unsubscribe(emails[3])
    sid7 = store.get_by_email(emails[7]).id
    store.close()
    report, sink = send(db, batch_size=40)
    expected = set(emails) - {emails[3]}
    assert sink.counts() == collections.Counter(expected)  # the unsubscribed one is not in the frozen list
    assert report.state == "done" and report.total == 249 and report.sent == 249
    assert report.failed == report.skipped == report.pending == 0 and report.sent_this_run == 249
    assert set(ledger_states(db, report.delivery_id)) == expected
    # Personalised per recipient: a working unsubscribe token for this subscriber id and address.
    msg = sink.messages[emails[7]]
    assert msg.recipient.subscriber_id == sid7
    assert verify_token(SECRET, msg.recipient.token, emails[7])
    assert msg.recipient.token in msg.as_bytes().decode()
    # Batches of at most 40, and every batch has its own stable key nl-<nonce>-<delivery>-<batch>.
    keys = [k for k, _ in sink.calls]
    assert all(len(rcpts) <= 40 for _, rcpts in sink.calls)
    assert keys == [key(db, report.delivery_id, i) for i in range(1, len(keys) + 1)]
    d = get_delivery(open_ledger(db), report.delivery_id)
    assert d.state == "done" and d.lock_pid is None and d.total == 249 and d.transport == "mock"


def test_batch_is_committed_as_sending_before_the_transport_sees_it(db):
    add_subscribers(db, 30)
    seen: list[collections.Counter] = []

    def before(messages, key):
        # Another connection (as a crash would leave it) sees this batch as 'sending', none 'sent' yet.
        other = connect(db)
        states = dict(other.execute("SELECT email, state FROM ledger"))
        other.close()
        assert {states[m.to_email] for m in messages} == {"sending"}
        seen.append(collections.Counter(states.values()))

    report, _ = send(db, transport=Recorder(before=before), batch_size=10)
    assert report.sent == 30
    assert [c["sent"] for c in seen] == [0, 10, 20]
    assert all(c["sending"] == 10 for c in seen)


def test_resume_continues_the_same_delivery_and_never_resends(db):
    emails = add_subscribers(db, 100)
    stop = threading.Event()
    calls = []

    def progress(done, total, sent, failed):
        calls.append((done, total, sent, failed))
        if done >= 30:
            stop.set()

    sink = Sink()
    first, _ = send(db, sink=sink, stop=stop, progress=progress, batch_size=10)
    assert first.state == "paused" and first.sent == 30 and first.pending == 70
    assert calls == [(10 * i, 100, 10 * i, 0) for i in (1, 2, 3)]
    assert "stopped" in first.note
    states = collections.Counter(ledger_states(db, first.delivery_id).values())
    assert states == {"sent": 30, "pending": 70}  # nothing left in 'sending' after a graceful stop
    second, _ = send(db, sink=sink, batch_size=10)
    assert second.delivery_id == first.delivery_id
    assert second.state == "done" and second.sent == 100 and second.sent_this_run == 70
    assert sink.counts() == collections.Counter(emails)
    # A finished delivery is returned again and sends nobody.
    third, _ = send(db, sink=sink, batch_size=10)
    assert third.delivery_id == first.delivery_id and third.sent_this_run == 0 and third.state == "done"
    assert sink.counts() == collections.Counter(emails)


def test_unsubscribed_mid_delivery_is_skipped(db):
    emails = add_subscribers(db, 50)
    late = emails[45]

    def before(messages, key):
        if messages[0].to_email == emails[0]:  # during the first batch
            store = SubscriberStore.open(db)
            store.unsubscribe(late)
            store.close()

    report, sink = send(db, transport=Recorder(before=before), batch_size=10)
    assert late not in sink.counts()
    assert sink.counts() == collections.Counter(set(emails) - {late})
    assert report.skipped == 1 and report.sent == 49 and report.state == "done"
    assert ledger_states(db, report.delivery_id)[late] == "skipped"


def test_the_recipient_list_is_frozen_at_start(db):
    add_subscribers(db, 20)
    joined: list[str] = []

    def before(messages, key):
        if not joined:
            joined.extend(add_subscribers(db, 1, start=900))

    report, sink = send(db, transport=Recorder(before=before), batch_size=5)
    assert report.total == 20 and joined[0] not in sink.counts()


def test_content_hash_guard(db):
    add_subscribers(db, 30)
    stop = threading.Event()
    first, sink = send(db, make_prepared(version="v1"), stop=stop, batch_size=10,
                       progress=lambda *a: stop.set())
    assert first.state == "paused" and first.sent == 10
    conn = open_ledger(db)
    changed = make_prepared(version="v2")
    with pytest.raises(ContentChangedError) as err:
        start_or_resume(conn, changed)
    assert f"#{first.delivery_id}" in str(err.value) and "--force-new-content" in str(err.value)
    with pytest.raises(ContentChangedError):  # run_delivery checks too
        run_delivery(conn, first.delivery_id, changed, lambda: Recorder(sink), options=options())
    assert get_delivery(conn, first.delivery_id).lock_pid is None
    assert start_or_resume(conn, changed, force_new_content=True) == first.delivery_id
    conn.close()
    second, _ = send(db, changed, sink=sink, batch_size=10)
    assert second.delivery_id == first.delivery_id and second.state == "done"
    assert sum(sink.counts().values()) == 30
    versions = collections.Counter(m.prepared.rendered.subject for m in sink.messages.values())
    assert versions == {"Hello (v1)": 10, "Hello (v2)": 20}


def test_test_sends_do_not_use_the_ledger(db):
    conn = open_ledger(db)
    pub = Publication(name="T", from_email="news@example.org")
    with pytest.raises(InputError):
        start_or_resume(conn, PreparedIssue(make_rendered(), pub, SECRET, test=True))


def test_real_transport_needs_a_configured_secret_key(db):
    add_subscribers(db, 3)

    class Real(Recorder):
        real = True

    conn = open_ledger(db)
    did = start_or_resume(conn, make_prepared())
    with pytest.raises(ConfigError, match="NEWSLETTER_SECRET_KEY"):
        dev_keyed = PreparedIssue(make_rendered(), make_prepared().publication, "insecure-development-key:/x")
        run_delivery(conn, did, dev_keyed, Real, options=options())
    report = run_delivery(conn, did, make_prepared(), Real, options=options())
    assert report.sent == 3


def test_a_cancelled_delivery_does_not_cause_repeats(db):
    emails = add_subscribers(db, 20)
    stop = threading.Event()
    first, sink = send(db, stop=stop, batch_size=5, progress=lambda *a: stop.set())
    assert first.sent == 5
    conn = open_ledger(db)
    conn.execute("UPDATE deliveries SET state='cancelled' WHERE id=?", (first.delivery_id,))
    conn.close()
    second, _ = send(db, sink=sink, batch_size=5)
    assert second.delivery_id != first.delivery_id and second.total == 15
    assert sink.counts() == collections.Counter(emails)


# ---------------------------------------------------------------------------------------
# Failures and retries
# ---------------------------------------------------------------------------------------
def test_faults_everyone_deliverable_gets_exactly_one_copy(db):
    import random

    emails = add_subscribers(db, 300)
    bad = set(emails[5::37])  # 550 5.1.1: no such user
    rnd = random.Random(1234)
    tried = collections.Counter()
    mode = {}

    def behave(msg, key, call_no):
        tried[msg.to_email] += 1
        if call_no not in mode:
            mode[call_no] = rnd.choices(["ok", "drop", "429", "partial"], [6, 1, 1, 1])[0]
        m = mode[call_no]
        if m == "drop":
            return "drop"
        if m == "429":
            return SendResult(msg.to_email, Status.FAILED_TEMPORARY, error="HTTP 429 slow down", retry_after=30)
        if msg.to_email in bad:
            return SendResult(msg.to_email, Status.FAILED_PERMANENT, error="RCPT 550 5.1.1 no such user", bounce=True)
        if m == "partial" and msg.to_email[-1] in "02468":
            return SendResult(msg.to_email, Status.FAILED_TEMPORARY, error="RCPT 451 4.3.0 try later")
        if rnd.random() < 0.05:
            return SendResult(msg.to_email, Status.FAILED_TEMPORARY, error="DATA 451 4.7.1 greylisted")
        return None

    ft = FakeTime()
    report, sink = send(db, transport=Recorder(behave=behave), ft=ft, batch_size=20)
    assert set(mode.values()) == {"ok", "drop", "429", "partial"}  # every kind of fault happened
    assert sink.counts() == collections.Counter(set(emails) - bad)  # exactly one copy each
    assert report.state == "done" and report.sent == 300 - len(bad)
    assert report.failed_permanent == len(bad) and report.failed_temporary == 0
    for e in bad:
        assert subscriber_status(db, e) == "bounced"
        assert tried[e] >= 1
    assert subscriber_status(db, emails[0]) == "active"
    assert max(tried.values()) > 1  # retries happened
    assert sum(ft.sleeps) >= 30  # the 429's retry_after was honoured
    failed = failed_recipients(open_ledger(db), report.delivery_id)
    assert {e for e, s, _ in failed} == bad and all("550" in err for _, _, err in failed)


def test_temporary_failures_are_retried_over_the_window_then_final(db):
    emails = add_subscribers(db, 3)
    never = emails[1]
    ft = FakeTime()

    def behave(msg, key, call_no):
        if msg.to_email == never:
            return SendResult(msg.to_email, Status.FAILED_TEMPORARY, error="451 mailbox busy")

    report, sink = send(db, transport=Recorder(behave=behave), ft=ft, retry_window=3600, max_wait=10**6)
    assert sink.counts() == collections.Counter([emails[0], emails[2]])
    assert report.state == "done" and report.failed_temporary == 1 and report.sent == 2
    assert ledger_states(db, report.delivery_id)[never] == "gave-up"
    conn = open_ledger(db)
    attempts, err = conn.execute("SELECT attempts, last_error FROM ledger WHERE email=?", (never,)).fetchone()
    # Final only once the window had passed since the first failure, however many tries that took.
    assert 3600 <= sum(ft.sleeps) <= 3600 + BACKOFF_CAP
    tries = sum(never in rcpts for _, rcpts in sink.calls)
    assert attempts == tries > 10 and f"gave up after {attempts} attempts over 1." in err
    # Waits grow with jitter within [d/2, d] of 1, 2, 4, 8, 16 seconds, up to a cap of minutes.
    for slept, nominal in zip(ft.sleeps, [1, 2, 4, 8, 16]):
        assert nominal / 2 <= slept <= nominal
    assert tries < 3600 / (BACKOFF_CAP / 2) + 12
    assert subscriber_status(db, never) == "active"  # temporary failures never suppress
    # retry_failed gives it a fresh window on the next run (even on a done delivery).
    report2, _ = send(db, transport=Recorder(sink), retry_failed=True)
    assert report2.sent == 3 and report2.failed_temporary == 0
    assert sink.counts()[never] == 1


def test_rejected_is_permanent_and_bounce_suppresses(db):
    emails = add_subscribers(db, 4)

    def behave(msg, key, call_no):
        if msg.to_email == emails[0]:
            return SendResult(msg.to_email, Status.REJECTED, error="suppressed by provider")
        if msg.to_email == emails[1]:
            return SendResult(msg.to_email, Status.FAILED_PERMANENT, error="554 content rejected")

    report, sink = send(db, transport=Recorder(behave=behave))
    states = ledger_states(db, report.delivery_id)
    assert states[emails[0]] == states[emails[1]] == "failed-permanent"
    assert report.failed_permanent == 2 and report.sent == 2
    # No bounce flag: a content refusal says nothing about the address.
    assert subscriber_status(db, emails[0]) == subscriber_status(db, emails[1]) == "active"
    assert len(sink.calls) == 1  # permanent failures are never retried


def test_idempotency_key_is_stable_when_a_whole_batch_is_retried(db):
    emails = add_subscribers(db, 10)
    def behave(msg, key, call_no):
        if call_no == 0:
            return SendResult(msg.to_email, Status.FAILED_TEMPORARY, error="HTTP 503", retry_after=2)
        if call_no == 1 and msg.to_email == emails[5]:  # a partial failure in the second batch
            return SendResult(msg.to_email, Status.FAILED_TEMPORARY, error="451")

    ft = FakeTime()
    report, sink = send(db, transport=Recorder(behave=behave), ft=ft, batch_size=5)
    assert sink.counts() == collections.Counter(emails)
    d = report.delivery_id
    calls = sink.calls
    by_key = collections.defaultdict(list)
    for k, rcpts in calls:
        by_key[k].append(rcpts)
    assert by_key[key(db, d, 1)] == [emails[:5], emails[:5]]  # the same batch, the same key, twice
    assert by_key[key(db, d, 2)] == [emails[5:]]
    assert by_key[key(db, d, 3)] == [[emails[5]]]  # a lone retry gets a batch (and key) of its own
    assert len(calls) == 4
    assert sum(ft.sleeps) == pytest.approx(2.0)  # the batch came back exactly when retry_after allowed


def test_a_transport_error_after_it_worked_holds_the_run_resumable(db):
    emails = add_subscribers(db, 12)
    fail = {"on": True}

    class Broken(Recorder):
        def send(self, messages, idempotency_key=None):
            if fail["on"] and len(self.sink.calls) == 1:
                raise TransportError("SMTP server refused the login")
            return super().send(messages, idempotency_key)

    sink = Sink()
    # Issue 22: it worked for the first batch, so the refusal is the sender's to fix: held (exit 9),
    # not "the transport could not be used" (exit 4, which says nobody was contacted).
    report, _ = send(db, transport=Broken(sink), batch_size=5, daily_cap=100)
    assert report.state == "held"
    conn = open_ledger(db)
    d = conn.execute("SELECT id, state, lock_owner, reason FROM deliveries").fetchone()
    assert d["state"] == "held" and d["lock_owner"] is None and "refused the login" in d["reason"]
    assert collections.Counter(ledger_states(db, d["id"]).values()) == {"sent": 5, "pending": 7}
    assert conn.execute("SELECT count FROM daily_counts").fetchone()[0] == 5  # the unsent batch was not counted
    conn.close()
    fail["on"] = False
    report, _ = send(db, transport=Broken(sink), batch_size=5)
    assert report.state == "done" and sink.counts() == collections.Counter(emails)


# ---------------------------------------------------------------------------------------
# Crashes mid-batch: the uncertain recipients
# ---------------------------------------------------------------------------------------
class Crash(BaseException):
    """Stands in for the process dying mid-send (nothing after it runs except finally blocks)."""


def crash_in_third_batch(db: Path, sink: Sink) -> int:
    def before(messages, key):
        if len(sink.calls) == 3:
            # half the batch reaches the server, then the "process dies"
            for m in messages[:2]:
                sink.received.append((m.to_email, m.message_id, key))
            raise Crash()

    with pytest.raises(Crash):
        send(db, transport=Recorder(sink, before=before), batch_size=5)
    conn = open_ledger(db)
    did = conn.execute("SELECT id FROM deliveries").fetchone()[0]
    assert conn.execute("SELECT lock_owner FROM deliveries").fetchone()[0] is None  # released in finally
    conn.close()
    return did


def test_uncertain_recipients_are_resent_under_the_same_key_by_default(db):
    emails = add_subscribers(db, 20)
    sink = Sink()
    did = crash_in_third_batch(db, sink)
    assert collections.Counter(ledger_states(db, did).values()) == {"sent": 10, "sending": 5, "pending": 5}
    report, _ = send(db, sink=sink, batch_size=5)
    assert report.interrupted_resent == 5 and report.uncertain_resent == report.uncertain_reported == 0
    assert report.state == "done" and report.sent == 20
    counts = sink.counts()
    assert set(counts) == set(emails)
    assert {e for e, n in counts.items() if n > 1} == set(emails[10:12])  # the only duplicates: in flight
    keys = [k for k, r in sink.calls if r == emails[10:15]]
    assert keys == [key(db, did, 3), key(db, did, 3)]  # resent under the crashed batch's key


def test_uncertain_recipients_are_reported_not_resent_when_asked(db):
    emails = add_subscribers(db, 20)
    sink = Sink()
    did = crash_in_third_batch(db, sink)
    report, _ = send(db, sink=sink, batch_size=5, resend_uncertain=False)
    assert report.uncertain_reported == 5 and report.uncertain_resent == 0
    assert report.state == "done" and report.sent == 15 and "uncertain" in report.note
    counts = sink.counts()
    assert all(n == 1 for n in counts.values())
    assert set(emails) - set(counts) == set(emails[12:15])  # never sent again: lost unless resent
    states = ledger_states(db, did)
    assert {e for e, s in states.items() if s == "uncertain"} == set(emails[10:15])
    failed = failed_recipients(open_ledger(db), did)
    assert {e for e, s, _ in failed if s == "uncertain"} == set(emails[10:15])
    # A done delivery sends nobody again, whatever the resend policy says now.
    report2, _ = send(db, sink=sink, batch_size=5)
    assert report2.state == "done" and report2.sent_this_run == 0 and report2.uncertain == 5
    assert sink.counts() == counts


def test_keyboard_interrupt_releases_the_lock(db):
    add_subscribers(db, 10)

    def before(messages, key):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        send(db, transport=Recorder(before=before))
    conn = open_ledger(db)
    row = conn.execute("SELECT state, lock_owner, lock_pid FROM deliveries").fetchone()
    assert row["lock_owner"] is None and row["lock_pid"] is None and row["state"] == "running"
    assert not conn.in_transaction


# ---------------------------------------------------------------------------------------
# One sender per delivery
# ---------------------------------------------------------------------------------------
def test_two_concurrent_senders_only_one_sends(db):
    emails = add_subscribers(db, 30)
    inside, release = threading.Event(), threading.Event()
    sink = Sink()

    def before(messages, key):
        inside.set()
        assert release.wait(20)

    conn_a = open_ledger(db)
    did = start_or_resume(conn_a, make_prepared())
    result: dict[str, object] = {}

    def sender_a():
        try:
            result["a"] = run_delivery(conn_a, did, make_prepared(), lambda: Recorder(sink, before=before),
                                       options=options(batch_size=10))
        except BaseException as exc:  # pragma: no cover - reported below
            result["a"] = exc

    th = threading.Thread(target=sender_a)
    th.start()
    try:
        assert inside.wait(20)
        conn_b = open_ledger(db)
        assert start_or_resume(conn_b, make_prepared()) == did  # the same delivery, not a second one
        with pytest.raises(DeliveryLockedError) as err:
            run_delivery(conn_b, did, make_prepared(), lambda: Recorder(sink), options=options(batch_size=10))
        assert f"pid {os.getpid()}" in str(err.value) and f"#{did}" in str(err.value)
    finally:
        release.set()
        th.join(30)
    assert result["a"].sent == 30
    assert sink.counts() == collections.Counter(emails)


def test_two_processes_only_one_sends(db, tmp_path):
    """A second *process* on the same delivery gets DeliveryLockedError naming the first one's pid."""
    add_subscribers(db, 10)
    conn = open_ledger(db)
    did = start_or_resume(conn, make_prepared())
    script = tmp_path / "second.py"
    script.write_text(f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
from tests.helpers import make_prepared, options, Recorder
from newsletter.delivery import run_delivery
from newsletter.ledger import open_ledger
from newsletter.errors import DeliveryLockedError
conn = open_ledger({str(db)!r})
try:
    run_delivery(conn, {did}, make_prepared(), Recorder, options=options())
except DeliveryLockedError as exc:
    print("LOCKED", exc)
    sys.exit(5)
print("SENT")
""")
    holder: dict[str, object] = {}

    def before(messages, key):
        if "proc" not in holder:
            holder["proc"] = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                                            timeout=60)

    report = run_delivery(conn, did, make_prepared(), lambda: Recorder(before=before), options=options())
    proc = holder["proc"]
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert f"pid {os.getpid()}" in proc.stdout
    assert report.sent == 10


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _set_lock(db: Path, did: int, pid: int, host: str, heartbeat: datetime) -> None:
    conn = open_ledger(db)
    conn.execute("UPDATE deliveries SET lock_owner='someone-else', lock_pid=?, lock_host=?, lock_heartbeat=? "
                 "WHERE id=?", (pid, host, heartbeat.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), did))
    conn.close()


def test_stale_locks_are_recovered_live_ones_are_not(db):
    import socket

    emails = add_subscribers(db, 10)
    conn = open_ledger(db)
    did = start_or_resume(conn, make_prepared())
    conn.close()
    now = datetime.now(timezone.utc)
    here = socket.gethostname()
    # A live process on this host (our parent), fresh heartbeat: locked.
    _set_lock(db, did, os.getppid(), here, now)
    with pytest.raises(DeliveryLockedError, match=f"pid {os.getppid()}"):
        send(db)
    # Another host, fresh heartbeat: we cannot check its pid, so it is live.
    _set_lock(db, did, 4242, "elsewhere.example", now)
    with pytest.raises(DeliveryLockedError, match="elsewhere.example"):
        send(db)
    # Another host, heartbeat older than the lease (60 s by default): stale.
    _set_lock(db, did, 4242, "elsewhere.example", now - timedelta(seconds=61))
    stop = threading.Event()
    report, sink = send(db, batch_size=2, stop=stop, progress=lambda *a: stop.set())
    assert report.sent == 2
    # This host, dead pid, fresh heartbeat: stale.
    _set_lock(db, did, _dead_pid(), here, now)
    report, _ = send(db, sink=sink, batch_size=2)
    assert report.state == "done" and sink.counts() == collections.Counter(emails)


# ---------------------------------------------------------------------------------------
# Pacing, concurrency, the daily cap
# ---------------------------------------------------------------------------------------
def test_rate_pacing_sleeps_exactly_what_the_rate_requires(sqlite_db):  # pacing: the same on any backend
    db = sqlite_db
    add_subscribers(db, 20)
    ft = FakeTime()
    report, _ = send(db, ft=ft, rate=10, batch_size=5)
    assert report.sent == 20
    assert ft.sleeps == pytest.approx([0.5, 0.5, 0.5])  # batch k goes at 5k/10 s

    # A transport that takes 0.2 s per batch: only the remainder is slept.
    db2 = db.with_name("slow.db")
    add_subscribers(db2, 20)
    ft2 = FakeTime()

    def slow(messages, key):
        ft2.t += 0.2

    report2, _ = send(db2, transport=Recorder(before=slow), ft=ft2, rate=10, batch_size=5)
    assert report2.sent == 20 and ft2.sleeps == pytest.approx([0.3, 0.3, 0.3])
    assert report2.elapsed == pytest.approx(0.2 * 4 + 0.9)


def test_rate_is_an_upper_bound_even_with_large_batches(db):
    # A batch goes out in one burst: with batch_size 100 and rate 4, a batch of 100 would
    # send 100 messages in its first second. Batches are capped at one second's worth.
    add_subscribers(db, 12)
    ft = FakeTime()
    sizes: list[int] = []
    report, _ = send(db, transport=Recorder(before=lambda messages, key: sizes.append(len(messages))),
                     ft=ft, rate=4, batch_size=100)
    assert report.sent == 12 and sizes == [4, 4, 4]
    assert ft.sleeps == pytest.approx([1.0, 1.0])
    assert DeliveryOptions(rate=0.5, batch_size=100).claim_size == 1
    assert DeliveryOptions(batch_size=100).claim_size == 100


def test_pacer_does_not_bank_credit_and_refunds():
    ft = FakeTime()
    p = Pacer(100, ft.clock)
    assert p.reserve(50) == 0
    assert p.reserve(50) == pytest.approx(0.5)
    ft.t += 10  # a long pause: the next batch goes at once, but no burst beyond that
    assert p.reserve(100) == 0
    assert p.reserve(100) == pytest.approx(1.0)
    p.refund(100)
    assert p.reserve(100) == pytest.approx(1.0)
    assert Pacer(None, ft.clock).reserve(10**6) == 0


def test_backoff_grows_is_capped_and_honours_retry_after():
    import random

    rng = random.Random(7)
    for attempt, nominal in [(1, 1), (2, 2), (3, 4), (4, 8), (12, BACKOFF_CAP)]:
        for _ in range(50):
            assert nominal / 2 <= backoff_delay(attempt, rng=rng) <= nominal
    assert backoff_delay(1, retry_after=42, rng=rng) == 42
    assert backoff_delay(1, retry_after=10**9, rng=rng) == BACKOFF_CAP


def test_concurrent_workers_each_with_their_own_transport(db):
    emails = add_subscribers(db, 500)
    sink = Sink()
    made: list[Recorder] = []

    def factory():
        t = Recorder(sink, behave=lambda m, k, c: SendResult(m.to_email, Status.FAILED_TEMPORARY, error="451")
                     if c % 7 == 3 else None)
        made.append(t)
        return t

    conn = open_ledger(db)
    did = start_or_resume(conn, make_prepared())
    ft = FakeTime()
    report = run_delivery(conn, did, make_prepared(), factory, options=options(batch_size=25, concurrency=4),
                          clock=ft)
    assert len(made) == 4 and all(t.closed for t in made)
    assert report.state == "done" and report.sent == 500
    assert sink.counts() == collections.Counter(emails)


def test_daily_cap_pauses_and_resumes_the_next_day(db):
    emails = add_subscribers(db, 60)
    sink = Sink()
    day = {"now": DAY1}
    kw = dict(sink=sink, batch_size=10, daily_cap=25, now=lambda: day["now"])
    r1, _ = send(db, **kw)
    assert r1.state == "deferred" and r1.sent == 25 and "daily cap of 25" in r1.note
    assert r1.next_retry == datetime(2031, 3, 5, tzinfo=timezone.utc) and r1.pending == 35
    d = get_delivery(open_ledger(db), r1.delivery_id)
    assert d.resume_at == datetime(2031, 3, 5, tzinfo=timezone.utc) and d.lock_pid is None
    assert [len(r) for _, r in sink.calls] == [10, 10, 5]
    # Same day, a new process: the count survived in the database, nothing more goes out.
    day["now"] = DAY1 + timedelta(hours=10)
    r2, _ = send(db, **kw)
    assert r2.state == "deferred" and r2.sent_this_run == 0
    # The next UTC day: another 25.
    day["now"] = DAY1 + timedelta(days=1)
    r3, _ = send(db, **kw)
    assert r3.state == "deferred" and r3.sent == 50 and r3.sent_this_run == 25
    day["now"] = DAY1 + timedelta(days=2)
    r4, _ = send(db, **kw)
    assert r4.state == "done" and r4.sent == 60
    assert sink.counts() == collections.Counter(emails)
    conn = open_ledger(db)
    assert dict(conn.execute("SELECT day, count FROM daily_counts ORDER BY day").fetchall()) == {
        "2031-03-04": 25, "2031-03-05": 25, "2031-03-06": 10}


# ---------------------------------------------------------------------------------------
# Status
# ---------------------------------------------------------------------------------------
def test_status_counts_rate_and_eta(db):
    emails = add_subscribers(db, 40)

    def behave(msg, key, call_no):
        if msg.to_email == emails[0]:
            return SendResult(msg.to_email, Status.FAILED_PERMANENT, error="550 5.1.1 unknown", bounce=True)

    stop = threading.Event()
    report, _ = send(db, transport=Recorder(behave=behave), batch_size=10, stop=stop,
                     progress=lambda done, *a: stop.set() if done >= 20 else None)
    conn = open_ledger(db)
    [st] = delivery_status(conn, "001-hello")
    assert st.delivery.id == report.delivery_id and st.delivery.state == "paused"
    assert (st.total, st.sent, st.failed, st.remaining) == (40, 19, 1, 20)
    assert st.counts["pending"] == 20 and st.sender is None
    assert st.rate is None or st.rate > 0
    assert st.id == report.delivery_id and st.skipped == 0
    assert st.as_row()[:8] == (str(report.delivery_id), "001-hello", "paused", "40", "19", "20", "1", "0")
    assert delivery_status(conn, "nope") == []
    assert failed_recipients(conn, report.delivery_id) == [(emails[0], "failed-permanent", "550 5.1.1 unknown")]


def test_faults_through_a_real_smtp_server(db):
    """The same faults from a real SMTP server (aiosmtpd) through the real SMTPTransport."""
    import random

    from newsletter.transports.smtp import SMTPTransport
    from tests.smtp_server import SMTPTestServer

    emails = add_subscribers(db, 120)
    bad = set(emails[3::25])
    rnd = random.Random(99)
    greylisted = collections.Counter()

    def rcpt(address):
        if address in bad:
            return "550 5.1.1 no such user"
        if rnd.random() < 0.15:
            greylisted[address] += 1
            return "451 4.7.1 greylisted, try again later"
        return None

    with SMTPTestServer(rcpt_replies=rcpt, drop_after=15, drops=4) as server:
        conn = open_ledger(db)
        did = start_or_resume(conn, make_prepared())
        ft = FakeTime()
        report = run_delivery(conn, did, make_prepared(),
                              lambda: SMTPTransport("127.0.0.1", server.port, envelope_from="news@example.org",
                                                    security="none", timeout=10),
                              options=options(batch_size=20), clock=ft)
        received = collections.Counter(server.recipients())
        connections = server.connections
    assert greylisted and connections >= 5  # greylisting and four dropped connections happened
    assert received == collections.Counter(set(emails) - bad)
    assert report.state == "done" and report.sent == 120 - len(bad) and report.failed_permanent == len(bad)
    assert {e for e in emails if subscriber_status(db, e) == "bounced"} == bad


def test_a_sender_whose_lock_was_taken_over_stops_without_touching_the_new_owners_lock(db):
    add_subscribers(db, 30)

    def before(messages, key):
        if messages[0].to_email == "user00010@example.org":  # second batch: someone took over meanwhile
            other = connect(db)  # autocommits
            other.execute("UPDATE deliveries SET lock_owner='thief', lock_pid=1, lock_host='elsewhere'")
            other.close()

    with pytest.raises(DeliveryLockedError, match="took over"):
        send(db, transport=Recorder(before=before), batch_size=10)
    conn = open_ledger(db)
    assert conn.execute("SELECT lock_owner FROM deliveries").fetchone()[0] == "thief"
    # The batch in flight was not recorded by the old owner: it is the new owner's to resolve.
    assert collections.Counter(ledger_states(db, 1).values()) == {"sent": 10, "sending": 10, "pending": 10}


def test_forget_subscriber_lets_the_store_erase_them(db):
    from newsletter.ledger import forget_subscriber

    emails = add_subscribers(db, 3)
    send(db)
    store = SubscriberStore.open(db)
    sub = store.get_by_email(emails[1])
    with pytest.raises(InputError, match="delivery records"):
        store.remove(emails[1])
    assert forget_subscriber(open_ledger(db), sub.id) == 1
    assert store.remove(emails[1]) is True
    store.close()


# ---------------------------------------------------------------------------------------
# An answer lost after the message went out (SMTP after DATA, an HTTP read timeout)
# ---------------------------------------------------------------------------------------
def _uncertain_once(victim: str):
    seen: set[str] = set()

    def behave(msg, key, call_no):
        if msg.to_email == victim and victim not in seen:
            seen.add(victim)
            return SendResult(msg.to_email, Status.UNCERTAIN, error="connection lost after the message was sent")
        return None

    return behave


def test_uncertain_result_is_resent_by_default_and_counted(db):
    emails = add_subscribers(db, 20)
    report, sink = send(db, transport=Recorder(behave=_uncertain_once(emails[5])), batch_size=10)
    assert report.state == "done" and report.sent == 20
    assert sink.counts()[emails[5]] == 1  # this sink had not kept the first copy; the policy resent it
    assert report.uncertain_resent == 1


def test_uncertain_result_is_reported_not_resent_with_no_resend_uncertain(db):
    emails = add_subscribers(db, 20)
    report, sink = send(db, transport=Recorder(behave=_uncertain_once(emails[5])), batch_size=10,
                        resend_uncertain=False)
    assert emails[5] not in sink.counts()
    assert ledger_states(db, report.delivery_id)[emails[5]] == "uncertain"
    assert report.sent == 19 and report.uncertain_reported == 1
    conn = open_ledger(db)
    try:
        failed = {email: (state, error) for email, state, error in failed_recipients(conn, report.delivery_id)}
    finally:
        conn.close()
    assert failed[emails[5]][0] == "uncertain" and "may or may not" in failed[emails[5]][1]


def test_the_engine_and_scheduler_take_one_clock():
    """One seam (newsletter.clock): no separate clock, sleep and now to keep in step."""
    import inspect

    from newsletter.schedule import dispatch_once, run_worker

    for fn in (run_delivery, dispatch_once, run_worker):
        params = inspect.signature(fn).parameters
        assert "clock" in params and "sleep" not in params, fn.__name__
    assert "now" not in inspect.signature(run_delivery).parameters
    assert "now" not in inspect.signature(run_worker).parameters


def test_a_shifted_clock_reads_its_start_and_runs_on_with_its_base():
    from newsletter.clock import ShiftedClock

    ft = FakeTime(wall=DAY1)
    shifted = ShiftedClock(ft, DAY1 + timedelta(days=3))
    assert shifted.now() == DAY1 + timedelta(days=3)
    shifted.sleep(90)
    assert shifted.now() == DAY1 + timedelta(days=3, seconds=90) and ft.sleeps == [90]
    assert shifted.monotonic() == ft.monotonic()
