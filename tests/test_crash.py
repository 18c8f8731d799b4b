"""Crash safety: real sends in a subprocess, killed with SIGKILL, resumed, finished.

Two sinks on 127.0.0.1, both in this (the parent) process so they outlive the killed sender:

* a real SMTP server (aiosmtpd, tests/smtp_server.py) fed by the real SMTPTransport over two
  connections, on SQLite and on PostgreSQL. SMTP has no idempotency, so a recipient may get a
  second copy, but only one whose row the ledger had left in 'sending': each reader is recorded
  as the server answers, so a kill resends at most the message in flight on each connection.
* a Resend-like HTTP API fed by the real ResendTransport, which, like Resend, remembers
  Idempotency-Key values and does not deliver a repeated request again: zero duplicates.

Kills come at seeded random moments, and some at a moment made certain: while the sink
holds a batch half delivered (SMTP) or delivered but not yet answered (HTTP), the worst case.
"""

from __future__ import annotations

import collections
import json
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from email.utils import parseaddr
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from newsletter.db import connect
from tests.helpers import add_subscribers

from tests.smtp_server import SMTPTestServer

HERE = Path(__file__).resolve().parent
N = 300
RATE = 200  # messages/s: 300 take ~1.5 s
BATCH = {"smtp": 20, "resend": 10}  # resend: one request per batch, so 30 requests to kill among
CONNECTIONS = {"smtp": 2, "resend": 1}  # NEWSLETTER_CONCURRENCY: what a kill may leave in flight
GATE_AFTER = {"smtp": (3, 40), "resend": (1, 2)}  # messages (smtp) or requests (resend) into a run

CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
from tests.helpers import make_prepared, options
from newsletter.delivery import run_delivery
from newsletter.ledger import open_ledger, start_or_resume
kind, db, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if kind == "smtp":
    from newsletter.transports.smtp import SMTPTransport
    factory = lambda: SMTPTransport("127.0.0.1", port, envelope_from="news@example.org", security="none", timeout=10)
else:
    from newsletter.transports.resend import ResendTransport
    factory = lambda: ResendTransport(api_key="re_test_0123456789", api_url=f"http://127.0.0.1:{{port}}")
conn = open_ledger(db)
prepared = make_prepared()
did = start_or_resume(conn, prepared)
print("STARTED", did, flush=True)
report = run_delivery(conn, did, prepared, factory, options=options(batch_size={batch}, rate={rate},
                                                                    concurrency={connections}))
