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

from tests.helpers import REPO, interrupted as _interrupted, run, subscribe_readers as _subscribe

from tests.smtp_server import SMTPTestServer


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
    returncode, out, err, sent = _interrupted(publication_root, ["send", "6", "--yes", "--skip-checks"], signal.SIGINT)
    assert returncode == 130, out + err
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


def test_dispatch_stopped_by_sigterm_with_readers_pending_exits_130(publication_root):
    """`dispatch` from cron or a timer, stopped mid-send: its exit code must not say all is well."""
    import datetime as dt

    _subscribe(publication_root, 40)
    at = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)).isoformat()
    scheduled = run(publication_root, "schedule", "6", "--at", at, "--skip-checks",
                    env={"NEWSLETTER_BASE_URL": "https://chinaffairs.example"})  # the content hash covers links
    assert scheduled.exit_code == 0, scheduled.output
    returncode, out, err, sent = _interrupted(publication_root, ["dispatch"], signal.SIGTERM)
    assert sent < 40
    assert returncode == 130, out + err
    assert "readers pending" in err and "dispatch" in err


def test_a_send_whose_transport_fails_to_start_is_not_sent_later_by_dispatch(publication_root):
    """Exit 4 says nobody was contacted; a cron `dispatch` must not then send the whole issue
    on its own. The editor's next `send` continues it."""
    import socket

    _subscribe(publication_root, 3)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    base = {"NEWSLETTER_BASE_URL": "https://chinaffairs.example", "NEWSLETTER_TRANSPORT": "smtp",
            "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "SMTP_SECURITY": "none", "SMTP_TIMEOUT": "5"}
    failed = run(publication_root, "send", "6", "--yes", "--skip-checks", env=base)
    assert failed.exit_code == 4, failed.output
    with SMTPTestServer() as server:
        env = {**server.env(), "NEWSLETTER_BASE_URL": "https://chinaffairs.example"}
        later = run(publication_root, "dispatch", env=env)
        assert later.exit_code == 0 and "Nothing due." in later.output, later.output
        assert server.count == 0
        status = run(publication_root, "status", "6")
        assert "paused" in status.output
        again = run(publication_root, "send", "6", "--yes", "--skip-checks", env=env)
        assert again.exit_code == 0, again.output
        assert server.count == 3



def test_hold_for_editor_leaves_a_delivery_another_process_is_sending_alone(publication_root):
    """A second `send` that fails before taking the lock must not mark a live send as paused."""
    import datetime as dt

    from newsletter.ledger import acquire_lock, get_delivery, hold_for_editor, open_ledger

    _subscribe(publication_root, 2)
    with SMTPTestServer() as server:
        env = {**server.env(), "NEWSLETTER_BASE_URL": "https://chinaffairs.example", "SMTP_SECURITY": "starttls"}
        assert run(publication_root, "send", "6", "--yes", "--skip-checks", env=env).exit_code == 4
    conn = open_ledger(publication_root / "newsletter.db")
    try:
        with conn:
            conn.execute("UPDATE deliveries SET state='running' WHERE id=1")
        acquire_lock(conn, 1, "another-sender", dt.datetime.now(dt.timezone.utc))  # live: this process
        hold_for_editor(conn, 1, "could not start")
        assert get_delivery(conn, 1).state == "running"
    finally:
        conn.close()


def test_dispatch_that_holds_a_late_delivery_exits_9_not_0(publication_root):
    """A scheduled send found too late is held, not sent: cron must see that nobody was mailed."""
    import datetime as dt

    _subscribe(publication_root, 2)
    env = {"NEWSLETTER_BASE_URL": "https://chinaffairs.example"}
    at = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M+00:00")
    scheduled = run(publication_root, "schedule", "6", "--at", at, "--skip-checks", env=env)
    assert scheduled.exit_code == 0, scheduled.output
    with SMTPTestServer() as server:
        held = run(publication_root, "dispatch", env={**server.env(), **env})
        assert held.exit_code == 9, held.output
        assert "missed its send time" in held.output and server.count == 0
        again = run(publication_root, "dispatch", env={**server.env(), **env})
        assert again.exit_code == 0 and "Nothing due." in again.output and server.count == 0


def test_status_of_a_sent_issue_whose_file_was_removed_still_answers_by_slug(publication_root):
    from newsletter.ledger import open_ledger

    conn = open_ledger(publication_root / "newsletter.db")
    conn.execute("INSERT INTO deliveries(slug, content_hash, state, created_at, nonce) "
                  "VALUES('retired-issue', 'h', 'done', '2026-01-01T00:00:00.000000Z', 'n')")
    conn.close()
    shown = run(publication_root, "status", "retired-issue")
    assert shown.exit_code == 0 and "retired-issue" in shown.output and "done" in shown.output, shown.output
    missing = run(publication_root, "status", "never-sent")
    assert missing.exit_code == 2 and "Traceback" not in missing.output


@pytest.fixture
def opened_connections(monkeypatch) -> list[sqlite3.Connection]:
    """Every SQLite connection opened while the test runs (the real ``sqlite3.connect``, kept
    referenced so an unclosed one cannot be silently freed). Python 3.11's sqlite3 raises no
    ResourceWarning for an unclosed connection (3.13's does), so the test asks each one."""
    opened: list[sqlite3.Connection] = []
    real = sqlite3.connect

    def connect(*args, **kwargs):
        conn = real(*args, **kwargs)
        opened.append(conn)
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)
    return opened


