"""Scheduling with an injected clock: due, not due, cancelled, too late, changed, and SIGTERM mid-send."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from newsletter.ledger import get_delivery, open_ledger, start_or_resume
from newsletter.errors import InputError
from newsletter.schedule import cancel, dispatch_once, due, list_scheduled, run_worker, schedule
from newsletter.transports.base import SendResult, Status, Transport

from tests.helpers import FakeTime, Recorder, Sink, add_subscribers, ledger_states, make_prepared, options

T = datetime(2031, 5, 6, 7, 0, tzinfo=timezone.utc)
HERE = Path(__file__).resolve().parent


class FileTransport(Transport):
    """Appends "email message-id" per accepted message to a file, flushed each time (for subprocesses)."""

    name = "file"
    real = False

    def __init__(self, path: str | Path):
        self.fh = open(path, "a", encoding="utf-8")

    def send(self, messages, idempotency_key=None):
        out = []
        for m in messages:
            m.as_bytes()
            self.fh.write(f"{m.to_email} {m.message_id}\n")
            self.fh.flush()
            out.append(SendResult(m.to_email, Status.SENT, provider_id=m.message_id))
        return out

    def close(self):
        self.fh.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path) -> Path | str:
    """A SQLite file, or a fresh PostgreSQL database's URL: scheduling runs on both."""
    return tmp_path / "news.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")


def dispatch(conn, now, sink, ft=None, **kw):
    ft = ft or FakeTime()
    version = kw.pop("version", "v1")
    return dispatch_once(conn, now, lambda slug: make_prepared(slug, version),
                         lambda: Recorder(sink), options(**kw), clock=ft)


def test_due_not_due_and_sent_once(db):
    emails = add_subscribers(db, 30)
    conn = open_ledger(db)
    did = schedule(conn, make_prepared(), T)
    d = get_delivery(conn, did)
    assert d.state == "scheduled" and d.send_at == T and d.frozen_at is None
    assert [x.id for x in list_scheduled(conn)] == [did]
    sink = Sink()
    assert due(conn, T - timedelta(seconds=1)) == []
    assert dispatch(conn, T - timedelta(minutes=1), sink) == [] and sink.calls == []
    assert [x.id for x in due(conn, T)] == [did]
    add_subscribers(db, 1, start=500)  # joins before the send: the list is frozen at send time
    [report] = dispatch(conn, T + timedelta(minutes=1), sink, batch_size=7)
    assert report.delivery_id == did and report.state == "done" and report.sent == 31
    assert sink.counts() == collections.Counter(emails + ["user00500@example.org"])
    assert dispatch(conn, T + timedelta(minutes=2), sink) == []  # nothing due any more
    assert list_scheduled(conn) == []
    with pytest.raises(InputError, match="already sent"):
        schedule(conn, make_prepared(), T + timedelta(days=1))


def test_send_time_needs_a_time_zone(db):
    conn = open_ledger(db)
    with pytest.raises(InputError, match="time zone"):
        schedule(conn, make_prepared(), datetime(2031, 1, 1, 9, 0))


def test_schedule_again_moves_it_and_takes_the_current_content(db):
    add_subscribers(db, 3)
    conn = open_ledger(db)
    did = schedule(conn, make_prepared(version="v1"), T)
    assert schedule(conn, make_prepared(version="v2"), T + timedelta(hours=2)) == did
    d = get_delivery(conn, did)
    assert d.send_at == T + timedelta(hours=2) and d.content_hash == make_prepared(version="v2").rendered.content_hash
    sink = Sink()
    assert dispatch(conn, T + timedelta(hours=1), sink, version="v2") == []
    [r] = dispatch(conn, T + timedelta(hours=2, minutes=5), sink, version="v2")
    assert r.sent == 3


