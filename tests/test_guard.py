"""The reputation guard during a send: complaints reported by Postmark's webhook to the real
serve app while a delivery runs (Postmark emulator, fake clock) hold it past the threshold,
with nobody lost; `status` says why; only a deliberate resume continues it, and it finishes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter.cli import cli
from newsletter.clock import FakeClock
from newsletter.config import load_settings
from newsletter.db import connect
from newsletter.delivery import DeliveryOptions, run_delivery
from newsletter.errors import ConfigError, SendHeldError
from newsletter.guard import Guard, Tally
from newsletter.ledger import ledger_counts, open_ledger, start_or_resume
from newsletter.render import render_issue
from newsletter.sendplan import prepare_issue
from newsletter.transports import get_transport
from newsletter.web import make_app
from tests.conftest import ISSUE6
from tests.provider_emulator import ProviderEmulator, env
from tests.webhooks.conftest import HTTP, serve
from tests.webhooks.kits import KITS, NOW, Keys

READERS = 2000


def add_readers(db: Path, n: int) -> None:
    conn = open_ledger(db)
    with conn:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO subscribers(email, name, status, created_at, changed_at) VALUES(?, '', "
                         "'active', '2030-01-01T00:00:00.000000Z', '2030-01-01T00:00:00.000000Z')",
                         [(f"reader{i:04d}@example.org",) for i in range(n)])
        conn.execute("COMMIT")
    conn.close()


class Send:
    """Issue #6 going to READERS readers through the Postmark emulator, complaints by webhook."""

    def __init__(self, root: Path, extra: dict[str, str]):
        self.clock = FakeClock(start=NOW)
        self.api = ProviderEmulator("postmark", self.clock, inspect=False).start()
        self.keys = Keys()
        self.env = {**env("postmark", self.api.url), **self.keys.env(), "NEWSLETTER_TRANSPORT": "postmark",
                    "NEWSLETTER_SECRET_KEY": "guard-secret", "NEWSLETTER_BASE_URL": "https://news.example.org",
                    "NO_PROXY": "127.0.0.1", **extra}
        self.root = root
        self.settings = load_settings(root, environ=self.env)
        self.prepared = prepare_issue(self.settings, render_issue(root / "issues" / ISSUE6.name, self.settings))
        self.url, self.stop_web = serve(make_app(self.settings))
        self.complained: list[str] = []
        self.kind = "complaint"

    def complain(self, conn: sqlite3.Connection, n: int) -> None:
        """n readers already sent report the issue as spam (or bounce hard), as Postmark posts it."""
        kit = KITS["postmark"](self.keys)
        rows = conn.execute("SELECT email, provider_id FROM ledger WHERE state='sent' ORDER BY subscriber_id "
                            "LIMIT ? OFFSET ?", (n, len(self.complained))).fetchall()
        for email, provider_id in rows:
            payload = {**kit.payload(self.kind, email, email), "MessageID": provider_id}
            signed = kit.sign(payload, at=NOW)
            r = HTTP.post(f"{self.url}/webhooks/postmark", data=signed.body, headers=signed.headers, timeout=10)
            assert r.status_code == 200 and json.loads(r.text)["applied"] == 1, r.text
            self.complained.append(email)

    def run(self, *, despite: bool = False, complaints_at: tuple[int, int] | None = None):
        conn = open_ledger(self.settings.db_target)
        watcher = connect(self.settings.db_target)  # webhooks arrive while the send runs, on either backend

        def progress(done: int, total: int, sent: int, failed: int) -> None:
            if complaints_at and sent >= complaints_at[0] and not self.complained:
                self.complain(watcher, complaints_at[1])

        try:
            did = start_or_resume(conn, self.prepared, now=self.clock.now)
            options = DeliveryOptions.from_settings(self.settings, despite_guard=despite)
            return run_delivery(conn, did, self.prepared, lambda: get_transport(self.settings, clock=self.clock),
                                options=options, progress=progress, clock=self.clock)
        finally:
            watcher.close()
            conn.close()

    def close(self) -> None:
        self.stop_web()
        self.api.stop()


@pytest.fixture
def send(publication_root, any_db):
    s = Send(publication_root, {"NEWSLETTER_DB": str(any_db)})
    add_readers(s.settings.db_target, READERS)
    yield s
    s.close()


