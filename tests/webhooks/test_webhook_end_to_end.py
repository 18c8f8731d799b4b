"""End to end: send #6 through the Postmark transport to a loopback stand-in of Postmark's
API, let Postmark's webhooks report a hard bounce, a complaint, an unsubscribe and one
soft bounce to the real serve app, then send #7: exactly the suppressed readers are
skipped, and #6's delivery counts its events."""

from __future__ import annotations

import json
import shutil
from contextlib import closing
from pathlib import Path

from click.testing import CliRunner

from newsletter.cli import main
from newsletter.config import load_settings
from newsletter.db import connect
from newsletter.events import delivery_event_counts
from newsletter.web import make_app
from tests.transports.conftest import FakeAPI
from tests.webhooks.conftest import HTTP, serve
from tests.webhooks.kits import KITS, NOW

READERS = [f"reader{i}@example.org" for i in range(5)]
FIXTURE_7 = Path(__file__).resolve().parent.parent / "fixtures" / "007-clean.md"


class _Main:
    name = "newsletter"

    def main(self, args=None, prog_name=None, **extra):
        main(list(args or []))


def cli(root: Path, env: dict[str, str], *args: str):
    result = CliRunner().invoke(_Main(), ["--root", str(root), *args], env=env)
    assert result.exit_code == 0, result.output
    return result


def postmark_api(api: FakeAPI) -> list[str]:
    """Answer ``POST /email/batch`` as Postmark documents it; return the recipients list."""
    sent: list[str] = []

    def handler(req):
        assert req.path == "/email/batch"
        batch = req.json()
        sent.extend(m["To"].rpartition("<")[2].rstrip(">") for m in batch)
        return 200, [{"ErrorCode": 0, "Message": "OK", "To": m["To"],
                      "MessageID": f"pm-{m['To'].rpartition('<')[2].rstrip('>')}"} for m in batch], {}

    api.handler = handler
    return sent


def test_webhooks_suppress_readers_before_the_next_send(publication_root, keys, any_db):
    shutil.copy(FIXTURE_7, publication_root / "issues" / FIXTURE_7.name)
    api = FakeAPI().start()
    try:
        sent = postmark_api(api)
        env = {**keys.env(), "NEWSLETTER_TRANSPORT": "postmark", "POSTMARK_SERVER_TOKEN": "pm-token",
               "POSTMARK_API_URL": api.url, "NEWSLETTER_SECRET_KEY": "e2e-secret",
               "NEWSLETTER_BASE_URL": "https://chinaffairs.example", "NEWSLETTER_SOFT_BOUNCE_LIMIT": "3",
               "NO_PROXY": "127.0.0.1", "NEWSLETTER_DB": str(any_db)}  # on SQLite and on PostgreSQL
        for email in READERS:
            cli(publication_root, env, "subscribers", "add", email)
        cli(publication_root, env, "send", "6", "--yes", "--skip-checks")
        assert sorted(sent) == READERS
        report_webhooks(publication_root, env, keys)
        sent.clear()
        cli(publication_root, env, "send", "7", "--yes", "--skip-checks")
        assert sorted(sent) == ["reader0@example.org", "reader4@example.org"]
    finally:
        api.stop()
    with closing(connect(any_db)) as conn:
        six = conn.execute("SELECT id FROM deliveries WHERE slug='global-governance-of-ai'").fetchone()[0]
        assert delivery_event_counts(conn, six) == {"hard-bounce": 1, "soft-bounce": 1, "complaint": 1,
                                                    "unsubscribe": 1}


def report_webhooks(root: Path, env: dict[str, str], keys) -> None:
    """What Postmark posts after #6, by MessageID and address, to the real app over HTTP."""
    kit = KITS["postmark"](keys)
    hard = {**kit.payload("hard", READERS[1], "x"), "MessageID": f"pm-{READERS[1]}"}
    complaint = {**kit.payload("complaint", READERS[2], "y"), "MessageID": f"pm-{READERS[2]}"}
    soft = {**kit.payload("soft", READERS[4], "z"), "MessageID": f"pm-{READERS[4]}"}
    unsubscribe = {"RecordType": "SubscriptionChange", "MessageID": f"pm-{READERS[3]}", "Recipient": READERS[3],
                   "ChangedAt": "2026-03-01T12:00:00Z", "Origin": "Recipient", "SuppressSending": True,
                   "SuppressionReason": "ManualSuppression", "MessageStream": "broadcast"}
    url, stop = serve(make_app(load_settings(root, environ=env)))
    try:
        for payload in (hard, complaint, soft, unsubscribe):
            signed = kit.sign(payload, at=NOW)
            r = HTTP.post(f"{url}/webhooks/postmark", data=signed.body, headers=signed.headers, timeout=10)
            assert r.status_code == 200 and json.loads(r.text)["applied"] == 1, r.text
    finally:
        stop()
