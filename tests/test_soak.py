"""The fault soak: thousands of readers through the real SMTPTransport into a faulty aiosmtpd.

The server (in this process, so it outlives the sender) answers 5 % random 451s at RCPT and
at DATA, 421 "too many connections" in bursts, drops connections before the 250 (after
every 150 messages on a connection) and after it (the message is kept but the reply is
lost). The sender runs in a subprocess and is SIGKILLed ten times at random moments; each
kill is followed by a resume. Retry waits run on a clock whose sleep returns at once, so
the backoff is real but costs no wall time.

What must hold (the README's promise):

* nobody is lost: every reader has at least one copy;
* a second copy only for a reader the ledger reports: in flight at a kill (left 'sending'),
  or whose answer was lost (resent once, counted in ``uncertain_resends``);
* the delivery says ``done`` only when every row is final.
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
from pathlib import Path

import pytest

from tests.helpers import add_subscribers

from tests.smtp_server import SMTPTestServer

HERE = Path(__file__).resolve().parent
N = 2000
BATCH = 25
KILLS = 10

CHILD = """
import json, sys, time
sys.path.insert(0, {tests!r})
from tests.helpers import make_prepared, options
from newsletter.delivery import run_delivery
from newsletter.ledger import open_ledger, start_or_resume
from newsletter.transports.smtp import SMTPTransport
db, port = sys.argv[1], int(sys.argv[2])
skipped = [0.0]
clock = lambda: time.monotonic() + skipped[0]
def sleep(seconds):  # backoff waits pass at once: the retry times are real, the waiting is not
    skipped[0] += max(0.0, seconds)
from newsletter.clock import SystemClock
class SkippingClock(SystemClock):  # the transport's rate-limit pauses (421 "too many") pass at once too
    def monotonic(self):
        return clock()
    def sleep(self, seconds):
        sleep(seconds)
conn = open_ledger(db)
prepared = make_prepared()
did = start_or_resume(conn, prepared)
report = run_delivery(conn, did, prepared,
                      lambda: SMTPTransport("127.0.0.1", port, envelope_from="news@example.org", security="none",
                                            timeout=10, clock=SkippingClock()),
                      options=options(batch_size={batch}, max_wait=10**6), clock=SkippingClock())
print("REPORT " + json.dumps(report._asdict(), default=str), flush=True)
"""


class Faults:
    """The server's misbehaviour, seeded, thread-safe."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.rcpts = 0
        self.seen = collections.Counter()

    def rcpt(self, address: str) -> str | None:
        with self.lock:
            self.rcpts += 1
            self.seen["rcpt"] += 1
            if self.rcpts % 500 < 12:  # a burst of "too many connections"
                self.seen["421"] += 1
                return "421 4.7.0 too many connections, slow down"
            if self.rng.random() < 0.05:
                self.seen["451-rcpt"] += 1
                return "451 4.3.0 temporary failure, try later"
        return None

    def data(self, address: str) -> str | None:
        with self.lock:
            if self.rng.random() < 0.05:
                self.seen["451-data"] += 1
                return "451 4.7.1 try again later"
        return None

    def lose(self, address: str) -> bool:
        with self.lock:
            lost = self.rng.random() < 0.004
            self.seen["lost-250"] += lost
        return lost


def _ledger(db: Path, sql: str) -> list:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # the child died before creating the tables
        return []
    finally:
        conn.close()


def _run_child(db: Path, port: int) -> subprocess.Popen:
    code = CHILD.format(tests=str(HERE.parent), batch=BATCH)
    return subprocess.Popen([sys.executable, "-c", code, str(db), str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.timeout(150)
def test_fault_soak_with_sigkills_loses_nobody(tmp_path):
    db = tmp_path / "news.db"
    emails = add_subscribers(db, N)
    faults = Faults(seed=20261129)
    rng = random.Random(8)
    in_flight: list[set[str]] = []
    with SMTPTestServer(rcpt_replies=faults.rcpt, data_replies=faults.data, drop_after=150, drops=10**6,
                        lose_reply=faults.lose) as server:
        for _ in range(KILLS):
            proc = _run_child(db, server.port)
            try:
                before, deadline = server.count, time.monotonic() + 60
                while server.count <= before:  # kill only once this run is sending
                    assert proc.poll() is None, proc.communicate()
                    assert time.monotonic() < deadline, "the sender never got going"
                    time.sleep(0.005)
                time.sleep(rng.uniform(0.0, 0.25))
                proc.send_signal(signal.SIGKILL)
                proc.communicate(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            left = {r[0] for r in _ledger(db, "SELECT email FROM ledger WHERE state='sending'")}
            assert len(left) <= BATCH, "a kill leaves at most the one batch in flight"
            in_flight.append(left)
        proc = _run_child(db, server.port)
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr[-2000:]
        report = json.loads(next(x for x in stdout.splitlines() if x.startswith("REPORT "))[7:])
        received = collections.Counter(server.recipients())

    assert faults.seen["421"] and faults.seen["451-rcpt"] and faults.seen["451-data"] and faults.seen["lost-250"]
    assert server.connections > KILLS + 5  # drops and kills opened fresh connections
    # Nobody is lost.
    assert set(received) == set(emails)
    # A second copy only where the ledger reports one as possible.
    resent = dict(_ledger(db, "SELECT email, uncertain_resends FROM ledger"))
    killed = collections.Counter(e for s in in_flight for e in s)
    for e, n in received.items():
        assert n <= 1 + killed[e] + resent[e], (e, n, killed[e], resent[e])
    assert sum(received.values()) - N <= KILLS * BATCH + sum(resent.values())
    # Done only because every row is final.
    states = collections.Counter(dict(_ledger(db, "SELECT state, COUNT(*) FROM ledger GROUP BY state")))
    assert report["state"] == "done" and report["pending"] == 0
    assert set(states) <= {"sent", "uncertain"} and sum(states.values()) == N