def test_cancelled_is_never_sent(db):
    add_subscribers(db, 5)
    conn = open_ledger(db)
    did = schedule(conn, make_prepared(), T)
    d = cancel(conn, f"#{did}")
    assert d.state == "cancelled" and "was scheduled" in d.reason
    sink = Sink()
    assert dispatch(conn, T + timedelta(minutes=1), sink) == [] and sink.calls == []
    with pytest.raises(InputError, match="cancelled"):
        cancel(conn, did)
    with pytest.raises(InputError, match="no delivery"):
        cancel(conn, "no-such-issue")
    # The issue can be scheduled afresh after a cancel.
    again = schedule(conn, make_prepared(), T + timedelta(days=1))
    assert again != did and cancel(conn, "001-hello").id == again


def test_too_late_is_held_not_sent(db, tmp_path):
    add_subscribers(db, 5)
    conn = open_ledger(db)
    did = schedule(conn, make_prepared(), T)
    sink = Sink()
    [r] = dispatch_once(conn, T + timedelta(hours=7), lambda s: make_prepared(s), lambda: Recorder(sink),
                        options(), max_lateness=timedelta(hours=6))
    assert r.state == "held" and r.sent == 0 and "missed its send time" in r.note and "7 h" in r.note
    assert sink.calls == [] and get_delivery(conn, did).state == "held"
    assert dispatch(conn, T + timedelta(hours=8), sink) == []  # held stays held
    # Within the allowed lateness it goes out.
    db2 = tmp_path / "b.db"  # a second publication (its backend does not matter here)
    add_subscribers(db2, 5)
    conn2 = open_ledger(db2)
    schedule(conn2, make_prepared(), T)
    [r2] = dispatch(conn2, T + timedelta(hours=5, minutes=59), sink)
    assert r2.state == "done" and r2.sent == 5


def test_changed_after_scheduling_is_held(db):
    add_subscribers(db, 5)
    conn = open_ledger(db)
    did = schedule(conn, make_prepared(version="v1"), T)
    sink = Sink()
    [r] = dispatch(conn, T + timedelta(minutes=1), sink, version="v2")
    assert r.state == "held" and "changed after it was scheduled" in r.note
    assert sink.calls == [] and get_delivery(conn, did).state == "held"
    assert ledger_states(db, did) == {}  # the list was never frozen
    # Rescheduling takes the reviewed new version.
    schedule(conn, make_prepared(version="v2"), T + timedelta(minutes=5))
    [r] = dispatch(conn, T + timedelta(minutes=6), sink, version="v2")
    assert r.state == "done" and r.sent == 5


def test_preparation_failure_is_held(db):
    add_subscribers(db, 2)
    conn = open_ledger(db)
    schedule(conn, make_prepared(), T)

    def prepare(slug):
        raise InputError("issues/001-hello.md: no such file")

    [r] = dispatch_once(conn, T, prepare, lambda: Recorder(), options())
    assert r.state == "held" and "no such file" in r.note


def test_worker_resumes_interrupted_and_capped_deliveries(db):
    emails = add_subscribers(db, 20)
    conn = open_ledger(db)
    # A manual send that died: running, a dead process's lock, 5 sent.
    did = start_or_resume(conn, make_prepared())
    sink = Sink()
    from tests.helpers import send
    stop = threading.Event()
    send(db, sink=sink, stop=stop, batch_size=5, progress=lambda *a: stop.set())
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    conn.execute("UPDATE deliveries SET state='running', lock_owner='x', lock_pid=?, lock_host=?, "
                 "lock_heartbeat=? WHERE id=?", (proc.pid, os.uname().nodename,
                                                 datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), did))
    assert [d.id for d in due(conn, T)] == [did]
    day = T.replace(hour=9)
    reports = dispatch(conn, day, sink, batch_size=5, daily_cap=10)
    assert [(r.delivery_id, r.state, r.sent) for r in reports] == [(did, "deferred", 15)]
    assert due(conn, day + timedelta(hours=1)) == []  # capped: not due again today
    nxt = datetime(2031, 5, 7, 0, 0, 1, tzinfo=timezone.utc)
    assert [d.id for d in due(conn, nxt)] == [did]
    [r] = dispatch(conn, nxt, sink, batch_size=5, daily_cap=10)
    assert r.state == "done" and sink.counts() == collections.Counter(emails)


