"""Issue 22 #13: `status` and `resume` agree with what happened: reasons group across readers,
bounces are counted, `resume` continues at once and asks about the readers it will send."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from tests.helpers import run

from newsletter.ledger import open_ledger, retry_summary
from newsletter.transports.base import SendResult, Status
from tests.smtp_server import SMTPTestServer
from tests.helpers import FakeTime, Recorder, add_subscribers, send  # noqa: F401

BASE = {"NEWSLETTER_BASE_URL": "https://chinaffairs.example"}


@pytest.fixture
def db(any_db):
    """Each test on SQLite and on PostgreSQL (tests/conftest.py)."""
    return any_db


def _subscribe(root: Path, n: int) -> list[str]:
    emails = [f"reader{i}@example.org" for i in range(n)]
    csv = root / "subs.csv"
    csv.write_text("email,name\n" + "".join(f"{e},Reader {i}\n" for i, e in enumerate(emails)), encoding="utf-8")
    assert run(root, "subscribers", "import", str(csv)).exit_code == 0
    return emails


def test_commonest_reasons_group_replies_that_differ_only_by_reader(db):
    emails = add_subscribers(db, 12)

    def behave(msg, key, call_no):
        if msg.to_email in emails[:3]:
            return SendResult(msg.to_email, Status.FAILED_TEMPORARY, error=f"RCPT 452 4.2.2 <{msg.to_email}>: "
                              "mailbox full")
        return SendResult(msg.to_email, Status.FAILED_TEMPORARY,
                          error=f"RCPT 451 4.3.0 <{msg.to_email}>: temporary lookup failure (queue id Q{call_no}7A3F)")

    report, _ = send(db, transport=Recorder(behave=behave), max_wait=0)
    assert report.state == "deferred"
    _, reasons = retry_summary(open_ledger(db), report.delivery_id)
    assert [n for _, n in reasons] == [9, 3]
    assert "temporary lookup failure" in reasons[0][0] and "mailbox full" in reasons[1][0]
    assert not any("@" in text for text, _ in reasons)  # no reader's address shown for the group


def test_resume_continues_at_once_not_at_the_next_retry_time(db):
    emails = add_subscribers(db, 5)
    down = {"on": True}

    def behave(msg, key, call_no):
        return SendResult(msg.to_email, Status.FAILED_TEMPORARY, error="451 try later") if down["on"] else None

    ft = FakeTime()
    report, sink = send(db, transport=Recorder(behave=behave), ft=ft, max_wait=0)
    assert report.state == "deferred" and report.next_retry is not None
    down["on"] = False
    start = ft.t
    report, sink = send(db, transport=Recorder(sink, behave=behave), ft=ft, max_wait=0, retry_now=True)
    assert report.state == "done" and sorted(sink.counts()) == sorted(emails)
    assert ft.t == start  # nothing waited for


def test_resume_asks_about_the_readers_still_to_send_and_status_counts_bounces(publication_root):
    emails = _subscribe(publication_root, 50)
    later = set(emails[::5])  # 10 readers get a temporary failure
    gone = set(emails[1:4])   # 3 readers do not exist
    replies = {**{e: "451 4.3.0 try again later" for e in later}, **{e: "550 5.1.1 no such user" for e in gone}}
    with SMTPTestServer(rcpt_replies=replies) as server:
        env = {**server.env(), **BASE, "NEWSLETTER_FOREGROUND_WAIT": "0"}
        first = run(publication_root, "send", "6", "--yes", "--skip-checks", env=env)
        assert first.exit_code == 8, first.output
        asked = run(publication_root, "resume", "6", env=env)  # no --yes, no terminal
        assert asked.exit_code == 2 and "to 10 recipient(s)" in asked.output, asked.output
        status = run(publication_root, "status", "6", env=env)
    assert "3 hard, 0 soft" in status.output, status.output
    assert "10 readers deferred" in status.output and "451 4.3.0 try again later (10)" in status.output


def _smtp_send(db: Path, server: SMTPTestServer, progress=None, **opts):
    from newsletter.config import load_settings
    from newsletter.transports import get_transport
    from tests.helpers import Sink, make_prepared

    import tempfile

    root = db.parent if isinstance(db, Path) else Path(tempfile.mkdtemp())  # PostgreSQL: any empty folder
    settings = load_settings(root, environ={"NEWSLETTER_FROM": "news@example.org",
                                                 **server.env(SMTP_SECURITY="none")})
    return send(db, make_prepared(), transport=get_transport(settings), sink=Sink(), progress=progress, **opts)


def test_each_smtp_answer_is_in_the_ledger_as_soon_as_the_server_gives_it(db):
    # Issue 22: status's rate and ETA moved once per batch of 100 (2 minutes stale under a slow server).
    emails = add_subscribers(db, 100)
    seen: dict[str, object] = {}

    def watch(address):
        if address == emails[60]:  # mid-batch: the 60 answered before are already recorded
            from newsletter.ledger import delivery_status

            conn = open_ledger(db)
            try:
                (s,) = delivery_status(conn)
                seen.update(sent=s.sent, remaining=s.remaining, rate=s.rate)
            finally:
                conn.close()
        return None

    with SMTPTestServer(rcpt_replies=watch) as server:
        report, _ = _smtp_send(db, server, batch_size=100)
    assert report.state == "done" and report.sent == 100
    assert seen["sent"] == 60 and seen["remaining"] == 40


def test_a_crash_mid_batch_resends_only_the_unanswered(db):
    emails = add_subscribers(db, 50)

    def crash(done, total, sent, failed):
        if sent == 20:
            raise KeyboardInterrupt  # the process dies right after the 20th answer was recorded

    with SMTPTestServer() as server:
        try:
            _smtp_send(db, server, progress=crash, batch_size=50)
        except KeyboardInterrupt:
            pass
        states = collections.Counter(ledger_states_of(db).values())
        assert states["sent"] == 20 and states["sending"] + states["pending"] == 30
        report, _ = _smtp_send(db, server, batch_size=50)
        assert report.state == "done" and report.interrupted_resent == 30  # only those never answered
        received = collections.Counter(server.recipients())
    assert sorted(received) == sorted(emails) and max(received.values()) == 1  # nobody doubled


def ledger_states_of(db: Path) -> dict[str, str]:
    from tests.helpers import ledger_states

    return ledger_states(db, 1)


def test_a_helo_rejection_exits_9_charges_nobody_and_resume_after_the_fix_sends_everyone(publication_root):
    # Issue 22: every reader got "504 5.5.2 Helo command rejected", all were failed for good, exit 0,
    # and `resume --retry-failed` then said "no unfinished delivery".
    emails = _subscribe(publication_root, 10)
    helo = "504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname"
    with SMTPTestServer(rcpt_replies=lambda a: helo) as server:
        env = {**server.env(), **BASE, "SMTP_HELO_NAME": "localhost"}
        held = run(publication_root, "send", "6", "--yes", "--skip-checks", env=env)
        assert held.exit_code == 9, held.output
        assert "Helo command rejected" in held.output and "newsletter resume 6" in held.output
        status = run(publication_root, "status", "6", env=env)
        assert " held " in status.output and "0 hard, 0 soft" in status.output
        server.rcpt_replies = None  # the editor fixed SMTP_HELO_NAME
        fixed = run(publication_root, "resume", "6", "--yes", env={**env, "SMTP_HELO_NAME": "mail.example.org"})
        assert fixed.exit_code == 0, fixed.output
    assert sorted(server.recipients()) == sorted(emails)
