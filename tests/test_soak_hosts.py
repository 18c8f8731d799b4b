"""A multi-process soak on PostgreSQL, as on several hosts: three `newsletter worker` processes
and one `newsletter serve` (as the least-privilege web role) share one database; an SMTP server
on loopback drops connections now and then; the worker that holds the delivery is SIGKILLed
twice (a replacement starts, as systemd would), and readers unsubscribe with one click while it
runs. Bounded: 300 readers, two kills, a 15 s lease, loopback only.

What must hold:

* a scheduled delivery is sent by one worker at a time, and finishes ``done``;
* nobody is lost: every reader still subscribed when the list froze got a copy, unless they
  unsubscribed before their batch was claimed (then their row is ``skipped`` and nothing went);
* a second copy only for readers in flight at a kill: at most one batch per kill;
* an unsubscribe answered by `serve` always changed the reader (no spool on PostgreSQL).
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import closing
from datetime import datetime, timedelta, timezone

import pytest
import requests

from newsletter.db import connect
from newsletter.tokens import make_token
from tests.smtp_server import SMTPTestServer
from tests.test_cli import BASE_ENV, run

N, BATCH, KILLS, UNSUBSCRIBES = 300, 10, 2, 30
LEASE = 15


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawn(root, env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "newsletter", "--root", str(root), *args],
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _sender(db: str) -> tuple[int | None, str, int]:
    """(pid holding the delivery's lock, delivery state, rows sent) as the database says."""
    with closing(connect(db)) as conn:
        row = conn.execute("SELECT lock_pid, state, id FROM deliveries ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return None, "", 0
        sent = conn.execute("SELECT COUNT(*) FROM ledger WHERE delivery_id=? AND state='sent'", (row[2],)).fetchone()[0]
        return row[0], row[1], sent


def _unsubscribe(url: str, sid: int, email: str) -> int:
    token = make_token(BASE_ENV["NEWSLETTER_SECRET_KEY"], sid, email)
    return requests.post(f"{url}/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}, timeout=10).status_code


@pytest.mark.timeout(300)
def test_three_workers_and_serve_on_postgresql_survive_sigkills(publication_root, pg_url, pg_web_url):
    csv = publication_root / "readers.csv"
    csv.write_text("email,name\n" + "".join(f"r{i:04d}@example.org,Reader {i}\n" for i in range(N)))
    owner = {"NEWSLETTER_DB": pg_url, "NEWSLETTER_BASE_URL": "https://chinaffairs.example"}
    assert run(publication_root, "subscribers", "import", str(csv), env=owner).exit_code == 0
    with closing(connect(pg_url)) as conn:
        ids = dict(conn.execute("SELECT email, id FROM subscribers"))
    procs: list[subprocess.Popen] = []
    with SMTPTestServer(drop_after=70, drops=4) as server:
        env = {**BASE_ENV, **owner, **server.env(), "NEWSLETTER_LEASE_SECONDS": str(LEASE),
               "NEWSLETTER_RATE": "40", "NEWSLETTER_BATCH_SIZE": str(BATCH)}
        at = (datetime.now(timezone.utc) + timedelta(seconds=2)).isoformat()
        assert run(publication_root, "schedule", "add", "6", "--at", at, "--skip-checks", env=env).exit_code == 0
        port = _free_port()
        web = {**BASE_ENV, "NEWSLETTER_DB": pg_web_url, "NEWSLETTER_BASE_URL": "https://chinaffairs.example"}
        procs.append(_spawn(publication_root, web, "serve", "--port", str(port)))
        procs += [_spawn(publication_root, env, "worker", "--poll", "0.5") for _ in range(3)]
        try:
            answered, takeovers = _drive(pg_url, f"http://127.0.0.1:{port}", ids, procs, publication_root, env)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
        received = collections.Counter(server.recipients())
    with closing(connect(pg_url)) as conn:
        rows = dict(conn.execute("SELECT email, state FROM ledger"))
        statuses = dict(conn.execute("SELECT email, status FROM subscribers"))
    assert set(rows.values()) <= {"sent", "skipped"}, collections.Counter(rows.values())
    for email, state in rows.items():
        if state == "skipped":
            assert received[email] == 0 and statuses[email] == "unsubscribed", email
        else:
            assert received[email] >= 1, email
    duplicates = sum(n - 1 for n in received.values() if n > 1)
    assert duplicates <= KILLS * BATCH, duplicates
    assert len(takeovers) == KILLS and all(t <= LEASE + 10 for t in takeovers), takeovers  # lease + 10 s
    assert answered  # unsubscribes really happened during the send
    print(f"soak: {duplicates} duplicates over {KILLS} kills, takeovers after {[round(t, 1) for t in takeovers]} s, "
          f"{len(answered)} one-click unsubscribes answered")
    assert all(statuses[e] == "unsubscribed" for e in answered)  # every answered unsubscribe took effect
    status = run(publication_root, "status", env=env)
    assert "done" in status.output, status.output


def _drive(db: str, url: str, ids: dict[str, int], procs: list[subprocess.Popen], root,
           env) -> tuple[list[str], list[float]]:
    """Kill the sending worker at a third and two thirds of the way, unsubscribe readers from the
    end of the list meanwhile, and wait for ``done``. Returns the unsubscribes `serve` answered and
    the seconds from each kill until another worker had sent a reader more (the takeover)."""
    kills, answered, takeovers = 0, [], []
    killed_at: tuple[float, int] | None = None
    pending = sorted(ids)[-UNSUBSCRIBES:]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        pid, state, sent = _sender(db)
        if killed_at is not None and sent > killed_at[1]:
            takeovers.append(time.monotonic() - killed_at[0])
            killed_at = None
        if state == "done":
            return answered, takeovers
        if pending and sent > N // 10:
            email = pending.pop()
            if _unsubscribe(url, ids[email], email) == 200:
                answered.append(email)
        if killed_at is None and kills < KILLS and pid and sent >= (kills + 1) * N // (KILLS + 2):
            victim = next((p for p in procs if p.pid == pid and p.poll() is None), None)
            if victim is not None:
                victim.send_signal(signal.SIGKILL)
                victim.wait(10)
                kills += 1
                killed_at = (time.monotonic(), _sender(db)[2])
                procs.append(_spawn(root, env, "worker", "--poll", "0.5"))  # systemd's Restart=
        time.sleep(0.1)
    errors = [p.stderr.read().decode(errors="replace")[-2000:] for p in procs if p.poll() is not None and p.stderr]
    raise AssertionError(f"not done in time: {_sender(db)}, kills {kills}; {errors}")
