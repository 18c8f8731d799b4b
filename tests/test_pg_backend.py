"""The PostgreSQL backend's plumbing: choosing it, its password, its placeholders, and
migrations that leave the same schema as SQLite's."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from urllib.parse import urlsplit, urlunsplit

import pytest

from newsletter.db import connect, table_columns
from newsletter.dburl import is_postgres, redact
from newsletter.errors import ConfigError
from newsletter.pg_schema import MIGRATIONS as PG_MIGRATIONS
from newsletter.schema import COMPONENTS, migrations
from newsletter.store import MIGRATIONS as SQLITE_SUBSCRIBERS, SubscriberStore

SQLITE_MIGRATIONS = {c.name: migrations(c) for c in COMPONENTS}


@pytest.mark.parametrize("value, pg", [("postgresql://u@h:5432/db", True), ("postgres://h/db", True),
                                       (" POSTGRESQL://h/db", True), ("news.db", False),
                                       ("/srv/postgresql/news.db", False), ("", False), (None, False)])
def test_only_a_postgresql_url_selects_postgresql(value, pg):
    assert is_postgres(value) is pg


@pytest.mark.parametrize("text", ["postgresql://ann:s3cr%40t@db:5432/news", "postgres://ann:s3cr%40t@db/news?x=1",
                                  "host=db password=s3cr%40t dbname=news", "postgresql://db/news?password=s3cr%40t"])
def test_a_password_is_never_shown(text):
    shown = redact(text)
    assert "s3cr" not in shown and "***" in shown


def _without_password(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    bare = parts._replace(netloc=f"{parts.username}@{parts.hostname}:{parts.port}")
    return urlunsplit(bare), parts.password or ""


def test_a_wrong_password_is_one_line_without_the_password(pg_url):
    url, secret = _without_password(pg_url)
    wrong = url.replace("@", ":Wr0ngPassw0rd@", 1)
    with pytest.raises(ConfigError) as info:
        connect(wrong)
    message = str(info.value)
    assert "Wr0ngPassw0rd" not in message and secret not in message and "\n" not in message
    assert "cannot open database postgresql://newsletter:***@127.0.0.1" in message


def test_the_password_may_come_from_pgpassword_or_pgpass(pg_url, monkeypatch, tmp_path):
    url, secret = _without_password(pg_url)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(ConfigError):
        connect(url)
    monkeypatch.setenv("PGPASSWORD", secret)
    connect(url).close()
    monkeypatch.delenv("PGPASSWORD")
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:*:*:newsletter:{secret}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    connect(url).close()


@pytest.mark.parametrize("sql, expected", [
    ("SELECT ? FROM t WHERE a=?", "SELECT %s FROM t WHERE a=%s"),
    ("SELECT '?', ':x', 'it''s ?' WHERE a=:a", "SELECT '?', ':x', 'it''s ?' WHERE a=%(a)s"),
    ("SELECT x::text, '50%' WHERE b LIKE 'a%' AND c=?", "SELECT x::text, '50%%' WHERE b LIKE 'a%%' AND c=%s"),
    ("SELECT 5 % 2", "SELECT 5 %% 2"),
])
def test_placeholders_are_translated_outside_literals(sql, expected):
    from newsletter.pg import translate

    assert translate(sql) == expected


def test_a_percent_sign_means_itself_in_a_statement_without_parameters(pg_url):
    conn = connect(pg_url)
    try:
        assert conn.execute("SELECT 7 % 2, 'a%' LIKE 'a%'").fetchone() == (1, True)
        assert conn.execute("SELECT 7 % ?", (4,)).fetchone() == (3,)
    finally:
        conn.close()


@pytest.mark.parametrize("component", sorted(PG_MIGRATIONS))
def test_each_component_has_as_many_versions_on_both_backends(component):
    assert len(PG_MIGRATIONS[component]) == len(SQLITE_MIGRATIONS[component])


def test_both_backends_end_with_the_same_subscriber_columns_and_versions(pg_url, tmp_path):
    """Opening a store opens the database: every component is brought up to date, on both."""
    stores = [SubscriberStore.open(tmp_path / "news.db"), SubscriberStore.open(pg_url)]
    try:
        cols = [table_columns(s.conn, "subscribers") for s in stores]
        former = [table_columns(s.conn, "subscriber_former_addresses") for s in stores]
        versions = [dict(s.conn.execute("SELECT component, version FROM schema_migrations")) for s in stores]
    finally:
        for s in stores:
            s.close()
    assert cols[0] == cols[1] and former[0] == former[1]
    assert versions[0] == versions[1] == {name: len(steps) for name, steps in SQLITE_MIGRATIONS.items()}
    assert versions[0]["subscribers"] == len(SQLITE_SUBSCRIBERS)


def test_two_openers_of_a_fresh_postgresql_database_migrate_once(pg_url):
    import threading

    errors: list[BaseException] = []

    def open_it():
        try:
            SubscriberStore.open(pg_url).close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with SubscriberStore.open(pg_url) as store:
        assert store.add("a@example.org").id == 1


def test_postgresql_errors_are_the_db_api_classes_callers_catch(pg_url):
    with SubscriberStore.open(pg_url) as store:
        with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
            store.conn.execute("SELECT * FROM no_such_table")
        store.add("a@example.org")
        with pytest.raises(sqlite3.IntegrityError):
            store.conn.execute("INSERT INTO subscribers(email, created_at, changed_at) VALUES('A@EXAMPLE.ORG','x','x')")


@pytest.mark.parametrize("statement", [
    "SELECT last_error FROM ledger",
    "SELECT * FROM ledger",
    "SELECT lock_host, reason FROM deliveries",
    "UPDATE deliveries SET state='running'",
    "UPDATE ledger SET state='pending'",
    "INSERT INTO deliveries(slug, content_hash, state, created_at) VALUES('x', 'h', 'running', 'x')",
    "DELETE FROM ledger",
    "SELECT * FROM daily_counts",
    "CREATE TABLE mine(x INTEGER)",
    "DROP TABLE subscribers",
])
def test_the_web_role_cannot_read_errors_or_run_a_delivery(pg_web_url, statement):
    with closing(connect(pg_web_url)) as conn:
        with pytest.raises(sqlite3.OperationalError, match="permission denied|must be owner"):
            conn.execute(statement)


def test_the_web_role_can_do_what_serve_needs(pg_web_url):
    with SubscriberStore.open(pg_web_url) as store:  # the owner migrated: the web role only reads versions
        sub = store.add("a@example.org")
        store.unsubscribe(sub.id, "link")
        assert store.get(sub.id).status == "unsubscribed"
        assert store.conn.execute("SELECT delivery_id, provider_id FROM ledger").fetchall() == []