def delivered(api: ProviderEmulator) -> list[str]:
    return [d.recipient for d in api.delivered]


def test_complaints_past_the_threshold_hold_the_send_and_a_deliberate_resume_finishes_it(send):
    report = send.run(complaints_at=(600, 4))  # 4 in the first 1,000 delivered: 0.4% > 0.3%
    assert report.state == "held"
    assert "4 complaint(s) in 1,000 messages delivered (0.40%)" in report.note
    first = delivered(send.api)
    assert len(first) == len(set(first)) == 1000  # held as soon as the sample was reached
    conn = open_ledger(send.settings.db_target)
    counts = ledger_counts(conn, report.delivery_id)
    assert counts["sent"] == 1000 and counts["pending"] == READERS - 1000 and counts["sending"] == 0
    assert tuple(conn.execute("SELECT state, resume_at FROM deliveries").fetchone()) == ("held", None)
    conn.close()

    with pytest.raises(SendHeldError, match="--despite-complaints"):  # only a deliberate resume continues
        send.run()
    assert len(send.api.delivered) == 1000

    report = send.run(despite=True)
    assert report.state == "done" and report.sent == READERS
    everyone = delivered(send.api)
    assert len(everyone) == len(set(everyone)) == READERS  # nobody lost, nobody twice


def test_the_guard_waits_for_its_sample(send):
    report = send.run(complaints_at=(100, 2))  # 2% of the first 100, but the sample is 1,000
    assert report.state == "done" and report.sent == READERS


def test_resumed_guard_counts_only_what_comes_back_after(publication_root, any_db):
    s = Send(publication_root, {"NEWSLETTER_PAUSE_MIN_DELIVERED": "500", "NEWSLETTER_DB": str(any_db)})
    add_readers(s.settings.db_target, READERS)
    try:
        assert s.run(complaints_at=(200, 3)).state == "held"  # 3 in 500
        report = s.run(despite=True, complaints_at=None)
        assert report.state == "done"
        s.complained.clear()
    finally:
        s.close()
    assert len(set(delivered(s.api))) == READERS


def test_status_and_resume_from_the_command_line(send):
    send.run(complaints_at=(600, 4))
    runner = CliRunner()
    status = runner.invoke(cli, ["--root", str(send.root), "status", "6"], env=send.env)
    assert status.exit_code == 0, status.output
    assert ": held to protect the sending domain: 4 complaint(s)" in status.output
    assert "held: held" not in status.output and "resume global-governance-of-ai --despite-complaints" in status.output
    assert "complaints 4 of 1,000 delivered (0.40%; pause above 0.3%)" in status.output
    assert "hard bounces 0 of 1,000 (0.00%; pause above 5%)" in status.output
    refused = runner.invoke(cli, ["--root", str(send.root), "resume", "6", "--yes"], env=send.env)
    assert refused.exit_code == 9 and "--despite-complaints" in refused.output
    done = runner.invoke(cli, ["--root", str(send.root), "resume", "6", "--yes", "--despite-complaints"],
                         env=send.env)
    assert done.exit_code == 0, done.output
    assert len(set(delivered(send.api))) == READERS


def test_bounces_hold_too():
    guard = Guard()
    assert guard.verdict(Tally(sent=950, refused=51)) is not None  # 51 of 1,001: 5.1%
    assert guard.verdict(Tally(sent=950, refused=40, bounce_reports=10)) is None  # 50 of 990: sample not reached
    assert guard.verdict(Tally(sent=960, refused=40, bounce_reports=10)) is None  # 50 of 1,000: 5%, not above
    assert "hard bounce(s)" in guard.verdict(Tally(sent=960, refused=40, bounce_reports=11))


@pytest.mark.parametrize("raw", ["abc", "0", "-1", "101", "nan"])
def test_threshold_settings_are_checked(tmp_path, raw):
    with pytest.raises(ConfigError):
        Guard.from_settings(load_settings(tmp_path, environ={"NEWSLETTER_COMPLAINT_PAUSE": raw}))


