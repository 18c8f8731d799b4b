"""The multi-process soak of issue 17, shared by tests/test_soak_hosts.py (CI) and
benchmarks/bench_soak.py (three runs in a row, the figures of the Targets table).

Three ``newsletter worker`` processes and one ``newsletter serve`` (as the least-privilege web
role) share one PostgreSQL database. Each worker runs in its own UTS namespace with a host name of
its own where the machine allows it (root): a dead worker's pid cannot be looked up from another
"host", so its delivery is taken over only when its lease has run out, as across machines. An
SMTP server on loopback answers about one message in ten with a 4xx and drops a connection now
and then. Random workers are SIGKILLed (a replacement started each time, as systemd's
``Restart=`` would), and readers unsubscribe with one click through ``serve`` meanwhile, half of
them readers about to be sent (the worst moment), half anyone.

What is measured (:class:`SoakResult`):

* readers lost: neither received nor skipped as unsubscribed, or not final;
* readers mailed after their unsubscribe was answered: the SMTP server's receipt time of any
  message to them is later than the moment `serve`'s answer reached the client;
* duplicates per kill: a reader's second copy is charged to the kill that came while the first
  was in flight (received at most 1 s after the kill, at most 5 s before it); one that no kill
  explains is reported as unexplained;
* takeover: from a kill until every reader that was ``sending`` at that moment has been taken
  over and answered again (or finished), against lease + 10 s.

Everything is bounded: a time limit for the whole run, bounded loops, loopback only.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import requests

from newsletter.db import connect
from newsletter.tokens import make_token
from tests.helpers import BASE_ENV, run
from tests.smtp_server import SMTPTestServer

BASE_URL = "https://chinaffairs.example"
IN_FLIGHT_BEFORE, IN_FLIGHT_AFTER = 5.0, 1.0  # a first copy this close to a kill was in flight at it
TEMP_FAIL = "451 4.3.0 soak: try again later"


@dataclass(frozen=True)
class SoakPlan:
    """The issue's spec by default; tests may shrink it."""

    readers: int = 3000
    workers: int = 3
    kills: int = 10
    unsubscribes: int = 500
    lease: int = 15             # NEWSLETTER_LEASE_SECONDS: the shortest the engine accepts
    rate: int = 25              # messages per second, per worker
    batch: int = 10
    concurrency: int = 2        # SMTP connections per worker: the most a kill may leave in flight
    temp_fail: float = 0.10     # share of messages answered 4xx
    drop_after: int = 120       # messages on one connection before the server drops it …
    drops: int = 40             # … this many times in the run
    seed: int = 17
    time_limit: float = 240.0


@dataclass
class SoakResult:
    plan: SoakPlan
    elapsed: float = 0.0
    separate_hosts: bool = False
    kills: int = 0
    lost: list[str] = field(default_factory=list)
    mailed_after: list[tuple[str, float]] = field(default_factory=list)  # (reader, s after the answer)
    per_kill: list[int] = field(default_factory=list)                     # extra copies charged to each kill
    unexplained: list[str] = field(default_factory=list)                  # duplicates no kill explains
    takeovers: list[float] = field(default_factory=list)                  # s from each kill
    answered: int = 0
    answered_before_done: int = 0
    skipped: int = 0
    sent_then_skipped: int = 0  # got their copy at a kill, unsubscribed before it was sent again
    four_xx: int = 0
    states: dict[str, int] = field(default_factory=dict)
    status: str = ""
    done: bool = False

    def problems(self) -> list[str]:
        """What breaks the issue's promises (empty: the run met them)."""
        p = self.plan
        out = []
        if self.lost:
            out.append(f"{len(self.lost)} readers lost: {self.lost[:5]}")
        if self.mailed_after:
            out.append(f"{len(self.mailed_after)} readers mailed after their unsubscribe was answered: "
                       f"{self.mailed_after[:5]}")
        if self.unexplained:
            out.append(f"{len(self.unexplained)} duplicates no kill explains: {self.unexplained[:5]}")
        if self.per_kill and max(self.per_kill) > p.concurrency:
            out.append(f"duplicates per kill {self.per_kill} > {p.concurrency} connections in flight")
        if self.kills != p.kills:
            out.append(f"{self.kills} kills, not {p.kills}")
        if len(self.takeovers) != self.kills or any(t > p.lease + 10 for t in self.takeovers):
            out.append(f"takeovers {[round(t, 1) for t in self.takeovers]} s (limit lease + 10 = {p.lease + 10} s)")
        if not self.done:
            out.append(f"status does not say done: {self.status[-400:]}")
        return out

    def lines(self) -> list[str]:
        """The figures, in the lines benchmarks/run_all.py reads."""
        p = self.plan
        worst = max(self.takeovers, default=0.0)
        return [
            f"soak: {p.readers:,} readers, {p.workers} workers x {p.concurrency} connections, {self.kills} SIGKILLs, "
            f"{self.answered} one-click unsubscribes ({self.answered_before_done} before done), lease {p.lease} s, "
            f"{'one host name per worker' if self.separate_hosts else 'one host name'}, {self.elapsed:.0f} s",
            f"soak: ledger {dict(sorted(self.states.items()))}, {self.four_xx} answered 4xx, "
            f"{self.sent_then_skipped} skipped after their copy went out at a kill",
            f"soak readers lost: {len(self.lost)}",
            f"soak readers mailed after their unsubscribe was answered: {len(self.mailed_after)}",
            f"soak duplicates per SIGKILL: max {max(self.per_kill, default=0)} vs {p.concurrency} connections in "
            f"flight (per kill {self.per_kill}; unexplained {len(self.unexplained)})",
            f"soak takeover: worst {worst:.1f} s vs lease + 10 = {p.lease + 10} s "
            f"(each: {', '.join(f'{t:.1f}' for t in self.takeovers)})",
            f"soak status done: {'yes' if self.done else 'no'}",
        ]


