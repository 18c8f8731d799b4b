"""The unsubscribe spool (kept by the web app while SQLite stayed locked) is applied by the
delivery engine before it freezes the list and at every resume, so a send never mails a
reader whose unsubscribe is waiting in the spool."""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timezone

import pytest

from newsletter.store import SubscriberStore
from newsletter.tokens import make_token
from newsletter.unsubscribe_spool import apply_spool, spool_path, spool_unsubscribe

from tests.helpers import SECRET, Recorder, Sink, add_subscribers, ledger_states, send, subscriber_status


@pytest.fixture
def db(tmp_path):
    """The spool exists for SQLite only (on PostgreSQL an unsubscribe never waits for a writer)."""
    return tmp_path / "news.db"

AT = datetime(2031, 3, 4, 9, 0, tzinfo=timezone.utc)


def token_of(db, email: str) -> str:
    store = SubscriberStore.open(db)
    try:
        return make_token(SECRET, store.get_by_email(email).id, email)
    finally:
        store.close()


def test_a_spooled_unsubscribe_is_applied_before_the_list_is_frozen(db):
    emails = add_subscribers(db, 5)
    gone = emails[2]
    spool_unsubscribe(db, token_of(db, gone), "one-click (RFC 8058)", AT)
    assert spool_path(db).exists()

    report, sink = send(db)

    assert report.state == "done"
    assert sorted(sink.counts()) == sorted(e for e in emails if e != gone)
    assert gone not in ledger_states(db, 1)  # never even frozen into the list
    assert subscriber_status(db, gone) == "unsubscribed"
    assert not spool_path(db).exists()


def test_a_spooled_unsubscribe_is_applied_on_resume(db):
    emails = add_subscribers(db, 6)
    stop = threading.Event()
    sink = Sink()

    def stop_after_first_batch(messages, key):
        stop.set()

    first = Recorder(sink, before=stop_after_first_batch)
    report, _ = send(db, transport=first, stop=stop, batch_size=2)
    assert report.state == "paused"
    unsent = [e for e in emails if e not in sink.counts()]
    gone = unsent[-1]
    spool_unsubscribe(db, token_of(db, gone), "one-click (RFC 8058)", AT)

    report, _ = send(db, transport=Recorder(sink), batch_size=2)

    assert report.state == "done"
    assert gone not in sink.counts()
    assert ledger_states(db, 1)[gone] == "skipped"
    assert subscriber_status(db, gone) == "unsubscribed"
    assert not spool_path(db).exists()


def test_a_forged_or_garbled_spool_line_changes_nobody(db):
    emails = add_subscribers(db, 2)
    store = SubscriberStore.open(db)
    try:  # a real reader's id with the tag of another address: only the tag check refuses it
        forged = make_token(SECRET, store.get_by_email(emails[0]).id, "someone.else@example.org")
        confirm = make_token(SECRET, store.get_by_email(emails[1]).id, emails[1], "confirm")  # wrong purpose
    finally:
        store.close()
    lines = [json.dumps({"token": t, "reason": "x"}) for t in ("A" * 32, forged, confirm)]
    spool_path(db).write_text("\n".join(lines) + "\nnot json\n[1]\n")
    store = SubscriberStore.open(db)
    try:
        assert apply_spool(store, SECRET, now=AT) == 0
    finally:
        store.close()
    assert [subscriber_status(db, e) for e in emails] == ["active", "active"]
    assert not spool_path(db).exists()


def test_the_web_app_and_the_engine_find_one_spool_through_a_symlinked_database(db, tmp_path):
    """NEWSLETTER_DB may be a symbolic link; SQLite reports the real file, so the spool must live there."""
    emails = add_subscribers(db, 2)
    link = tmp_path / "links" / "newsletter.db"
    link.parent.mkdir()
    link.symlink_to(db)
    spool_unsubscribe(link, token_of(db, emails[0]), "one-click (RFC 8058)", AT)  # as the web app would

    report, sink = send(db)

    assert report.state == "done" and sorted(sink.counts()) == [emails[1]]
    assert subscriber_status(db, emails[0]) == "unsubscribed"


def test_a_spool_left_taken_by_a_killed_process_is_applied(db):
    """A process killed between taking the spool and committing it must not lose its lines."""
    import subprocess
    import sys

    emails = add_subscribers(db, 2)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = spool_path(db).with_name(f"{spool_path(db).name}.{int(dead.stdout)}.12345")
    orphan.write_text(json.dumps({"token": token_of(db, emails[0]), "reason": "one-click (RFC 8058)"}) + "\n")
    live = spool_path(db).with_name(f"{spool_path(db).name}.{os.getpid()}.999")  # being applied right now
    live.write_text(json.dumps({"token": token_of(db, emails[1]), "reason": "one-click (RFC 8058)"}) + "\n")

    report, sink = send(db)

    assert subscriber_status(db, emails[0]) == "unsubscribed" and not orphan.exists()
    assert sorted(sink.counts()) == [emails[1]] and live.exists()  # a live process's file is its own


def test_an_unsubscribe_spooled_while_the_send_runs_is_honoured_by_the_next_batch(db):
    """The web app spools when the database is locked, which is most often while a send writes:
    the running send applies the spool before each claim, so that reader is not mailed (review)."""
    emails = add_subscribers(db, 30)
    gone = emails[25]
    token = token_of(db, gone)

    def during_first_batch(messages, key):
        if messages[0].to_email == emails[0]:
            spool_unsubscribe(db, token, "one-click (RFC 8058)", AT)

    report, sink = send(db, transport=Recorder(before=during_first_batch), batch_size=10)
    assert report.state == "done" and gone not in sink.counts()
    assert ledger_states(db, 1)[gone] == "skipped" and subscriber_status(db, gone) == "unsubscribed"
    assert not spool_path(db).exists()


def test_an_append_that_races_an_applier_taking_the_spool_is_not_lost(db, monkeypatch):
    """Another process (serve runs several) takes the spool away, reads and deletes it, between
    this append opening the file and writing to it: the append must land in the new spool, not in
    the taken copy that was already read."""
    from newsletter import unsubscribe_spool

    emails = add_subscribers(db, 3)
    first, second = token_of(db, emails[0]), token_of(db, emails[1])
    spool_unsubscribe(db, first, "first", AT)
    spool = spool_path(db)
    real_flock, raced = unsubscribe_spool.fcntl.flock, []

    def flock(fd: int, op: int) -> None:
        if not raced and spool.exists() and os.fstat(fd).st_ino == spool.stat().st_ino:
            # The appender has opened the spool: another process's applier takes it now (as
            # apply_spool does: a rename, then a read under the flock), then deletes it.
            taken = spool.with_name("taken-by-another-process")
            os.replace(spool, taken)
            raced.append(unsubscribe_spool._read_taken(taken).decode())
            taken.unlink()
        real_flock(fd, op)

    monkeypatch.setattr(unsubscribe_spool.fcntl, "flock", flock)
    spool_unsubscribe(db, second, "second", AT)
    assert [json.loads(line)["reason"] for line in raced[0].splitlines()] == ["first"]
    assert [json.loads(line)["reason"] for line in spool.read_text().splitlines()] == ["second"]