def test_threshold_settings(tmp_path):
    g = Guard.from_settings(load_settings(tmp_path, environ={"NEWSLETTER_COMPLAINT_PAUSE": "0.5%",
                                                             "NEWSLETTER_BOUNCE_PAUSE": "off",
                                                             "NEWSLETTER_PAUSE_MIN_DELIVERED": "200"}))
    assert g == Guard(0.5, None, 200)
    assert g.verdict(Tally(sent=100, refused=100)) is None


def test_suppression_review_says_when_and_why(send):
    send.run(complaints_at=(600, 4))
    from newsletter.store import SubscriberStore

    with SubscriberStore.open(send.settings.db_target) as store:
        store.mark_bounced(store.get_by_email("reader1999@example.org").id, "bounced: 550 \x1b[31mno such user")
    runner = CliRunner()
    complained = runner.invoke(cli, ["--root", str(send.root), "subscribers", "list", "--status", "complained"],
                               env=send.env)
    lines = complained.output.splitlines()
    assert sorted(line.split("\t")[0] for line in lines) == sorted(send.complained)
    assert all(line.split("\t")[3].startswith("20") and line.split("\t")[4].startswith("postmark: complaint")
               for line in lines), lines
    bounced = runner.invoke(cli, ["--root", str(send.root), "subscribers", "list", "--status", "bounced"],
                            env=send.env).output
    assert bounced.startswith("reader1999@example.org\t\tbounced\t") and "550" in bounced and "\x1b" not in bounced
    active = runner.invoke(cli, ["--root", str(send.root), "subscribers", "list", "--status", "active"],
                           env=send.env).output
    assert active.splitlines()[0] == "reader0004@example.org\t\tactive"


def test_hard_bounce_reports_hold_too(publication_root, any_db):
    s = Send(publication_root, {"NEWSLETTER_PAUSE_MIN_DELIVERED": "500", "NEWSLETTER_DB": str(any_db)})
    s.kind = "hard"
    add_readers(s.settings.db_target, READERS)
    try:
        report = s.run(complaints_at=(200, 30))  # 30 hard bounces in the first 500: 6% > 5%
        assert report.state == "held" and "30 hard bounce(s) in 500 messages sent (6.00%)" in report.note
        assert report.sent == 500 and report.pending == READERS - 500
        assert s.run(despite=True).state == "done"
    finally:
        s.close()
    assert len(set(delivered(s.api))) == len(delivered(s.api)) == READERS


def test_a_refused_reader_whose_bounce_is_also_reported_counts_once(tmp_path):
    """The send's own refusal (failed-permanent) and a bounce event about the same reader (as
    SMTP refusals are recorded too) are one hard bounce; a complaint counts once per reader."""
    from newsletter.events import Event, Kind, apply_event, guard_counts
    from newsletter.store import SubscriberStore

    conn = open_ledger(tmp_path / "n.db")
    store = SubscriberStore(conn)
    ids = [store.add(f"r{i}@example.org").id for i in range(3)]
    did = conn.execute("INSERT INTO deliveries(slug, content_hash, state, created_at, test) "
                       "VALUES('x', 'h', 'running', '2026-03-01T00:00:00.000000Z', 0)").lastrowid
    conn.executemany("INSERT INTO ledger(delivery_id, subscriber_id, email, state, provider_id) VALUES(?,?,?,?,?)",
                     [(did, ids[0], "r0@example.org", "failed-permanent", None),
                      (did, ids[1], "r1@example.org", "sent", "p1"), (did, ids[2], "r2@example.org", "sent", "p2")])
    conn.commit()
    for key, kind, i in (("a", Kind.HARD_BOUNCE, 0), ("b", Kind.HARD_BOUNCE, 1), ("c", Kind.COMPLAINT, 2),
                         ("d", Kind.COMPLAINT, 2)):
        apply_event(store, Event(kind, "test", key, email=f"r{i}@example.org", subscriber_id=ids[i],
                                 provider_id=f"p{i}" if i else None, message_id=None))
    conn.execute("UPDATE feedback_events SET delivery_id=?", (did,))  # r0 was refused: no provider id to link
    conn.commit()
    assert guard_counts(conn, did) == (1, 1)
    assert Tally(sent=2, refused=1, complaints=1, bounce_reports=1).bounces == 2
    conn.close()
