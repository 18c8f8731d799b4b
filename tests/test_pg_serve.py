"""`serve` on PostgreSQL, as the least-privilege web role, in real processes:

* an unsubscribe, a webhook and a signup are answered and applied while a sender holds the
  ledger's transaction (its advisory lock, its delivery row and every reader's ledger row);
* two replicas on one database both apply what they are sent;
* its pooled connections survive the server closing them;
* the role cannot read the ledger's error texts or run a delivery;
* no output shows the database password.
"""

from __future__ import annotations

import re
import time
from contextlib import closing
from urllib.parse import urlsplit

import psycopg
import pytest
import requests

from newsletter.db import connect
from newsletter.ledger import transaction
from newsletter.tokens import make_token
from tests.helpers import add_subscribers, run, send, serve_process
from tests.smtp_server import SMTPTestServer
from tests.webhooks.kits import KITS, Keys

SECRET = "pg-serve-secret-0123456789"
PROMPT_S = 2.0  # "answered promptly": a wait on the sender's locks would last until the sender commits
HTTP = requests.Session()
HTTP.trust_env = False  # loopback only, whatever proxy the environment names


def serving(root, db: str, keys: Keys, **extra: str):
    """A real `newsletter serve` on ``db`` with webhook keys and signup on: (its URL, its start line)."""
    return serve_process(root, {**keys.env(), "NEWSLETTER_DB": db, "NEWSLETTER_SECRET_KEY": SECRET,
                                "NEWSLETTER_BASE_URL": "https://news.example", "NEWSLETTER_TRANSPORT": "dryrun",
                                "NEWSLETTER_SIGNUP_MIN_SECONDS": "0", "NEWSLETTER_SERVE_THREADS": "3", **extra})


def _reader(db: str, email: str) -> int:
    with closing(connect(db)) as conn:
        return conn.execute("SELECT id FROM subscribers WHERE email=?", (email,)).fetchone()[0]


def _status(db: str, email: str) -> str | None:
    with closing(connect(db)) as conn:
        row = conn.execute("SELECT status FROM subscribers WHERE email=?", (email,)).fetchone()
        return row[0] if row else None


def _timed(call) -> tuple[requests.Response, float]:
    start = time.monotonic()
    response = call()
    return response, time.monotonic() - start


def one_click(url: str, db: str, email: str, timeout: float = 10) -> requests.Response:
    token = make_token(SECRET, _reader(db, email), email)
    return HTTP.post(f"{url}/unsubscribe/{token}", data="List-Unsubscribe=One-Click", timeout=timeout,
                     headers={"Content-Type": "application/x-www-form-urlencoded"})


def hard_bounce(url: str, keys: Keys, email: str) -> requests.Response:
    kit = KITS["postmark"](keys)
    signed = kit.sign(kit.payload("hard", email, email), at=None)
    return HTTP.post(f"{url}/webhooks/postmark", data=signed.body, headers=signed.headers, timeout=10)


def sign_up(url: str, email: str) -> requests.Response:
    page = HTTP.get(f"{url}/subscribe", timeout=10).text
    stamp = re.search(r'name="form" value="([^"]+)"', page).group(1)
    return HTTP.post(f"{url}/subscribe", data={"email": email, "name": "", "website": "", "form": stamp}, timeout=10)


@pytest.fixture
def readers(pg_url, pg_web_url) -> list[str]:
    """Six readers, and a delivery done to all of them (its ledger rows tie a webhook to a reader)."""
    emails = add_subscribers(pg_url, 6)
    report, _ = send(pg_url)
    assert report.state == "done"
    return emails


@pytest.mark.timeout(120)
def test_unsubscribe_webhook_and_signup_never_wait_for_a_sender(publication_root, pg_url, pg_web_url, readers):
    keys = Keys()
    with serving(publication_root, pg_web_url, keys) as (url, _):
        assert HTTP.get(f"{url}/healthz", timeout=10).status_code == 200
        sender = connect(pg_url)
        try:
            with transaction(sender):  # the ledger's advisory lock, as every sender on every host takes it
                sender.execute("UPDATE deliveries SET state='running'")  # the delivery row, as the holder has it
                sender.execute("UPDATE ledger SET state='sending'")      # every reader claimed: row locks
                assert _advisory_locks_held(pg_url) == 1
                unsub, t1 = _timed(lambda: one_click(url, pg_url, readers[0]))
                bounce, t2 = _timed(lambda: hard_bounce(url, keys, readers[1]))
                signup, t3 = _timed(lambda: sign_up(url, "newcomer@example.org"))
                assert (unsub.status_code, bounce.status_code, signup.status_code) == (200, 200, 200), \
                    (unsub.text, bounce.text, signup.text)
                assert max(t1, t2, t3) < PROMPT_S, (t1, t2, t3)
                # Applied, and seen by others, while the sender still holds its transaction.
                assert _status(pg_url, readers[0]) == "unsubscribed"
                assert _status(pg_url, readers[1]) == "bounced"
                assert _status(pg_url, "newcomer@example.org") == "pending"
                assert _advisory_locks_held(pg_url) == 1
        finally:
            sender.close()