def test_run_worker_polls_until_stopped(db):
    emails = add_subscribers(db, 10)
    conn = open_ledger(db)
    schedule(conn, make_prepared(), T + timedelta(minutes=1))
    ft = FakeTime(wall=T)
    stop = threading.Event()
    polls = []
    sink = Sink()

    def on_poll():
        polls.append(ft.now())
        if len(polls) == 3:
            ft.t += 120  # two minutes on: the send is due
        if len(polls) > 50:  # bounded, whatever happens
            stop.set()

    def on_report(r):
        stop.set()

    reports = run_worker(conn, make_prepared, lambda: Recorder(sink), options(), stop=stop, poll_interval=0.001,
                         on_poll=on_poll, on_report=on_report, clock=ft)
    assert len(polls) == 3 and [r.state for r in reports] == ["done"]
    assert sink.counts() == collections.Counter(emails)


WORKER = """
import json, signal, sys, threading
sys.path.insert(0, {tests!r})
from datetime import datetime, timezone
from tests.helpers import make_prepared, options
from tests.test_schedule import FileTransport
from newsletter.ledger import open_ledger
from newsletter.schedule import run_worker

stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
signal.signal(signal.SIGINT, lambda *a: stop.set())
conn = open_ledger({db!r})
reports = run_worker(conn, make_prepared, lambda: FileTransport({out!r}),
                     options(batch_size=10, rate=100), stop=stop, poll_interval=0.05,
                     on_report=lambda r: print("REPORT", r.state, r.sent, r.pending, flush=True))
print("EXITED", len(reports), flush=True)
"""


def test_sigterm_during_a_send_stops_cleanly_and_resumably(db, tmp_path):
    emails = add_subscribers(db, 200)
    conn = open_ledger(db)
    did = schedule(conn, make_prepared(), datetime.now(timezone.utc) - timedelta(minutes=1))
    out = tmp_path / "sent.txt"
    out.touch()
    proc = subprocess.Popen([sys.executable, "-c", WORKER.format(tests=str(HERE.parent), db=str(db), out=str(out))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while len(out.read_text().splitlines()) < 40:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the worker never got going"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert "REPORT paused" in stdout and "EXITED 1" in stdout
    lines = out.read_text().splitlines()
    assert 40 <= len(lines) < 200, "the send should have been stopped part-way"
    states = collections.Counter(ledger_states(db, did).values())
    assert states["sending"] == 0 and states["sent"] == len(lines)  # the batch in flight was recorded
    d = get_delivery(conn, did)
    assert d.state == "paused" and d.lock_pid is None and d.resume_at is not None
    # The next worker run picks it up and finishes it; nobody gets two copies.
    [r] = dispatch_once(conn, datetime.now(timezone.utc), make_prepared, lambda: FileTransport(out), options())
    assert r.state == "done" and r.sent == 200
    got = collections.Counter(line.split()[0] for line in out.read_text().splitlines())
    assert got == collections.Counter(emails)


def test_shown_send_times_write_the_offset_as_people_do():
    from newsletter.cli.formatting import display_time

    when = datetime(2031, 3, 9, 23, 30, tzinfo=timezone.utc)
    assert display_time(when, timezone(timedelta(hours=5, minutes=30))) == "2031-03-10 05:00 +05:30 (2031-03-09 23:30 UTC)"
    # A zone with seconds (historic LMT offsets): %z gives them whole, never cut as "+05:3028".
    odd = timezone(timedelta(hours=5, minutes=30, seconds=28))
    assert display_time(when, odd) == "2031-03-10 05:00 +053028 (2031-03-09 23:30 UTC)"
