"""Writes through ``serve`` under concurrent clients (issue 21, §1 and §2).

The store side: a one-click unsubscribe or a bounce by id is one statement in the writer's
line (no read, no BEGIN or COMMIT while other writers wait), with the same outcome as the
general path for every status; a web request reads its reader once.
The server side: an 8-client burst of one-click POSTs and webhooks through a real
``newsletter serve`` on 127.0.0.1 has every answered write applied and leaves the log a few
lines long (waitress's "Task queue depth" warnings summarised, not one per request).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import threading
from contextlib import contextmanager
from email.utils import parseaddr
from pathlib import Path
from typing import Iterator

import pytest
import requests

from newsletter import i18n
from newsletter.schema import open_database
from newsletter.store import SubscriberStore
from newsletter.tokens import make_token
from newsletter.webhooks.base import address

SECRET = "serve-writes-secret-0123456789abcdef"
HOOK_SECRET = "serve-writes-hook-secret"


@contextmanager
def traced(store: SubscriberStore) -> Iterator[list[str]]:
    """The SQL ``store``'s connection runs inside the block (SQLite's own trace)."""
    seen: list[str] = []
    store.conn.set_trace_callback(seen.append)
    try:
        yield seen
    finally:
        store.conn.set_trace_callback(None)


def test_a_one_click_by_id_is_one_statement_in_the_writers_line(tmp_path):
    store = SubscriberStore(open_database(tmp_path / "n.db"))
    sub = store.add("reader@example.org")
    with traced(store) as sql:
        after = store.unsubscribe(sub.id, "one-click (RFC 8058)")
    assert after.status == "unsubscribed" and store.get(sub.id).status == "unsubscribed"
    statements = [s for s in sql if not s.startswith("--")]  # trigger bodies are part of the one statement
    assert statements and all(s.startswith("UPDATE subscribers SET status=") for s in statements), sql
    assert not any(s.split()[0] in ("BEGIN", "COMMIT", "SELECT") for s in statements), sql


@pytest.mark.parametrize("start, action, expected", [
    ("active", "unsubscribe", "unsubscribed"), ("pending", "unsubscribe", "unsubscribed"),
    ("bounced", "unsubscribe", "bounced"), ("complained", "unsubscribe", "complained"),
    ("unsubscribed", "unsubscribe", "unsubscribed"),
    ("active", "bounce", "bounced"), ("unsubscribed", "bounce", "bounced"), ("pending", "bounce", "bounced"),
    ("bounced", "bounce", "bounced"), ("complained", "bounce", "complained"),
])
def test_the_one_statement_path_decides_as_the_general_one(tmp_path, start, action, expected):
    """Each status against each suppression, as before the one-statement path: the complaint
    stays the strongest signal, and an unsubscribe never overwrites a bounce."""
    store = SubscriberStore(open_database(tmp_path / "n.db"))
    sub = store.add("reader@example.org")
    store.conn.execute("UPDATE subscribers SET status=?, status_reason='before', signup_nonce='n1', "
                       "signup_requested_at='2026-01-01T00:00:00.000000Z' WHERE id=?", (start, sub.id))
    after = store.unsubscribe(sub.id, "now") if action == "unsubscribe" else store.mark_bounced(sub.id, "now")
    row = store.conn.execute("SELECT status, status_reason, signup_nonce FROM subscribers WHERE id=?",
                             (sub.id,)).fetchone()
    assert after.status == row[0] == expected
    assert row[1] == ("before" if start == expected else "now")
    # An unsubscribe retires any open signup request; a bounce does when it changes the status.
    assert row[2] == ("" if action == "unsubscribe" or start != expected else "n1")


def test_a_missing_reader_is_still_an_input_error(tmp_path):
    from newsletter.errors import InputError

    store = SubscriberStore(open_database(tmp_path / "n.db"))
    with pytest.raises(InputError):
        store.unsubscribe(12345, "x")
    with pytest.raises(InputError):
        store.mark_bounced(12345, "x")


def test_a_token_reads_its_reader_once(tmp_path):
    store = SubscriberStore(open_database(tmp_path / "n.db"))
    sub = store.add("reader@example.org")
    token = make_token(SECRET, sub.id, sub.email)
    with traced(store) as sql:
        found = store.get_by_token(SECRET, token)
        forged = store.get_by_token(SECRET, token[:-2] + ("AA" if token[-2:] != "AA" else "BB"))
    assert found == sub and forged is None
    assert len([s for s in sql if s.startswith("SELECT")]) <= 3, sql  # one per lookup (+ the forged one's former-address check)
    with traced(store) as sql:
        store.get_by_token(SECRET, token)
    assert len(sql) == 1, sql


def test_the_catalog_scan_is_reused_for_a_while_then_redone(tmp_path):
    base = tmp_path / "locale"
    now = [100.0]
    clock = lambda: now[0]  # noqa: E731
    assert i18n.languages((base,), clock=clock) == []
    po = base / "de" / "LC_MESSAGES" / "newsletter.po"
    po.parent.mkdir(parents=True)
    po.write_text('msgid ""\nmsgstr ""\n')
    now[0] += i18n.RESCAN_SECONDS / 2
    assert i18n.languages((base,), clock=clock) == []  # the scan of a moment ago
    now[0] += i18n.RESCAN_SECONDS
    assert i18n.languages((base,), clock=clock) == ["de"]


@pytest.mark.parametrize("value", [
    "reader@example.org", "Reader.Name+tag@sub.example.co.uk", "o'brien@example.ie", "a{b}|c@example.org",
    "Reader <reader@example.org>", '"Quoted, Name" <q@example.org>', "reader@example.org (comment)",
    "no-at-sign", "", "a..b@example.org", ".a@example.org", "a@-example.org", "a@b", "a@b.", "ü@example.org",
    "reader@exämple.org", "two@example.org, three@example.org", " spaced@example.org ", None, 42,
])
def test_bare_addresses_skip_the_parser_and_agree_with_it(value):
    raw = value[:400] if isinstance(value, str) else ""
    expected = parseaddr(raw)[1]
    assert address(value) == (expected if "@" in expected else "")


# ---- a real server, 8 clients -----------------------------------------------------------------
@contextmanager
def serving(root: Path, threads: int | None = None) -> Iterator[tuple[int, list[str]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSLETTER_", "SMTP_"))}
    env.update({"NEWSLETTER_SECRET_KEY": SECRET, "NEWSLETTER_WEBHOOK_SECRET": HOOK_SECRET, "PYTHONUNBUFFERED": "1",
                "NEWSLETTER_TRANSPORT": "dryrun"})
    if threads is not None:
        env["NEWSLETTER_SERVE_THREADS"] = str(threads)
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "--root", str(root), "serve", "--port", "0"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log: list[str] = []
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, line + (proc.stderr.read(2000) if proc.poll() is not None else "")
        yield int(match.group(1)), log
    finally:
        proc.terminate()  # SIGTERM ends like Ctrl-C: the summary's counts are written
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.extend(proc.stderr.read().splitlines())
        proc.stdout.close()
        proc.stderr.close()


def _client(port: int, jobs: list[tuple[str, str]], answers: list[int]) -> None:
    auth = "Basic " + base64.b64encode(f"pm:{HOOK_SECRET}".encode()).decode()
    with requests.Session() as s:  # keep-alive, as a provider or a mail client's burst
        s.trust_env = False
        for kind, payload in jobs:
            if kind == "post":
                r = s.post(f"http://127.0.0.1:{port}/unsubscribe/{payload}", data={"List-Unsubscribe": "One-Click"},
                           timeout=30)
            else:
                r = s.post(f"http://127.0.0.1:{port}/webhooks/postmark", data=payload, timeout=30,
                           headers={"Content-Type": "application/json", "Authorization": auth})
            answers.append(r.status_code)


@pytest.mark.parametrize("threads", [0, 4], ids=["on the loop's thread", "4 worker threads"])
def test_an_8_client_write_burst_is_all_applied_and_leaves_a_short_log(tmp_path, threads):
    (tmp_path / "newsletter.toml").write_text('name = "Burst"\nfrom_email = "news@example.org"\n')
    store = SubscriberStore(open_database(tmp_path / "newsletter.db"))
    readers = [store.add(f"reader{i:04d}@example.org") for i in range(480)]
    store.close()
    jobs = [("post", make_token(SECRET, r.id, r.email)) if r.id % 2 else
            ("hook", json.dumps({"RecordType": "Bounce", "ID": r.id, "Type": "HardBounce", "Email": r.email,
                                 "MessageID": f"m{r.id}", "BouncedAt": "2026-01-01T00:00:00Z", "Details": "550"}))
            for r in readers]
    answers: list[int] = []
    with serving(tmp_path, threads) as (port, log):
        clients = [threading.Thread(target=_client, args=(port, jobs[i::8], answers)) for i in range(8)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(timeout=120)
    assert answers == [200] * len(jobs)
    conn = open_database(tmp_path / "newsletter.db")
    statuses = dict(conn.execute("SELECT status, COUNT(*) FROM subscribers GROUP BY status").fetchall())
    assert statuses == {"unsubscribed": 240, "bounced": 240}
    # 480 requests from 8 clients on 4 threads queue up: waitress warns of nearly every one. On the
    # loop's thread nothing queues in a thread pool: there is no such warning to make.
    queued = [line for line in log if "Task queue depth" in line]
    assert bool(queued) == (threads > 0), log  # the burst did queue (else this test shows nothing)
    assert len(log) <= 6, "\n".join(log)
    print("\n".join(log))


# ---- PostgreSQL: the web app's connections come from a pool --------------------------------------
def test_postgresql_web_app_lends_a_bounded_pool_of_connections(tmp_path, pg_cluster, pg_web_url):
    """Requests on several threads share at most the pool's size in connections, each given back when
    its request is answered, however many threads make the first requests at once (they once made a
    pool each)."""
    from urllib.parse import urlsplit

    import psycopg
    from werkzeug.test import Client

    from newsletter.config import load_settings
    from newsletter.web import make_app

    (tmp_path / "newsletter.toml").write_text('name = "Pooled"\nfrom_email = "news@example.org"\n')
    settings = load_settings(tmp_path, environ={"NEWSLETTER_SECRET_KEY": SECRET})
    store = SubscriberStore.open(pg_web_url)
    readers = [store.add(f"reader{i}@example.org") for i in range(24)]
    store.close()
    wsgi = make_app(settings, store_path=pg_web_url)
    core = wsgi.web_app
    role = urlsplit(pg_web_url).username

    def backends() -> int:
        with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
            return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE usename=%s", (role,)).fetchone()[0]

    answers: list[int] = []

    def post(batch: list) -> None:
        client = Client(wsgi)
        for r in batch:
            answers.append(client.post(f"/unsubscribe/{make_token(SECRET, r.id, r.email)}",
                                       data={"List-Unsubscribe": "One-Click"}).status_code)

    threads = [threading.Thread(target=post, args=(readers[i:20:8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert answers == [200] * 20
    assert 1 <= backends() <= core._postgres_pool()._pool.max_size
    assert getattr(core._local, "store", None) is None  # this thread holds nothing between requests
    # (A connection the server dropped is replaced when borrowed: tests/test_pg_serve.py, in a real process.)
    client = Client(wsgi)
    for r in readers[20:]:
        assert client.post(f"/unsubscribe/{make_token(SECRET, r.id, r.email)}",
                           data={"List-Unsubscribe": "One-Click"}).status_code == 200
    check = SubscriberStore.open(pg_web_url)
    assert check.counts().get("unsubscribed") == 24
    check.close()