def _unclosed(opened: list[sqlite3.Connection]) -> list[sqlite3.Connection]:
    out = []
    for conn in opened:
        try:
            conn.execute("SELECT 1")
        except sqlite3.ProgrammingError:  # "Cannot operate on a closed database"
            continue
        out.append(conn)
    return out


def test_resume_closes_every_database_connection_it_opens(publication_root, opened_connections):
    _subscribe(publication_root, 3)
    env = {"NEWSLETTER_BASE_URL": "https://chinaffairs.example", "NEWSLETTER_FOREGROUND_WAIT": "0"}
    nothing = run(publication_root, "resume", "6", "--yes")
    assert nothing.exit_code == 2 and "no unfinished delivery" in nothing.output
    assert opened_connections and not _unclosed(opened_connections)
    with SMTPTestServer(rcpt_replies=lambda a: "451 4.3.0 mail system down, try later") as down:
        assert run(publication_root, "send", "6", "--yes", "--skip-checks", env={**down.env(), **env}).exit_code == 8
        opened_connections.clear()
        # Still down (whether or not the retry is due yet): deferred again, exit 8 either way.
        result = run(publication_root, "resume", "6", "--yes", env={**down.env(), **env})
    assert result.exit_code == 8 and "deferred" in result.output, result.output
    assert opened_connections and not _unclosed(opened_connections)


def test_replies_closes_its_database_connection(publication_root, opened_connections):
    result = run(publication_root, "replies", "6", "--forget-older-than", "30")
    assert result.exit_code == 0, result.output
    assert opened_connections and not _unclosed(opened_connections)


def _worker_until(root: Path, env: dict, args: list[str], until) -> tuple[str, str]:
    """A real `newsletter worker ARGS` process, stopped with SIGTERM once ``until()`` holds."""
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "--root", str(root), "worker", "--poll", "0.2",
                             *args], env={**os.environ, **env}, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not until():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the worker never got there"
            time.sleep(0.05)
        time.sleep(0.5)  # the report line follows the last message
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out, err


@pytest.mark.parametrize("flag", [[], ["--quiet"], ["--verbose"]])
def test_worker_prints_each_delivery_it_starts_and_finishes_as_dispatch_does(publication_root, flag):
    import datetime as dt

    _subscribe(publication_root, 3)
    env = {"NEWSLETTER_BASE_URL": "https://chinaffairs.example", "NEWSLETTER_SECRET_KEY": "test-secret"}
    at = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)).isoformat()
    assert run(publication_root, "schedule", "6", "--at", at, "--skip-checks", env=env).exit_code == 0
    with SMTPTestServer() as server:
        out, err = _worker_until(publication_root, {**server.env(), **env}, flag, lambda: server.count >= 3)
    lines = out.splitlines()
    started = [x for x in lines if x.startswith("Delivery 1 of global-governance-of-ai: sending")]
    done = [x for x in lines if x.startswith("Delivery 1 of global-governance-of-ai (done): 3 sent")]
    if flag == ["--quiet"]:
        assert out.strip() == "" and err.strip() == "", out + err
    else:
        assert len(started) == 1 and len(done) == 1, out + err
        assert lines.index(started[0]) < lines.index(done[0])
        assert ("Checking for due sends." in lines) == (flag == ["--verbose"])


def test_worker_prints_errors_even_when_quiet(publication_root):
    import datetime as dt

    _subscribe(publication_root, 1)
    env = {"NEWSLETTER_BASE_URL": "https://chinaffairs.example", "NEWSLETTER_SECRET_KEY": "test-secret"}
    at = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M+00:00")
    assert run(publication_root, "schedule", "6", "--at", at, "--skip-checks", env=env).exit_code == 0
    db = publication_root / "newsletter.db"

    def held() -> bool:
        return sqlite3.connect(db).execute("SELECT state FROM deliveries").fetchone()[0] == "held"

    with SMTPTestServer() as server:
        out, err = _worker_until(publication_root, {**server.env(), **env}, ["--quiet"], held)
    assert "Delivery 1 of global-governance-of-ai (held)" in out and "missed its send time" in out


def test_dispatch_says_which_delivery_it_starts(publication_root):
    import datetime as dt

    _subscribe(publication_root, 2)
    env = {"NEWSLETTER_BASE_URL": "https://chinaffairs.example"}
    at = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)).isoformat()
    assert run(publication_root, "schedule", "6", "--at", at, "--skip-checks", env=env).exit_code == 0
    with SMTPTestServer() as server:
        result = run(publication_root, "dispatch", env={**server.env(), **env})
    assert result.exit_code == 0, result.output
    assert "Delivery 1 of global-governance-of-ai: sending (was scheduled)." in result.output
    assert "Delivery 1 of global-governance-of-ai (done): 2 sent" in result.output
