"""`check` with the sender's DNS (a real DNS server on 127.0.0.1 serving the fixture zones) and
the bulk-sender readiness section: each requirement pass/fail/unknown and how it was established."""

from __future__ import annotations

import socket
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from newsletter.checks.sender import check_sender
from newsletter.cli import cli
from newsletter.config import load_settings
from newsletter.events import Event, Kind, apply_event
from newsletter.ledger import open_ledger, timestamp
from newsletter.store import SubscriberStore
from tests.dns_fixtures import fixture_zone, pem, rsa_key, smtp_env
from tests.dns_server import LoopbackDNS

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def dns():
    with LoopbackDNS(fixture_zone(KEY, rsa_key())) as server:
        yield server


KEY = rsa_key()


def env_for(tmp_path, dns, domain: str, **extra: str) -> dict[str, str]:
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(pem(KEY))
    return smtp_env(domain, dns.address, key_file, NEWSLETTER_BASE_URL="https://news.example.org", **extra)


def check(root, env):
    return CliRunner().invoke(cli, ["--root", str(root), "check", "6"], env=env, catch_exceptions=False)


def readiness(output: str) -> dict[str, str]:
    section = output.split("Bulk-sender readiness (Gmail, Yahoo, Outlook.com):\n")[1]
    return {line.split(": ")[0][10:]: line.split()[0] for line in section.splitlines() if line.startswith("  ")}


def test_good_sender_is_ready(publication_root, tmp_path, dns):
    result = check(publication_root, env_for(tmp_path, dns, "good.example"))
    assert result.exit_code == 0, result.output
    got = readiness(result.output)
    assert got == {"SPF": "pass", "DKIM": "pass", "DMARC aligned with From": "pass", "TLS": "pass",
                   "Forward and reverse DNS of the sending host": "pass", "One-click unsubscribe (RFC 8058)": "pass",
                   "Complaint rate below 0.3%": "unknown"}, result.output
    assert "[DNS (doctor)]" in result.output and "[headers (built message)]" in result.output


def test_a_dns_failure_is_a_check_error(publication_root, tmp_path, dns):
    result = check(publication_root, env_for(tmp_path, dns, "nodmarc.example"))
    assert result.exit_code == 6
    assert "error: _dmarc.nodmarc.example: no DMARC record" in result.output and "[sender.dmarc]" in result.output
    assert readiness(result.output)["DMARC aligned with From"] == "fail"


def test_unreachable_dns_is_said_plainly_and_does_not_fail(publication_root, tmp_path, dns):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        env = env_for(tmp_path, dns, "good.example", NEWSLETTER_RESOLVER=f"127.0.0.1:{sock.getsockname()[1]}",
                      NEWSLETTER_DNS_TIMEOUT="0.3")
        result = check(publication_root, env)
    assert result.exit_code == 0, result.output
    assert "warning: sender DNS not checked: DNS is not reachable" in result.output
    got = readiness(result.output)
    assert got["SPF"] == got["DKIM"] == "unknown" and got["One-click unsubscribe (RFC 8058)"] == "pass"


def test_one_click_missing_without_https_base_url(publication_root, tmp_path, dns):
    env = env_for(tmp_path, dns, "good.example")
    env["NEWSLETTER_BASE_URL"] = "http://news.example.org"
    assert readiness(check(publication_root, env).output)["One-click unsubscribe (RFC 8058)"] == "fail"


def seed_delivery(settings, sent: int, complaints: int, started: datetime) -> None:
    """A finished delivery of `sent` readers, `complaints` of whom reported it (by provider id)."""
    conn = open_ledger(settings.db_path)
    store = SubscriberStore(conn)
    ids = [store.add(f"r{started:%j}-{i}@example.org").id for i in range(sent)]
    cur = conn.execute("INSERT INTO deliveries(slug, content_hash, state, created_at, started_at, test, total) "
                       "VALUES('old', 'h', 'done', ?, ?, 0, ?)", (timestamp(started), timestamp(started), sent))
    did = cur.lastrowid
    conn.executemany("INSERT INTO ledger(delivery_id, subscriber_id, email, state, provider_id) "
                     "VALUES(?, ?, ?, 'sent', ?)", [(did, sid, f"r{started:%j}-{i}@example.org", f"p{did}-{i}")
                                                     for i, sid in enumerate(ids)])
    conn.commit()
    for i in range(complaints):
        apply_event(store, Event(Kind.COMPLAINT, "postmark", f"c{did}-{i}", email=f"r{started:%j}-{i}@example.org",
                                 provider_id=f"p{did}-{i}"), now=NOW)
    conn.close()


def test_complaint_rate_comes_from_recent_deliveries(publication_root):
    settings = load_settings(publication_root, environ={})
    seed_delivery(settings, 1000, 2, NOW - timedelta(days=3))      # 0.2%: under the ceiling
    seed_delivery(settings, 100, 50, NOW - timedelta(days=45))     # long ago: not counted
    from email.message import EmailMessage

    rate = check_sender(settings, EmailMessage(), now=NOW).readiness[-1]
    assert (rate.status, rate.source) == ("pass", "feedback events of deliveries in the last 30 days")
    assert "2 complaint(s) in 1,000 messages delivered (0.20%)" in rate.detail
    seed_delivery(settings, 500, 3, NOW - timedelta(days=1))       # now 5 in 1,500: 0.33%
    result = check_sender(settings, EmailMessage(), now=NOW)
    assert result.readiness[-1].status == "fail" and "5 complaint(s) in 1,500" in result.readiness[-1].detail
    assert [f.code for f in result.findings] == ["sender.complaint-rate"]
