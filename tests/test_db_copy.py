"""`newsletter db copy --to postgresql://…`: a SQLite publication moved whole into an empty
PostgreSQL database (every table of every component, and the count tables its triggers keep);
the same commands give the same figures, and a link mailed from SQLite works on `serve` after."""

from __future__ import annotations

import re
from contextlib import closing
from urllib.parse import urlsplit

import requests

from newsletter.db import connect
from newsletter.schema import COMPONENTS
from newsletter.store import SubscriberStore
from tests.helpers import BASE_ENV, run, serve_process
from tests.smtp_server import SMTPTestServer

#: Every table of every component: what `db copy` must carry (tests/test_db_copy.py checks each).
TABLES = [t for c in COMPONENTS for t in c.tables]
#: Kept by triggers on each backend, never copied: they must come out right on the target all the same.
COUNT_TABLES = ("subscriber_counts", "delivery_counts")


def _sqlite_publication(root) -> tuple[dict[int, str], dict[str, str]]:
    """Readers of every status, one delivery sent over SMTP, and a row in each other table:
    (email by id, the one-click unsubscribe URL each reader was mailed)."""
    csv = root / "readers.csv"
    csv.write_text("email,name\n" + "".join(f"r{i}@example.org,Reader {i}\n" for i in range(6)))
    assert run(root, "subscribers", "import", str(csv)).exit_code == 0
    with SubscriberStore.open(root / "newsletter.db") as store:
        store.unsubscribe("r1@example.org", "link")
        store.mark_bounced(store.get_by_email("r2@example.org").id, "550 no such user")
        store.set_status("r3@example.org", "complained", "FBL")
        store.conn.execute("UPDATE subscribers SET consent='double opt-in 2026-01-02', consent_ip='192.0.2.9' "
                           "WHERE email='r0@example.org'")
    with SMTPTestServer() as server:
        env = {**server.env(), "NEWSLETTER_BASE_URL": "https://chinaffairs.example"}
        assert run(root, "send", "6", "--yes", "--skip-checks", env=env).exit_code == 0
        mailed = {m.parse()["To"].addresses[0].addr_spec:
                  re.search(r"<(https://[^>]+/unsubscribe/[^>]+)>", m.parse()["List-Unsubscribe"]).group(1)
                  for m in server.messages}
    with closing(connect(root / "newsletter.db")) as conn:
        from newsletter.schema import migrate_all

        migrate_all(conn)
        conn.execute("INSERT INTO subscriber_former_addresses(old_id, subscriber_id, email) "
                     "VALUES(99, 1, 'r0@exämple.org')")
        conn.execute("INSERT INTO feedback_events(dedupe_key, kind, source, subscriber_id, delivery_id, email, "
                     "occurred_at, received_at, outcome) VALUES('k1', 'hard-bounce', 'smtp', 3, 1, "
                     "'r2@example.org', 'x', 'x', 'applied')")
        conn.execute("INSERT INTO inbox_messages(dedupe_key, category, slug, received_at) VALUES('m1', 'reply', "
                     "'global-governance-of-ai', 'x')")
        conn.execute("INSERT INTO replies(dedupe_key, slug, sent_at) VALUES('m1', 'global-governance-of-ai', 'x')")
        conn.execute("INSERT INTO signup_outbox(subscriber_id, kind, due_at) VALUES(5, 'welcome', 1.5)")
        conn.execute("INSERT INTO signup_events(scope, key, at) VALUES('ip', '198.51.100.7', 1.5)")
        conn.execute("INSERT INTO webhook_nonces(nonce, seen_at, body_sha256) VALUES('n1', 'x', 'ab')")
        conn.execute("INSERT INTO inbox_state(account, uidvalidity, last_uid) VALUES('me@imap', 7, 42)")
        conn.execute("INSERT INTO subscribers(email, status, created_at, changed_at, source, consent, consent_ip, "
                     "signup_nonce, signup_requested_at) VALUES('p@example.org', 'pending', 'x', 'x', 'signup', "
                     "'form 2026-01-03', '192.0.2.10', 'n0nce', '2026-01-03T00:00:00.000000Z')")
        return {id_: email for id_, email in conn.execute("SELECT id, email FROM subscribers")}, mailed


def _rows(conn, table: str) -> list[tuple]:
    return sorted(map(tuple, conn.execute(f'SELECT * FROM "{table}"')))


def _figures(root, env: dict[str, str]) -> tuple[str, str]:
    """What the editor reads: `subscribers count` and `status`, as printed."""
    count, status = run(root, "subscribers", "count", env=env), run(root, "status", env=env)
    assert count.exit_code == 0 and status.exit_code == 0, count.output + status.output
    return count.output, status.output


def test_a_publication_moves_to_postgresql_whole_and_its_links_still_work(publication_root, pg_url, pg_web_url):
    readers, mailed = _sqlite_publication(publication_root)
    before = _figures(publication_root, {})
    copied = run(publication_root, "db", "copy", "--to", pg_url)
    assert copied.exit_code == 0, copied.output
    assert urlsplit(pg_url).password not in copied.output
    assert "ledger" in copied.output and "every table's count matches" in copied.output
    env = {"NEWSLETTER_DB": pg_url}
    with closing(connect(pg_url)) as conn, closing(connect(publication_root / "newsletter.db")) as old:
        for table in TABLES:
            assert _rows(old, table), f"the fixture publication has no {table} row to copy"
            assert _rows(conn, table) == _rows(old, table), table
        for table in COUNT_TABLES:  # the target's triggers kept them as the rows arrived
            assert _rows(conn, table) == _rows(old, table), table
        statuses = dict(conn.execute("SELECT status, COUNT(*) FROM subscribers GROUP BY status").fetchall())
    assert set(statuses) == {"active", "unsubscribed", "bounced", "complained", "pending"}
    assert _figures(publication_root, env) == before  # the same figures, read from PostgreSQL
    # A link mailed from SQLite before the move unsubscribes its reader through serve on PostgreSQL.
    r5 = readers[5]
    with serve_process(publication_root, {**BASE_ENV, "NEWSLETTER_DB": pg_web_url}) as (url, _):
        path = urlsplit(mailed[r5]).path
        answer = requests.post(url + path, data="List-Unsubscribe=One-Click", timeout=10,
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert answer.status_code == 200, answer.text
    with SubscriberStore.open(pg_url) as store:
        assert store.get_by_email(r5).status == "unsubscribed"
        assert store.counts()["unsubscribed"] == statuses["unsubscribed"] + 1  # the counts follow the change
        assert store.add("new@example.org").id == max(readers) + 1  # ids go on after the copied ones
    # A second copy finds the target filled and changes nothing.
    again = run(publication_root, "db", "copy", "--to", pg_url)
    assert again.exit_code != 0 and "not empty" in again.output
    with closing(connect(pg_url)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM subscribers").fetchone()[0] == len(readers) + 1


def test_copy_refuses_what_is_not_a_postgresql_url(publication_root):
    result = run(publication_root, "db", "copy", "--to", "other.db")
    assert result.exit_code != 0 and "postgresql://" in result.output and "Traceback" not in result.output
