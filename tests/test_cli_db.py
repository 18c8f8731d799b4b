"""`newsletter db status`, and the subscriber commands against PostgreSQL (NEWSLETTER_DB=postgresql://…)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from newsletter.store import MIGRATIONS as SUBSCRIBER_MIGRATIONS
from tests.smtp_server import SMTPTestServer

SUBSCRIBERS_V = f"subscribers     v{len(SUBSCRIBER_MIGRATIONS)} "  # this tool's version, on either backend

from tests.test_cli import run


def test_db_status_on_sqlite_reads_without_creating_then_shows_versions_and_rows(publication_root):
    first = run(publication_root, "db", "status")
    assert first.exit_code == 0, first.output
    assert "Backend: sqlite" in first.output and "not created yet" in first.output
    assert not (publication_root / "newsletter.db").exists()
    assert run(publication_root, "subscribers", "add", "a@example.org").exit_code == 0
    assert run(publication_root, "subscribers", "add", "b@example.org").exit_code == 0
    out = run(publication_root, "db", "status").output
    assert SUBSCRIBERS_V in out and "subscribers 2, subscriber_former_addresses 0" in out


def test_subscriber_commands_and_db_status_on_postgresql(publication_root, pg_url):
    env = {"NEWSLETTER_DB": pg_url}
    secret = urlsplit(pg_url).password
    assert run(publication_root, "subscribers", "add", "Ann@Example.org", "--name", "Ann", env=env).exit_code == 0
    assert run(publication_root, "subscribers", "add", "bo@example.org", env=env).exit_code == 0
    assert run(publication_root, "subscribers", "unsubscribe", "ANN@example.org", env=env).exit_code == 0
    count = run(publication_root, "subscribers", "count", env=env)
    assert count.exit_code == 0 and "1" in count.output, count.output
    status = run(publication_root, "db", "status", env=env)
    assert status.exit_code == 0, status.output
    assert "Backend: postgresql (postgresql://newsletter:***@127.0.0.1" in status.output
    assert SUBSCRIBERS_V in status.output and "subscribers 2," in status.output
    assert "events          v" in status.output and "not created yet" not in status.output  # the one opener
    assert secret not in status.output
    assert not (publication_root / "newsletter.db").exists()  # nothing fell back to SQLite


def test_import_send_status_and_resume_on_postgresql(publication_root, pg_url):
    env = {"NEWSLETTER_DB": pg_url}
    csv = publication_root / "readers.csv"
    csv.write_text("email,name\n" + "".join(f"r{i}@example.org,Reader {i}\n" for i in range(5)) + "bad,Bad\n")
    imported = run(publication_root, "subscribers", "import", str(csv), env=env)
    assert imported.exit_code == 2 and "readers.csv:7: invalid email" in imported.output, imported.output  # good rows in
    assert "5" in run(publication_root, "subscribers", "count", env=env).output
    with SMTPTestServer() as server:
        smtp = {**env, **server.env(), "NEWSLETTER_BASE_URL": "https://chinaffairs.example"}
        sent = run(publication_root, "send", "6", "--yes", "--skip-checks", env=smtp)
        assert sent.exit_code == 0, sent.output
        status = run(publication_root, "status", env=smtp)
        assert status.exit_code == 0 and "done" in status.output, status.output
        again = run(publication_root, "send", "6", "--yes", "--skip-checks", env=smtp)
        received = sorted(r for m in server.messages for r in m.rcpt_tos)
    assert received == [f"r{i}@example.org" for i in range(5)], again.output  # each once, never again
    report = run(publication_root, "db", "status", env=env).output
    assert "deliveries 1, ledger 5" in report, report
    assert urlsplit(pg_url).password not in sent.output + status.output + report
    assert not (publication_root / "newsletter.db").exists()


def test_web_role_prints_the_grants_for_this_database(publication_root, pg_url):
    result = run(publication_root, "db", "web-role", "newsletter_web", env={"NEWSLETTER_DB": pg_url})
    assert result.exit_code == 0, result.output
    database = urlsplit(pg_url).path.lstrip("/")
    assert f'GRANT CONNECT ON DATABASE "{database}" TO "newsletter_web";' in result.output
    assert 'ON "ledger" TO "newsletter_web"' in result.output and "last_error" not in result.output
    bad = run(publication_root, "db", "web-role", "web; DROP TABLE x", env={"NEWSLETTER_DB": pg_url})
    assert bad.exit_code != 0 and "DROP" not in bad.output.replace("web; DROP TABLE x", "")
    sqlite = run(publication_root, "db", "web-role", "newsletter_web")
    assert sqlite.exit_code != 0 and "PostgreSQL" in sqlite.output
