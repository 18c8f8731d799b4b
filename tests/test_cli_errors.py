"""The CLI's one error mapping: SQLite failures from any command are one line with an exit
code, never a traceback (a locked database: 75, try again; anything else: 3)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter.cli import cli
from newsletter.store import SubscriberStore

ENV = {"NEWSLETTER_TRANSPORT": "dryrun", "NEWSLETTER_SECRET_KEY": "test-secret-key-0123456789"}


def run(root: Path, *args: str):
    return CliRunner().invoke(cli, ["--root", str(root), *args], env={**ENV, "NEWSLETTER_DB": str(root / "news.db")})


@pytest.fixture
def pub(tmp_path: Path) -> Path:
    root = tmp_path / "pub"
    root.mkdir()
    (root / "newsletter.toml").write_text('name = "Test Letter"\nfrom_email = "news@example.org"\n', encoding="utf-8")
    with SubscriberStore.open(root / "news.db") as store:
        store.add("first@example.org")
    return root


@pytest.fixture
def locked(pub: Path, monkeypatch):
    """Another process holds the write lock; our busy timeout is short so the test is quick."""
    monkeypatch.setattr("newsletter.db.BUSY_TIMEOUT_MS", 50)
    holder = sqlite3.connect(pub / "news.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    yield holder
    holder.execute("ROLLBACK")
    holder.close()


def one_line(result) -> str:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


def test_a_locked_database_is_one_line_exit_75_and_changes_nothing(pub, locked):
    result = run(pub, "subscribers", "add", "second@example.org")
    line = one_line(result)
    assert result.exit_code == 75
    assert line.startswith("error: ") and "news.db" in line and "locked by another process" in line
    assert [r[0] for r in locked.execute("SELECT email FROM subscribers")] == ["first@example.org"]


def test_a_locked_database_during_unsubscribe_is_one_line(pub, locked):
    result = run(pub, "subscribers", "unsubscribe", "first@example.org")
    assert result.exit_code == 75 and "locked" in one_line(result)


def test_another_sqlite_failure_is_one_line_exit_3(pub, monkeypatch):
    def broken(*a, **k):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(SubscriberStore, "counts", broken)
    result = run(pub, "subscribers", "count")
    line = one_line(result)
    assert result.exit_code == 3 and "news.db" in line and "disk I/O error" in line


def test_reading_commands_work_while_another_process_writes(pub, locked):
    """Opening an up-to-date database takes no write lock: `count` and `list` read through WAL."""
    result = run(pub, "subscribers", "count")
    assert result.exit_code == 0 and "active: 1" in result.output, result.output
    listed = run(pub, "subscribers", "list")
    assert listed.exit_code == 0 and "first@example.org" in listed.output