# ---------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------
def separate_hosts_possible() -> bool:
    """Can each worker get a host name of its own (a UTS namespace: root, or a user namespace)?"""
    try:
        return subprocess.run(["unshare", "--uts", "--", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Fleet:
    """The soak's processes: each one's stderr in a log file, every one stopped at the end."""

    def __init__(self, root: Path, logs: Path, separate_hosts: bool):
        self.root, self.logs, self.separate_hosts = root, logs, separate_hosts
        self.procs: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []
        self.started = 0

    def spawn(self, env: dict[str, str], *args: str, host: str | None = None) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "newsletter", "--root", str(self.root), *args]
        if host and self.separate_hosts:  # unshare and sh exec: the pid is the worker's own
            cmd = ["unshare", "--uts", "--", "sh", "-c", 'hostname "$0" && exec "$@"', host, *cmd]
        self.started += 1
        log = open(self.logs / f"{self.started:02d}-{args[0]}-{host or 'web'}.log", "wb")
        proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(proc)
        return proc

    def worker(self, env: dict[str, str]) -> subprocess.Popen:
        proc = self.spawn(env, "worker", "--poll", "0.5", host=f"soak-w{self.started + 1}")
        self.workers.append(proc)
        return proc

    def live_workers(self) -> list[subprocess.Popen]:
        return [p for p in self.workers if p.poll() is None]

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)

    def tails(self) -> str:
        return "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-1500:]}" for f in sorted(self.logs.iterdir()))


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("serve did not start listening")


