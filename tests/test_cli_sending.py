"""The sending commands' exit codes and messages: deferred (8), stopped (130), and hostile
arguments (`schedule --at`, `worker --poll`) refused in one line with nothing stored."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_cli import REPO, run

from tests.smtp_server import SMTPTestServer


def _subscribe(root: Path, n: int) -> None:
    csv = root / "subs.csv"
    csv.write_text("email,name\n" + "".join(f"reader{i}@example.org,Reader {i}\n" for i in range(n)),
                   encoding="utf-8")
    assert run(root, "subscribers", "import", str(csv)).exit_code == 0


def test_an_outage_past_the_foreground_wait_exits_8_with_the_next_retry(publication_root):
    _subscribe(publication_root, 4)
    with SMTPTestServer(rcpt_replies=lambda a: "451 4.3.0 mail system down, try later") as server:
        env = {**server.env(), "NEWSLETTER_BASE_URL": "https://chinaffairs.example",
               "NEWSLETTER_FOREGROUND_WAIT": "0"}
        result = run(publication_root, "send", "6", "--yes", "--skip-checks", env=env)
    assert result.exit_code == 8, result.output
    lines = [x for x in result.output.splitlines() if "readers deferred" in x]
    assert len(lines) == 1 and lines[0].startswith("4 readers deferred (")
    assert "next retry at " in lines[0] and "`newsletter resume 6` will continue" in lines[0]
    status = run(publication_root, "status", "6")
    assert status.exit_code == 0 and "deferred" in status.output
    assert "4 readers deferred; next retry at" in status.output and "451" in status.output


@pytest.mark.parametrize("at", ["0202-03-10T09:00+08:00", "9999-12-31T23:00-14:00", "2025-13-01T09:00+00:00"])
def test_schedule_refuses_out_of_range_times_and_stores_nothing(publication_root, at):
    result = run(publication_root, "schedule", "6", "--at", at, "--skip-checks")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    listed = run(publication_root, "schedule", "list")
    assert listed.exit_code == 0 and "Nothing scheduled." in listed.output


@pytest.mark.parametrize("poll", ["0", "-1", "nan", "inf"])
def test_worker_refuses_a_poll_interval_that_would_spin(publication_root, poll):
    result = run(publication_root, "worker", "--poll", poll,
                 env={"NEWSLETTER_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_SECURITY": "none"})
    assert result.exit_code == 2 and "--poll" in result.output and "Worker started" not in result.output


def test_ctrl_c_with_readers_pending_exits_130_and_says_how_to_continue(publication_root):
    """A real `newsletter send` process, slowed by the rate setting, interrupted with SIGINT."""
    _subscribe(publication_root, 40)
    with SMTPTestServer() as server:
        env = {**os.environ, **server.env(), "NEWSLETTER_BASE_URL": "https://chinaffairs.example",
               "NEWSLETTER_SECRET_KEY": "test-secret", "NEWSLETTER_RATE": "20", "NEWSLETTER_BATCH_SIZE": "5"}
        proc = subprocess.Popen([sys.executable, "-m", "newsletter", "--root", str(publication_root), "send", "6",
                                 "--yes", "--skip-checks"], env=env, cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while server.count < 5:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the send never started"
                time.sleep(0.02)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        sent = server.count
    assert proc.returncode == 130, out + err
    assert "`newsletter resume 6` will continue" in err and sent < 40
    conn = sqlite3.connect(publication_root / "newsletter.db")
    states = dict(conn.execute("SELECT state, COUNT(*) FROM ledger GROUP BY state"))
    assert states.get("sending", 0) == 0 and states["sent"] == sent


def test_status_failed_never_prints_a_configured_secret(publication_root):
    """Even a row stored before errors were scrubbed (an older version) is printed scrubbed."""
    from newsletter.ledger import open_ledger

    _subscribe(publication_root, 1)
    conn = open_ledger(publication_root / "newsletter.db")
    conn.execute("INSERT INTO deliveries(slug, content_hash, state, created_at, nonce) VALUES('006-x', 'h', 'done', "
                 "'2030-01-01T00:00:00.000000Z', 'abc')")
    conn.execute("INSERT INTO ledger(delivery_id, subscriber_id, email, state, last_error) VALUES(1, 1, "
                 "'reader0@example.org', 'failed-permanent', ?)", ("InvalidHeader ' SG.leaky-key-0987\r'",))
    conn.close()
    result = run(publication_root, "status", "--failed", env={"SENDGRID_API_KEY": " SG.leaky-key-0987\r"})
    assert result.exit_code == 0 and "reader0@example.org" in result.output
    assert "SG.leaky-key-0987" not in result.output and "***" in result.output
