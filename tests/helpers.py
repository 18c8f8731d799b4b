"""Helpers the test modules share: made-up issues, subscribers in bulk, a fake clock, the
recording transport (newsletter's public MockTransport) and the delivery engine on a fresh
connection. One home, so no test module imports another."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

from click.testing import CliRunner

from newsletter.cli import cli
from newsletter.clock import ShiftedClock
from newsletter.db import connect
from newsletter.config import Publication
from newsletter.delivery import DeliveryOptions, run_delivery
from newsletter.ledger import open_ledger, start_or_resume
from newsletter.message import OutgoingMessage, PreparedIssue
from newsletter.render import RenderedEmail, content_hash
from newsletter.transports.mock import Handler, MockTransport, Received
from tests.smtp_server import SMTPTestServer

REPO = Path(__file__).resolve().parent.parent
BASE_ENV = {"NEWSLETTER_TRANSPORT": "dryrun", "NEWSLETTER_SECRET_KEY": "test-secret"}


def run(root: Path, *args: str, env: dict | None = None, input: str | None = None):
    """``newsletter --root ROOT ARGS`` in-process (click's CliRunner), dry-run transport by default."""
    return CliRunner().invoke(cli, ["--root", str(root), *args], env={**BASE_ENV, **(env or {})}, input=input)


def subscribe_readers(root: Path, n: int) -> None:
    """n readers reader<i>@example.org, imported through the CLI."""
    csv = root / "subs.csv"
    csv.write_text("email,name\n" + "".join(f"reader{i}@example.org,Reader {i}\n" for i in range(n)),
                   encoding="utf-8")
    assert run(root, "subscribers", "import", str(csv)).exit_code == 0


def interrupted(root: Path, args: list[str], sig: int) -> tuple[int, str, str, int]:
    """A real `newsletter ARGS` process sending to aiosmtpd, slowed by the rate setting and sent
    ``sig`` once 5 messages arrived: (exit code, stdout, stderr, messages the server got)."""
    with SMTPTestServer() as server:
        env = {**os.environ, **server.env(), "NEWSLETTER_BASE_URL": "https://chinaffairs.example",
               "NEWSLETTER_SECRET_KEY": "test-secret", "NEWSLETTER_RATE": "20", "NEWSLETTER_BATCH_SIZE": "5"}
        proc = subprocess.Popen([sys.executable, "-m", "newsletter", "--root", str(root), *args], env=env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while server.count < 5:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the send never started"
                time.sleep(0.02)
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return proc.returncode, out, err, server.count


SECRET = "test-secret-key-0123456789"
DAY1 = datetime(2031, 3, 4, 9, 0, tzinfo=timezone.utc)


def make_rendered(slug: str = "001-hello", version: str = "v1", size: int = 0) -> RenderedEmail:
    filler = "<p>" + ("Lorem ipsum dolor sit amet. " * (size // 28 + 1))[:size] + "</p>" if size else ""
    html = (f"<html><body><p>Hello %%NAME%% ({version})</p>{filler}"
            "<a href=\"%%UNSUBSCRIBE_URL%%\">unsubscribe %%EMAIL%%</a></body></html>")
    text = f"Hello %%NAME%% ({version})\n\nUnsubscribe: %%UNSUBSCRIBE_URL%%\n"
    return RenderedEmail(slug=slug, number=1, title="Hello", subject=f"Hello ({version})", preheader="",
                         html=html, text=text, lang="en", reply_to=None,
                         content_hash=content_hash("Hello", html, text))


def make_prepared(slug: str = "001-hello", version: str = "v1", size: int = 0) -> PreparedIssue:
    pub = Publication(name="Test Letter", from_email="news@example.org", base_url="https://news.example.org")
    return PreparedIssue(make_rendered(slug, version, size), pub, SECRET)


def options(**kw) -> DeliveryOptions:
    return DeliveryOptions(**kw)


def key(db: Path, did: int, batch: int) -> str:
    """The idempotency key of a batch: nl-<the delivery's random nonce>-<delivery>-<batch>."""
    conn = open_ledger(db)
    try:
        nonce = conn.execute("SELECT nonce FROM deliveries WHERE id=?", (did,)).fetchone()[0]
    finally:
        conn.close()
    assert len(nonce) == 16 and int(nonce, 16) >= 0
    return f"nl-{nonce}-{did}-{batch}"


def add_subscribers(db: Path, n: int, start: int = 0) -> list[str]:
    """n active subscribers user<i>@example.org (bulk SQL: the store's schema, none of its per-row checks)."""
    conn = open_ledger(db)
    emails = [f"user{i:05d}@example.org" for i in range(start, start + n)]
    with conn:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO subscribers(email, name, status, created_at, changed_at) "
                         "VALUES(?, ?, 'active', '2030-01-01T00:00:00.000000Z', '2030-01-01T00:00:00.000000Z')",
                         [(e, f"User {i}") for i, e in enumerate(emails, start)])
        conn.execute("COMMIT")
    conn.close()
    return emails


class FakeTime:
    """A :class:`newsletter.clock.Clock` for the engine: sleeping advances the fake time and is
    recorded. Its wall time starts at ``wall`` (default: the real time now) and runs on with it."""

    def __init__(self, start: float = 1000.0, wall: datetime | None = None):
        self.t = self.t0 = start
        self.wall0 = wall or datetime.now(timezone.utc)
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.t

    clock = monotonic  # what pacing.Pacer takes

    def now(self) -> datetime:
        return self.wall0 + timedelta(seconds=self.t - self.t0)

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.t += seconds


#: The recording transport is the public MockTransport; the tests call it by their old names.
Sink = Received


class Recorder(MockTransport):
    """MockTransport with the tests' argument names: ``Recorder(sink, behave=…, before=…)``."""

    def __init__(self, sink: Received | None = None, behave: Handler | None = None,
                 before: Callable[[Sequence[OutgoingMessage], str | None], None] | None = None):
        super().__init__(sink, handler=behave, before=before)

    @property
    def sink(self) -> Received:
        return self.received


def ledger_states(db: Path, delivery_id: int) -> dict[str, str]:
    conn = connect(db)  # either backend: a SQLite path or a PostgreSQL URL
    try:
        return dict(conn.execute("SELECT email, state FROM ledger WHERE delivery_id=? ORDER BY subscriber_id",
                                 (delivery_id,)))
    finally:
        conn.close()


def subscriber_status(db: Path, email: str) -> str:
    conn = connect(db)
    try:
        return conn.execute("SELECT status FROM subscribers WHERE email=?", (email,)).fetchone()[0]
    finally:
        conn.close()


def send(db: Path, prepared=None, *, transport=None, sink=None, ft: FakeTime | None = None, now=None,
         stop=None, progress=None, **opts):
    """start_or_resume + run_delivery on a fresh connection; returns (report, sink)."""
    prepared = prepared or make_prepared()
    sink = sink or (transport.sink if transport else Sink())
    transport = transport or Recorder(sink)
    ft = ft or FakeTime()
    conn = open_ledger(db)
    try:
        did = start_or_resume(conn, prepared)
        clock = ShiftedClock(ft, now()) if now else ft  # ``now``: the wall time this run starts at
        report = run_delivery(conn, did, prepared, lambda: transport, options=options(**opts), stop=stop,
                              progress=progress, clock=clock)
    finally:
        conn.close()
    return report, sink




@contextmanager
def serve_process(root: Path, env: dict[str, str]) -> Iterator[tuple[str, str]]:
    """A real `newsletter serve` on a free loopback port with ``env`` over this process's:
    (its URL, its start line); stopped (SIGTERM, then SIGKILL) at the end."""
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "--root", str(root), "serve", "--port", "0"],
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **env}, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, line + (proc.stderr.read(2000) if proc.poll() is not None else "")
        yield f"http://127.0.0.1:{match.group(1)}", line
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            stream.close()


def wait_until(predicate: Callable[[], bool], limit: float = 15.0) -> bool:
    """Bounded polling: the assertion is on what shows up, never on how fast."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def is_closed(sock: "socket.socket") -> bool:
    """Whether the server has closed ``sock`` (without reading what it may still send)."""
    sock.settimeout(0)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