# ---------------------------------------------------------------------------------------
# The database, as the test's observer (the owner's role)
# ---------------------------------------------------------------------------------------
class Observer:
    def __init__(self, url: str):
        self.conn = connect(url)

    def close(self) -> None:
        self.conn.close()

    def delivery(self) -> tuple[int | None, str, bool, int]:
        """(id, state, list frozen, readers finished) of the newest delivery."""
        row = self.conn.execute("SELECT id, state, frozen_at FROM deliveries ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return None, "", False, 0
        done = self.conn.execute("SELECT COUNT(*) FROM ledger WHERE delivery_id=? AND state IN ('sent','skipped')",
                                 (row[0],)).fetchone()[0]
        return row[0], row[1], row[2] is not None, done

    def sending(self, did: int) -> set[int]:
        return {r[0] for r in self.conn.execute("SELECT subscriber_id FROM ledger WHERE delivery_id=? AND "
                                                "state='sending'", (did,))}

    def still_waiting(self, did: int, sids: set[int]) -> int:
        """Of ``sids``, how many are still in flight or waiting to be sent again after an interruption."""
        if not sids:
            return 0
        rows = self.conn.execute("SELECT subscriber_id, state, last_error FROM ledger WHERE delivery_id=? AND "
                                 "state IN ('sending','retry')", (did,)).fetchall()
        return sum(1 for sid, state, error in rows if sid in sids and
                   (state == "sending" or (error or "").startswith("interrupted")))

    def frontier(self, did: int, n: int = 40) -> list[tuple[int, str]]:
        """Readers about to be sent: those in flight, then the next pending ones."""
        return [tuple(r) for r in self.conn.execute(
            "SELECT subscriber_id, email FROM ledger WHERE delivery_id=? AND state IN ('sending','pending','retry') "
            "ORDER BY CASE state WHEN 'sending' THEN 0 ELSE 1 END, subscriber_id LIMIT ?", (did, n))]


# ---------------------------------------------------------------------------------------
# Unsubscribes through serve, in a thread
# ---------------------------------------------------------------------------------------
class Unsubscriber(threading.Thread):
    """One-click unsubscribes through `serve`, each answer's wall time recorded as it reaches us."""

    def __init__(self, url: str, db: str, ids: dict[str, int], plan: SoakPlan, rng: random.Random,
                 deadline: float):
        super().__init__(daemon=True, name="soak-unsubscribes")
        self.url, self.db, self.ids, self.plan, self.rng, self.deadline = url, db, ids, plan, rng, deadline
        self.answered: dict[str, float] = {}
        self.refused: list[tuple[str, int]] = []
        self.go = threading.Event()
        self.halt = threading.Event()
        self.interval = 0.05

    def run(self) -> None:
        if not self.go.wait(max(0.0, self.deadline - time.monotonic())):
            return
        obs, session = Observer(self.db), requests.Session()
        try:
            did = obs.delivery()[0]
            near: list[tuple[int, str]] = []
            refreshed = 0.0
            everyone = sorted(self.ids.items(), key=lambda kv: kv[1])
            for i in range(self.plan.unsubscribes * 2):  # bounded: at most twice the attempts wanted
                if self.halt.is_set() or len(self.answered) >= self.plan.unsubscribes \
                        or time.monotonic() > self.deadline:
                    return
                if time.monotonic() - refreshed > 0.3:
                    near, refreshed = obs.frontier(did), time.monotonic()
                pool = [(s, e) for s, e in near if e not in self.answered] if i % 2 == 0 else []
                sid, email = self.rng.choice(pool) if pool else self._anyone(everyone)
                token = make_token(BASE_ENV["NEWSLETTER_SECRET_KEY"], sid, email)
                reply = session.post(f"{self.url}/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"},
                                     timeout=30)
                if reply.status_code == 200:
                    self.answered.setdefault(email, time.time())
                else:
                    self.refused.append((email, reply.status_code))
                time.sleep(self.interval)
        finally:
            session.close()
            obs.close()

    def _anyone(self, everyone: list[tuple[str, int]]) -> tuple[int, str]:
        for _ in range(50):
            email, sid = self.rng.choice(everyone)
            if email not in self.answered:
                return sid, email
        email, sid = everyone[0]
        return sid, email


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------
def _import_readers(root: Path, owner_url: str, n: int) -> dict[str, int]:
    csv = root / "soak-readers.csv"
    csv.write_text("email,name\n" + "".join(f"r{i:05d}@example.org,Reader {i}\n" for i in range(n)))
    result = run(root, "subscribers", "import", str(csv), env={"NEWSLETTER_DB": owner_url,
                                                                "NEWSLETTER_BASE_URL": BASE_URL})
    if result.exit_code != 0:
        raise RuntimeError(f"import failed: {result.output}")
    with closing(connect(owner_url)) as conn:
        return dict(conn.execute("SELECT email, id FROM subscribers"))


def run_soak(root: Path, owner_url: str, web_url: str, logs: Path, plan: SoakPlan = SoakPlan()) -> SoakResult:
    """Run the soak once on a fresh database (``owner_url``, and ``web_url`` its web role)."""
    logs.mkdir(parents=True, exist_ok=True)
    result = SoakResult(plan, separate_hosts=separate_hosts_possible())
    ids = _import_readers(root, owner_url, plan.readers)
    rng = random.Random(plan.seed)
    answers = random.Random(plan.seed + 1)
    four_xx = [0]

    def data_reply(address: str) -> str | None:  # runs in the server's one thread
        if answers.random() < plan.temp_fail:
            four_xx[0] += 1
            return TEMP_FAIL
        return None

    fleet = Fleet(root, logs, result.separate_hosts)
    started = time.monotonic()
    with SMTPTestServer(data_replies=data_reply, drop_after=plan.drop_after, drops=plan.drops,
                        keep_data=False) as server:
        env = {**BASE_ENV, **server.env(), "NEWSLETTER_DB": owner_url, "NEWSLETTER_BASE_URL": BASE_URL,
               "NEWSLETTER_LEASE_SECONDS": str(plan.lease), "NEWSLETTER_RATE": str(plan.rate),
               "NEWSLETTER_BATCH_SIZE": str(plan.batch), "NEWSLETTER_CONCURRENCY": str(plan.concurrency)}
        at = (datetime.now(timezone.utc) + timedelta(seconds=2)).isoformat()
        added = run(root, "schedule", "add", "6", "--at", at, "--skip-checks", env=env)
        if added.exit_code != 0:
            raise RuntimeError(f"schedule failed: {added.output}")
        port = free_port()
        web = fleet.spawn({**BASE_ENV, "NEWSLETTER_DB": web_url, "NEWSLETTER_BASE_URL": BASE_URL},
                          "serve", "--port", str(port))
        try:
            wait_for_port(port, web)
            for _ in range(plan.workers):
                fleet.worker(env)
            unsub = Unsubscriber(f"http://127.0.0.1:{port}", owner_url, ids, plan, random.Random(plan.seed + 2),
                                 started + plan.time_limit)
            unsub.start()
            kill_times = _drive(owner_url, fleet, env, plan, rng, unsub, result, started)
            result.answered_before_done = len(unsub.answered)
            unsub.join(max(1.0, started + plan.time_limit - time.monotonic()))  # the rest of the 500
            unsub.halt.set()
            unsub.join(30)
        except BaseException:
            fleet.stop()
            print(fleet.tails(), file=sys.stderr)
            raise
        fleet.stop()
        arrivals = list(server.arrivals)
    result.elapsed = time.monotonic() - started
    result.four_xx = four_xx[0]
    result.answered = len(unsub.answered)
    _judge(owner_url, result, arrivals, unsub.answered, kill_times)
    status = run(root, "status", env=env)
    result.status = status.output
    result.done = status.exit_code == 0 and "done" in status.output
    if result.problems():
        print(fleet.tails(), file=sys.stderr)
    return result


