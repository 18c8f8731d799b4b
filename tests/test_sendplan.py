"""The dry run over every active subscriber: a message that cannot be built fails alone, and says so."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from newsletter.cli import cli
from newsletter.config import load_settings
from newsletter.render import render_issue
from newsletter.sendplan import FAILURE_DETAILS, dry_run_all
from newsletter.store import SubscriberStore

ENV = {"NEWSLETTER_TRANSPORT": "dryrun", "NEWSLETTER_SECRET_KEY": "test-secret"}


def _subscribers(root: Path, good: int, legacy: list[str]) -> None:
    store = SubscriberStore.open(root / "newsletter.db")
    for i in range(good):
        store.add(f"reader{i}@example.org", f"Reader {i}")
    # Rows written before imports stored IDNA domains: sending cannot carry them.
    store.conn.executemany("INSERT INTO subscribers(email, created_at, changed_at) VALUES(?, '', '')",
                           [(e,) for e in legacy])
    store.close()


def test_dry_run_writes_every_good_message_and_counts_the_rest(publication_root):
    legacy = [f"idn{i}@bücher.example" for i in range(FAILURE_DETAILS + 3)]
    _subscribers(publication_root, 18, legacy)
    settings = load_settings(publication_root, environ=ENV)
    summary = dry_run_all(settings, render_issue(publication_root / "issues" / "006-global-governance-of-ai.md",
                                                 settings))
    outbox = publication_root / "outbox" / "global-governance-of-ai"
    assert summary.messages == 18 == len(list(outbox.glob("*.eml")))
    assert summary.failed == len(legacy) and len(summary.failures) == FAILURE_DETAILS
    assert summary.failures[0][0] == legacy[0] and "not an ASCII address" in summary.failures[0][1]
    assert summary.size == sum(p.stat().st_size for p in outbox.glob("*.eml"))


def test_cli_dry_run_exits_non_zero_naming_the_failures(publication_root):
    _subscribers(publication_root, 18, ["idn@bücher.example", "idn2@bücher.example"])
    result = CliRunner().invoke(cli, ["--root", str(publication_root), "send", "6", "--dry-run", "--skip-checks"],
                                env=ENV)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "18 message(s) for 20 active subscriber(s)" in result.output
    assert "not written: idn@bücher.example" in result.output
    assert "2 message(s) could not be built" in result.output
    assert len(list((publication_root / "outbox" / "global-governance-of-ai").glob("*.eml"))) == 18


def test_test_recipients_respect_the_suppression_list(publication_root):
    import pytest

    from newsletter.errors import InputError
    from newsletter.sendplan import checked_test_recipients

    store = SubscriberStore.open(publication_root / "newsletter.db")
    store.add("gone@example.org")
    store.conn.execute("UPDATE subscribers SET status='unsubscribed' WHERE email='gone@example.org'")
    store.close()
    settings = load_settings(publication_root, environ=ENV)
    assert checked_test_recipients(settings, ["Editor@Example.ORG"]) == ["Editor@example.org"]
    with pytest.raises(InputError, match="gone@example.org unsubscribed or bounced"):
        checked_test_recipients(settings, ["editor@example.org", "gone@example.org"])
