"""`newsletter send` refuses a broken transport configuration before any reader is claimed.

The issue: a bad SMTP_CA_FILE, CR/LF in SMTP_HELO_NAME, or an API key with a stray space
or a trailing CR (a CRLF .env) failed only after a batch was claimed, leaving it in
'sending'; the key's text then landed in every reader's last_error. Now the command
stops with one line naming the setting (exit code 3, configuration), nobody is in
'sending', and the value never appears.
"""

from __future__ import annotations

import sqlite3

import pytest
from click.testing import CliRunner

from newsletter.cli import cli

SECRET = "sk-live-0123456789abcdef"


def run(root, *args: str, env: dict[str, str]):
    base = {"NEWSLETTER_SECRET_KEY": "test-secret", "NEWSLETTER_BASE_URL": "https://chinaffairs.example"}
    return CliRunner().invoke(cli, ["--root", str(root), *args], env={**base, **env})


@pytest.mark.parametrize("env, setting", [
    ({"NEWSLETTER_TRANSPORT": "resend", "RESEND_API_KEY": SECRET + "\r", "RESEND_API_URL": "http://127.0.0.1:9"},
     "RESEND_API_KEY"),
    ({"NEWSLETTER_TRANSPORT": "sendgrid", "SENDGRID_API_KEY": " " + SECRET, "SENDGRID_API_URL": "http://127.0.0.1:9"},
     "SENDGRID_API_KEY"),
    ({"NEWSLETTER_TRANSPORT": "brevo", "BREVO_API_KEY": SECRET + "\u00e9\u20ac", "BREVO_API_URL": "http://127.0.0.1:9"},
     "BREVO_API_KEY"),
    ({"NEWSLETTER_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": "9", "SMTP_SECURITY": "none",
      "SMTP_HELO_NAME": "news.example.org\r\nMAIL FROM:<x@evil.example>"}, "SMTP_HELO_NAME"),
    ({"NEWSLETTER_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": "9",
      "SMTP_CA_FILE": "no-such-ca.pem"}, "SMTP_CA_FILE"),
], ids=["key-trailing-cr", "key-leading-space", "key-not-latin-1", "helo-crlf", "ca-file"])
def test_send_refuses_before_claiming_anyone(publication_root, env, setting):
    added = run(publication_root, "subscribers", "add", "reader@example.org", env={})
    assert added.exit_code == 0, added.output
    result = run(publication_root, "send", "6", "--yes", "--skip-checks", env=env)
    assert result.exit_code == 3, result.output
    assert setting in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 3  # one line of error (plus any pre-flight line)
    assert SECRET not in result.output and "evil" not in result.output
    with sqlite3.connect(publication_root / "newsletter.db") as conn:
        states = [row[0] for row in conn.execute("SELECT state FROM ledger")]
    assert "sending" not in states and "uncertain" not in states