print("REPORT " + json.dumps(report._asdict(), default=str), flush=True)
"""


def start_child(kind: str, db: Path, port: int) -> subprocess.Popen:
    code = CHILD.format(tests=str(HERE.parent), batch=BATCH[kind], rate=RATE, connections=CONNECTIONS[kind])
    return subprocess.Popen([sys.executable, "-c", code, kind, str(db), str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=20)  # reaped: its pid is really gone
    assert proc.returncode == -signal.SIGKILL


def finish(proc: subprocess.Popen) -> dict:
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    line = next(x for x in stdout.splitlines() if x.startswith("REPORT "))
    return json.loads(line[len("REPORT "):])


def ledger(db: Path | str, state: str) -> set[str]:
    conn = connect(db)
    try:
        return {r[0] for r in conn.execute("SELECT email FROM ledger WHERE state=?", (state,))}
    except sqlite3.OperationalError:  # no ledger table yet: the child died before migrating
        return set()
    finally:
        conn.close()


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out waiting for the sender"
        time.sleep(0.005)


class Gate:
    """Lets a sink stop at a chosen moment: the parent arms it, the sink calls pause(),
    the parent sees ``reached`` and kills the sender, then releases the sink."""

    def __init__(self) -> None:
        self.armed_at: int | None = None  # pause when the counter reaches this
        self.count = 0
        self.reached = threading.Event()
        self.release = threading.Event()
        self.lock = threading.Lock()

    def arm(self, after: int) -> None:
        with self.lock:
            self.reached.clear()
            self.release.clear()
            self.armed_at = self.count + after

    def tick(self) -> None:
        with self.lock:
            self.count += 1
            hit = self.armed_at is not None and self.count >= self.armed_at
            if hit:
                self.armed_at = None
        if hit:
            self.reached.set()
            self.release.wait(20)


def crash_and_resume(kind: str, db: Path | str, port: int, gate: Gate, delivered, kills: int, seed: int,
                     on_kill=None) -> tuple[list, dict]:
    """Start the sender ``kills`` times and SIGKILL it, alternating seeded random moments with
    gated (worst-case) ones; then let it finish. Returns the 'sending' sets left by each kill
    and the last run's report. ``on_kill`` hears of each kill's set once the sink has settled."""
    rng = random.Random(seed)
    in_flight_after_kill: list[set[str]] = []
    for k in range(kills):
        proc = start_child(kind, db, port)
        try:
            before = delivered()
            if k % 2 == 0:  # a random moment once it is sending
                wait_for(lambda: delivered() > before, proc)
                time.sleep(rng.uniform(0.0, 0.2))
            else:  # the worst moment: inside a batch the sink has (partly) taken
                gate.arm(rng.randint(*GATE_AFTER[kind]))
                while not gate.reached.wait(0.01):
                    assert proc.poll() is None, proc.communicate()
            kill(proc)
        finally:
            gate.release.set()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        left = ledger(db, "sending")
        assert len(left) <= BATCH[kind] * CONNECTIONS[kind], "a crash leaves at most the batches in flight uncertain"
        in_flight_after_kill.append(left)
        if on_kill is not None:
            on_kill(left)
    proc = start_child(kind, db, port)
    report = finish(proc)
    return in_flight_after_kill, report


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path) -> Path | str:
    return tmp_path / "news.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")


@pytest.mark.timeout(120)
def test_sigkill_smtp_nobody_lost_duplicates_only_where_reported(db):
    emails = add_subscribers(db, N)
    gate = Gate()

    def on_data(address: str):
        gate.tick()  # runs before the message is accepted: the earlier ones of the batch are in
        return None

    in_flight: list[set[str]] = []  # per kill: readers the server took whose row the kill left 'sending'
    seen: collections.Counter = collections.Counter()

    def on_kill(left: set[str]) -> None:
        time.sleep(0.3)  # the sink accepts what the dead sender had fully written
        now = collections.Counter(server.recipients())
        in_flight.append({e for e in left if now[e] > seen[e]})
        seen.update(now - seen)

    with SMTPTestServer(data_replies=on_data) as server:
        sets, report = crash_and_resume("smtp", db, server.port, gate, lambda: server.count, kills=4, seed=20250601,
                                        on_kill=on_kill)
        received = server.recipients()
        ids = collections.defaultdict(set)
        for m in server.messages:
            ids[m.rcpt_tos[0]].add(m.parse()["Message-ID"])

    counts = collections.Counter(received)
    assert set(counts) == set(emails), "nobody is lost"
    duplicated = {e for e, n in counts.items() if n > 1}
    assert duplicated <= set().union(*in_flight), "a second copy only for a message in flight at a kill"
    # Each reader is recorded as the server answers, not per batch: a kill resends at most the one
    # message in flight on each connection (the target: duplicates ≤ connections in flight).
    per_kill = [len(s) for s in in_flight]
    assert max(per_kill) <= CONNECTIONS["smtp"], in_flight
    assert sum(counts.values()) - N <= 4 * CONNECTIONS["smtp"], counts.most_common(10)
    print(f"duplicates per SIGKILL over SMTP ({'postgresql' if str(db).startswith('postgresql') else 'sqlite'}): {per_kill}, {CONNECTIONS['smtp']} connections in flight")
    for e in duplicated:
        assert counts[e] <= 1 + sum(e in s for s in sets)
        assert len(ids[e]) == 1  # the copies share one Message-ID, so mail clients can collapse them
    assert all(sets[1::2]), "the gated kills happened inside a batch"
    assert report["state"] == "done" and report["sent"] == N and report["pending"] == 0
    assert report["interrupted_resent"] == len(sets[-1])
    assert ledger(db, "sent") == set(emails)


class IdempotentAPI:
    """A Resend-like /emails/batch on 127.0.0.1: a request whose Idempotency-Key was seen is
    answered again without delivering anything; the same key with other content is a 409."""

    def __init__(self, gate: Gate):
        self.gate = gate
        self.lock = threading.Lock()
        self.delivered: list[tuple[str, str]] = []   # (recipient, key)
        self.seen: dict[str, tuple[list[str], bytes]] = {}
        self.replayed = 0
        self.conflicts = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                key = self.headers.get("Idempotency-Key")
                to = [parseaddr(m["to"][0])[1] for m in json.loads(body)]
                with api.lock:
                    prior = api.seen.get(key) if key else None
                    if prior is not None and prior[0] != to:
                        api.conflicts += 1
                        status, reply = 409, json.dumps({"name": "invalid_idempotent_request"}).encode()
                    elif prior is not None:
                        api.replayed += 1
                        status, reply = 200, prior[1]
                    else:
                        start = len(api.delivered)
                        api.delivered.extend((r, key) for r in to)
                        reply = json.dumps({"data": [{"id": f"em_{start + i}"} for i in range(len(to))]}).encode()
                        status = 200
                        if key:
                            api.seen[key] = (to, reply)
                if status == 200 and prior is None:
                    api.gate.tick()  # delivered, but the sender has not heard back yet
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the sender was killed while we held its answer: that is the point

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.gate.release.set()
        self.server.shutdown()
        self.server.server_close()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def count(self) -> int:
        with self.lock:
            return len(self.delivered)


@pytest.mark.timeout(60)
def test_sigkill_idempotent_provider_zero_duplicates(tmp_path):
    db = tmp_path / "news.db"
    emails = add_subscribers(db, N)
    gate = Gate()
    with IdempotentAPI(gate) as api:
        sets, report = crash_and_resume("resend", db, api.port, gate, api.count, kills=4, seed=7)
        delivered = list(api.delivered)
        replayed, conflicts = api.replayed, api.conflicts

    counts = collections.Counter(r for r, _ in delivered)
    assert counts == collections.Counter(emails), "everyone exactly once"
    assert all(sets[1::2]), "each gated kill left a delivered-but-unrecorded batch"
    assert replayed >= 2, "the resumed runs resent those batches under their keys, and the API dropped them"
    assert conflicts == 0, "a key is only ever reused for the very same batch"
    assert report["state"] == "done" and report["sent"] == N
    assert ledger(db, "sent") == set(emails)