def _drive(db: str, fleet: Fleet, env: dict[str, str], plan: SoakPlan, rng: random.Random,
           unsub: Unsubscriber, result: SoakResult, started: float) -> list[float]:
    """Kill a random worker each time another tenth of the readers is finished (a replacement
    started each time), time each takeover, and wait for ``done``. Returns the kills' wall times."""
    obs = Observer(db)
    kill_times: list[float] = []
    waiting: list[tuple[float, set[int]]] = []  # (monotonic kill time, readers sending at the kill)
    try:
        while time.monotonic() < started + plan.time_limit:
            did, state, frozen, finished = obs.delivery()
            if did is not None and frozen and finished:
                unsub.go.set()
            for entry in list(waiting):
                if obs.still_waiting(did, entry[1]) == 0:
                    result.takeovers.append(time.monotonic() - entry[0])
                    waiting.remove(entry)
            if state == "done" and not waiting:
                return kill_times
            due = (result.kills + 1) * plan.readers / (plan.kills + 1)
            live = fleet.live_workers()
            if did is not None and state == "running" and result.kills < plan.kills and finished >= due and live:
                victim = rng.choice(live)
                victim.send_signal(signal.SIGKILL)
                victim.wait(10)
                kill_times.append(time.time())
                waiting.append((time.monotonic(), obs.sending(did)))
                result.kills += 1
                fleet.worker(env)  # systemd's Restart=
            time.sleep(0.2)
        raise RuntimeError(f"not done within {plan.time_limit:.0f} s: {obs.delivery()}, {result.kills} kills, "
                           f"takeovers {result.takeovers}, {len(waiting)} still waiting")
    finally:
        obs.close()


def _judge(db: str, result: SoakResult, arrivals: list[tuple[str, float]], answered: dict[str, float],
           kill_times: list[float]) -> None:
    """Compare what the SMTP server received with the ledger, the unsubscribes and the kills."""
    with closing(connect(db)) as conn:
        rows = dict(conn.execute("SELECT email, state FROM ledger"))
        statuses = dict(conn.execute("SELECT email, status FROM subscribers"))
    times: dict[str, list[float]] = collections.defaultdict(list)
    for rcpt, at in arrivals:
        times[rcpt.lower()].append(at)
    result.states = dict(collections.Counter(rows.values()))
    result.skipped = result.states.get("skipped", 0)
    for email, state in rows.items():
        got = len(times.get(email, []))
        unsubscribed = statuses.get(email) == "unsubscribed"
        if state == "skipped" and got == 1 and unsubscribed:
            result.sent_then_skipped += 1  # in flight at a kill, then unsubscribed before the resend
        elif not ((state == "sent" and got >= 1) or (state == "skipped" and got == 0 and unsubscribed)):
            result.lost.append(f"{email} {state} x{got}")
    for email, at in answered.items():
        late = [t - at for t in times.get(email, []) if t > at]
        if late:
            result.mailed_after.append((email, round(max(late), 3)))
    charged = [0] * len(kill_times)
    for email, ts in times.items():
        ts.sort()
        for extra in ts[1:]:
            k = next((i for i, kt in enumerate(kill_times)
                      if ts[0] - IN_FLIGHT_AFTER <= kt <= ts[0] + IN_FLIGHT_BEFORE), None)
            if k is None:
                result.unexplained.append(f"{email} +{extra - ts[0]:.1f}s")
            else:
                charged[k] += 1
    result.per_kill = charged
