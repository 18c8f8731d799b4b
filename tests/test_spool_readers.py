"""Every reader of subscriber state sees an unsubscribe the web app spooled while the database was
locked (issue 16): the subscriber commands, the dry run and test sends, the real send's count,
and the web app's own pages, not only the delivery engine (tests/test_unsubscribe_spool.py)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from click.testing import CliRunner
from werkzeug.test import Client

from newsletter.cli import cli
from newsletter.config import load_settings
from newsletter.store import SubscriberStore
from newsletter.tokens import make_token
from newsletter.unsubscribe_spool import spool_path, spool_unsubscribe

SECRET = "test-secret-key-0123456789"
AT = datetime(2026, 3, 4, 9, 0, tzinfo=timezone.utc)
READERS = ["ann@example.org", "gone@example.org", "cy@example.org"]


@pytest.fixture
def spooled(publication_root):
    """Three active readers; the second one's one-click unsubscribe waits in the spool."""
    db = publication_root / "newsletter.db"
    with SubscriberStore.open(db) as store:
        ids = {e: store.add(e, e.split("@")[0].title()).id for e in READERS}
    spool_unsubscribe(db, make_token(SECRET, ids["gone@example.org"], "gone@example.org"), "one-click (RFC 8058)", AT)
    return publication_root


def run(root, *args, **env):
    return CliRunner().invoke(cli, ["--root", str(root), *args],
                              env={"NEWSLETTER_TRANSPORT": "dryrun", "NEWSLETTER_SECRET_KEY": SECRET, **env})


def applied(root) -> bool:
    with SubscriberStore.open(root / "newsletter.db") as store:
        status = store.get_by_email("gone@example.org").status
    return status == "unsubscribed" and not spool_path(root / "newsletter.db").exists()


def test_subscribers_list_applies_the_spool_first(spooled):
    result = run(spooled, "subscribers", "list", "--status", "active")
    assert result.exit_code == 0 and "gone@example.org" not in result.output
    assert applied(spooled)


def test_subscribers_count_applies_the_spool_first(spooled):
    result = run(spooled, "subscribers", "count")
    assert "active: 2" in result.output and "unsubscribed: 1" in result.output


def test_subscribers_export_applies_the_spool_first(spooled):
    result = run(spooled, "subscribers", "export", "--status", "active")
    assert result.exit_code == 0 and "gone@example.org" not in result.output and "ann@example.org" in result.output


def test_a_dry_run_writes_no_message_for_a_spooled_unsubscribe(spooled):
    result = run(spooled, "send", "6", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Dry run: 2 message(s) for 2 active subscriber(s)" in result.output
    written = sorted(p.read_text(errors="replace") for p in (spooled / "outbox").rglob("*.eml"))
    assert len(written) == 2 and not any("gone@example.org" in m for m in written)


def test_a_test_send_respects_a_spooled_unsubscribe(spooled):
    result = run(spooled, "send", "6", "--test", "gone@example.org")
    assert result.exit_code == 2 and "unsubscribed" in result.output


def test_the_real_send_asks_about_the_list_it_will_send(spooled):
    from newsletter.sendplan import open_delivery

    settings = load_settings(spooled, environ={"NEWSLETTER_SECRET_KEY": SECRET, "NEWSLETTER_TRANSPORT": "smtp",
                                               "SMTP_HOST": "127.0.0.1", "SMTP_PORT": "9"})
    conn, active, _ = open_delivery(settings)
    conn.close()
    assert active == 2


def test_the_web_app_applies_the_spool_before_a_page_reads_the_list(spooled):
    from newsletter.web import make_app

    db = spooled / "newsletter.db"
    settings = load_settings(spooled, environ={"NEWSLETTER_SECRET_KEY": SECRET})
    wsgi = make_app(settings, store_path=db)
    with SubscriberStore.open(db) as store:  # the app is up; then an unsubscribe is spooled again
        sid = store.get_by_email("cy@example.org").id
    token = make_token(SECRET, sid, "cy@example.org")
    spool_unsubscribe(db, token, "one-click (RFC 8058)", AT)
    page = Client(wsgi).get(f"/unsubscribe/{token}").get_data(as_text=True)
    assert "no longer receives" in page  # not "Unsubscribe from …?": the spooled request already counts
    assert not spool_path(db).exists()


def test_a_locked_database_with_a_waiting_spool_is_one_line_not_a_stale_list(spooled):
    import sqlite3

    holder = sqlite3.connect(spooled / "newsletter.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        from newsletter import db as dbmod

        original, dbmod.BUSY_TIMEOUT_MS = dbmod.BUSY_TIMEOUT_MS, 50
        try:
            result = run(spooled, "subscribers", "list")
        finally:
            dbmod.BUSY_TIMEOUT_MS = original
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.exit_code == 75 and "unsubscribes wait in" in result.output
    assert "Traceback" not in result.output and "ann@example.org" not in result.output