@pytest.mark.timeout(120)
def test_the_prompt_answer_is_measured_not_assumed(publication_root, pg_url, pg_web_url, readers):
    """The check above can fail: a lock `serve` does need (the reader's row) makes it wait."""
    keys = Keys()
    with serving(publication_root, pg_web_url, keys) as (url, _):
        blocker = psycopg.connect(pg_url, autocommit=False)
        try:
            blocker.execute("SELECT 1 FROM subscribers WHERE email=%s FOR UPDATE", (readers[0],))
            with pytest.raises(requests.exceptions.Timeout):
                one_click(url, pg_url, readers[0], timeout=PROMPT_S)
        finally:
            blocker.rollback()
            blocker.close()
        deadline = time.monotonic() + 10
        while _status(pg_url, readers[0]) != "unsubscribed" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _status(pg_url, readers[0]) == "unsubscribed"  # it waited, then applied


def _advisory_locks_held(db: str) -> int:
    with closing(connect(db)) as conn:
        return conn.execute("SELECT COUNT(*) FROM pg_locks WHERE locktype='advisory' AND granted").fetchone()[0]


@pytest.mark.timeout(120)
def test_two_serve_replicas_on_one_database_both_apply_requests(publication_root, pg_url, pg_web_url, readers):
    keys = Keys()
    with serving(publication_root, pg_web_url, keys) as (a, _), serving(publication_root, pg_web_url, keys) as (b, _):
        replies = [one_click(url, pg_url, email) for url, email in zip((a, b, a, b), readers[:4])]
        replies += [hard_bounce(b, keys, readers[4]), sign_up(a, "first@example.org"), sign_up(b, "second@example.org")]
        assert [r.status_code for r in replies] == [200] * 7, [r.text for r in replies]
    assert [_status(pg_url, e) for e in readers] == ["unsubscribed"] * 4 + ["bounced", "active"]
    assert _status(pg_url, "first@example.org") == _status(pg_url, "second@example.org") == "pending"


@pytest.mark.timeout(120)
def test_serve_gets_a_fresh_connection_when_postgresql_dropped_its_own(publication_root, pg_url, pg_web_url,
                                                                        readers, pg_cluster):
    keys = Keys()
    role = urlsplit(pg_web_url).username
    with serving(publication_root, pg_web_url, keys) as (url, _):
        assert one_click(url, pg_url, readers[0]).status_code == 200
        with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:  # a restart, a failover, an idle timeout
            gone = admin.execute("SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename=%s",
                                 (role,)).fetchone()[0]
        assert gone >= 1
        answers = [one_click(url, pg_url, email).status_code for email in readers[1:4]]
        assert answers == [200, 200, 200]
    assert [_status(pg_url, e) for e in readers[:4]] == ["unsubscribed"] * 4


def test_the_web_role_cannot_read_error_texts_or_run_a_delivery(publication_root, pg_url, pg_web_url, readers):
    with closing(connect(pg_web_url)) as web:
        assert web.execute("SELECT COUNT(email) FROM ledger").fetchone()[0] == len(readers)  # what events need
        for forbidden in ("SELECT last_error FROM ledger", "SELECT * FROM ledger",
                          "UPDATE ledger SET state='pending'", "UPDATE deliveries SET state='running'",
                          "INSERT INTO deliveries(slug, content_hash, state, created_at) VALUES('x','h','running','x')"):
            with pytest.raises(Exception, match="permission denied"):
                web.execute(forbidden)
    secret = urlsplit(pg_web_url).password
    with SMTPTestServer() as smtp:  # a real transport: a dry run writes no ledger
        refused = run(publication_root, "send", "6", "--yes", "--skip-checks",
                      env={**smtp.env(), "NEWSLETTER_DB": pg_web_url})
    assert smtp.count == 0
    assert refused.exit_code != 0 and "permission denied" in refused.output, refused.output
    assert secret not in refused.output and "Traceback" not in refused.output
    assert [line for line in refused.output.splitlines() if line.startswith("error:")] == \
        [refused.output.strip().splitlines()[-1]]  # one line, after --skip-checks' warning
    with closing(connect(pg_url)) as owner:
        assert owner.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 1  # nothing started


def test_no_output_shows_the_password(publication_root, pg_url, pg_web_url, readers, monkeypatch, tmp_path):
    keys = Keys()
    secret = urlsplit(pg_web_url).password
    with serving(publication_root, pg_web_url, keys) as (_, start_line):
        assert "database postgresql://" in start_line and ":***@" in start_line and secret not in start_line
    owner_secret = urlsplit(pg_url).password
    status = run(publication_root, "db", "status", env={"NEWSLETTER_DB": pg_url})
    assert status.exit_code == 0 and ":***@" in status.output and owner_secret not in status.output
    wrong = pg_url.replace(owner_secret, "not-" + owner_secret)
    for args in (("db", "status"), ("send", "6", "--yes", "--skip-checks"), ("subscribers", "count")):
        failed = run(publication_root, *args, env={"NEWSLETTER_DB": wrong})
        assert failed.exit_code != 0 and "password authentication failed" in failed.output, (args, failed.output)
        assert "not-" + owner_secret not in failed.output and owner_secret not in failed.output
        assert "Traceback" not in failed.output and failed.output.count("password authentication failed") == 1
    # PGPASSWORD instead of the URL: never printed either, even where the login fails
    bare = pg_url.replace(f":{owner_secret}@", "@")
    monkeypatch.setenv("PGPASSWORD", "wrong-" + owner_secret)
    failed = run(publication_root, "db", "status", env={"NEWSLETTER_DB": bare})
    assert failed.exit_code != 0 and owner_secret not in failed.output, failed.output
    monkeypatch.setenv("PGPASSWORD", owner_secret)
    sent = run(publication_root, "send", "6", "--yes", "--skip-checks", env={"NEWSLETTER_DB": bare})
    assert sent.exit_code == 0 and owner_secret not in sent.output, sent.output
