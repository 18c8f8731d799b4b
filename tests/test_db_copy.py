"""`newsletter db copy --to postgresql://…`: a SQLite publication moved whole into an empty
PostgreSQL database; the same commands and every link already mailed work afterwards."""

from __future__ import annotations

from contextlib import closing
from urllib.parse import urlsplit

from werkzeug.test import Client

from newsletter.config import load_settings
from newsletter.db import connect
from newsletter.store import SubscriberStore
from newsletter.tokens import make_token
from newsletter.web import make_app
from tests.smtp_server import SMTPTestServer
from tests.test_cli import BASE_ENV, run


def _sqlite_publication(root) -> dict[str, int]:
    """Readers of every status, one delivery sent over SMTP, and a row in each other table."""
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
        return {id_: email for id_, email in conn.execute("SELECT id, email FROM subscribers")}


def test_a_publication_moves_to_postgresql_whole_and_its_links_still_work(publication_root, pg_url):
    readers = _sqlite_publication(publication_root)
    copied = run(publication_root, "db", "copy", "--to", pg_url)
    assert copied.exit_code == 0, copied.output
    assert urlsplit(pg_url).password not in copied.output
    assert "ledger" in copied.output and "every table's count matches" in copied.output
    env = {"NEWSLETTER_DB": pg_url}
    with closing(connect(pg_url)) as conn, closing(connect(publication_root / "newsletter.db")) as old:
        for table in ("subscribers", "subscriber_former_addresses", "deliveries", "ledger", "daily_counts",
                      "feedback_events", "inbox_messages", "replies", "signup_outbox"):
            assert sorted(map(tuple, conn.execute(f"SELECT * FROM {table}"))) == \
                sorted(map(tuple, old.execute(f"SELECT * FROM {table}"))), table
    status = run(publication_root, "status", env=env)
    assert status.exit_code == 0 and "done" in status.output, status.output
    # A link mailed before the move unsubscribes the same reader on the new database.
    settings = load_settings(publication_root, environ={**BASE_ENV, **env})
    client = Client(make_app(settings))
    token = make_token(BASE_ENV["NEWSLETTER_SECRET_KEY"], 5, readers[5])
    assert client.post(f"/unsubscribe/{token}").status_code == 200
    with SubscriberStore.open(pg_url) as store:
        assert store.get(5).status == "unsubscribed"
        assert store.add("new@example.org").id == max(readers) + 1  # ids go on after the copied ones
    # A second copy finds the target filled and changes nothing.
    again = run(publication_root, "db", "copy", "--to", pg_url)
    assert again.exit_code != 0 and "not empty" in again.output


def test_copy_refuses_what_is_not_a_postgresql_url(publication_root):
    result = run(publication_root, "db", "copy", "--to", "other.db")
    assert result.exit_code != 0 and "postgresql://" in result.output and "Traceback" not in result.output
