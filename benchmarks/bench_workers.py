"""Several `newsletter worker` processes on one delivery, on PostgreSQL, against a relay that
takes 20 ms per message: does adding a worker add throughput?

    .venv/bin/python benchmarks/bench_workers.py [--readers N] [--rounds R] [--delay S]

A throwaway PostgreSQL cluster on loopback (tests/pg_cluster.py) holds a publication made
by ``newsletter init`` with N generated readers and its first issue scheduled far ahead.
A loopback SMTP relay (benchmarks/_relay.py) accepts each message ``--delay`` seconds after
its final dot, on as many connections as come. Each trial copies that database, starts
1, 2 or 3 ``newsletter worker --poll 1`` processes (one SMTP connection each, the default),
waits until they poll, then makes the delivery due (its ``send_at`` set to now) and waits for
``done``. A trial's throughput is the messages the relay accepted over the time from the
delivery falling due to its last message (the first worker's pick-up included); the trials
of 1, 2 and 3 workers run side by side in each round, alternating their order. Printed: the
medians and the median of the rounds' ratios, 2 vs 1 and 3 vs 1 (target: 3 workers >= 2.5x one).
Every trial must end ``done`` with each active reader ``sent`` once and as many messages at the relay.
"""

from __future__ import annotations

import argparse
import os
import datetime as dt
import signal
import subprocess
import sys
import time
from pathlib import Path

from _common import NEWSLETTER, initialised_publication, interleaved, median, median_ratio, process_env, seed_subscribers
from _pg import cluster, create_database, drop_database, sql
from _relay import Relay

SECRET = "bench-secret-key-0123456789abcdef"
TARGET = 2.5
FAR = "2030-01-01T00:00:00+00:00"
TRIAL_TIMEOUT_S = 300
CPU_MS: dict[int, list[float]] = {1: [], 2: [], 3: []}  # the workers' CPU per message, whole processes
#: per trial: the whole delivery's messages per second, from falling due to its last message
WHOLE: dict[int, list[float]] = {1: [], 2: [], 3: []}
#: per trial: seconds from the delivery falling due to the last worker's first message
JOINED: dict[int, list[float]] = {1: [], 2: [], 3: []}
#: per trial: sessions waiting for the ledger's advisory lock, and inside a transaction (mean over samples)
LOCK: dict[int, list[tuple[float, float]]] = {1: [], 2: [], 3: []}


def environ(url: str, port: int = 0) -> dict[str, str]:
    """The workers' settings (scheduling takes the same: the content hash covers them)."""
    return process_env({"NEWSLETTER_DB": url, "NEWSLETTER_SECRET_KEY": SECRET, "NEWSLETTER_TRANSPORT": "smtp",
                        "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "SMTP_SECURITY": "none",
                        "SMTP_HELO_NAME": "bench.local", "NEWSLETTER_BASE_URL": "https://news.example"})


def prepare(root: Path, url: str, readers: int) -> None:
    """Seed the readers and schedule issue 1 far ahead (a trial makes it due)."""
    issue = root / "issues" / "001-hello-world.md"
    issue.write_text(issue.read_text(encoding="utf-8").replace("status: draft", "status: ready"), encoding="utf-8")
    seed_subscribers(url, readers)
    subprocess.run([NEWSLETTER, "--root", str(root), "schedule", "1", "--at", FAR, "--skip-checks"],
                   env=environ(url), check=True,
                   capture_output=True, timeout=120)


def _stop(procs: list[subprocess.Popen]) -> float:
    """SIGTERM the workers and wait for them; their CPU seconds (user + system) in all."""
    cpu = 0.0
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        if p.returncode is not None:
            continue
        deadline = time.monotonic() + 30
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                p.returncode = os.waitstatus_to_exitcode(status)
                cpu += usage.ru_utime + usage.ru_stime
                break
            if time.monotonic() > deadline:
                p.kill()
            time.sleep(0.05)
    return cpu


def _wait_done(url: str, workers: int) -> None:
    """Poll until the delivery is done, sampling the workers' database sessions meanwhile: how often
    one waits for the ledger's advisory lock, and how often one is inside a transaction (holding it
    or about to)."""
    import psycopg

    deadline = time.monotonic() + TRIAL_TIMEOUT_S
    samples = waiting = inside = 0
    with psycopg.connect(url, autocommit=True) as mon:
        while mon.execute("SELECT state FROM deliveries").fetchone()[0] != "done":
            if time.monotonic() > deadline:
                raise SystemExit(f"{workers} workers did not finish within {TRIAL_TIMEOUT_S} s")
            w, t = mon.execute("SELECT COUNT(*) FILTER (WHERE wait_event='advisory'), COUNT(*) FILTER (WHERE state "
                               "LIKE 'idle in transaction%%' OR (state='active' AND query<>'COMMIT')) FROM "
                               "pg_stat_activity WHERE datname=current_database() AND pid<>pg_backend_pid()").fetchone()
            samples, waiting, inside = samples + 1, waiting + w, inside + t
            time.sleep(0.05)
    LOCK[workers].append((waiting / max(1, samples), inside / max(1, samples)))


def trial(c, root: Path, relay: Relay, workers: int, readers: int, n: list[int]) -> float:
    """One delivery by ``workers`` worker processes; returns messages per second while all of them
    were sending (the whole delivery's rate, due to last message, goes to WHOLE)."""
    n[0] += 1
    name = f"trial{n[0]}"
    url = create_database(c, name, template="seed")
    env = environ(url, relay.port)
    procs = [subprocess.Popen([NEWSLETTER, "--root", str(root), "worker", "--poll", "1", "--verbose"], env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(workers)]
    try:
        for p in procs:  # each has looked once: started, connected, polling
            assert p.stdout is not None
            while "Checking for due sends" not in (line := p.stdout.readline()):
                if not line:
                    raise SystemExit(f"a worker exited: {p.wait()}")
        relay.stats()  # reset
        due = time.time()
        stamp = dt.datetime.fromtimestamp(due, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        sql(url, "UPDATE deliveries SET send_at=%s", (stamp,))
        _wait_done(url, workers)
        got, _, last = relay.stats()
    finally:
        cpu = _stop(procs)
    states = dict(sql(url, "SELECT state, COUNT(*) FROM ledger GROUP BY state"))
    drop_database(c, name)
    if states != {"sent": readers} or got != readers:
        raise SystemExit(f"{workers} workers: ledger {states}, relay accepted {got}; expected {readers} sent once")
    CPU_MS[workers].append(cpu * 1000 / max(1, got))
    start, end, within = relay.together
    JOINED[workers].append(start - due)
    WHOLE[workers].append(got / (last - due))
    if end - start < 1 or within < 20 * workers:
        raise SystemExit(f"{workers} workers sent together for only {end - start:.1f} s: use more readers")
    return (within - 1) / (end - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--readers", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--delay", type=float, default=0.02)
    args = parser.parse_args(argv)
    relay = Relay(args.delay)
    counter = [0]
    try:
        with cluster() as c, initialised_publication("nl-bench-workers-") as (_, root):
            seed = create_database(c, "seed")
            prepare(root, seed, args.readers)
            runs = interleaved(args.rounds, {f"{k} workers": (lambda k=k: trial(c, root, relay, k, args.readers, counter))
                                             for k in (1, 2, 3)})
    finally:
        relay.stop()
    one = runs["1 workers"]
    print(f"{args.readers:,} readers, relay {args.delay * 1000:.0f} ms per message, one SMTP connection per worker, "
          f"{args.rounds} interleaved rounds (medians)")
    for k in (1, 2, 3):
        rates = runs[f"{k} workers"]
        print(f"  {k} worker{'s' if k > 1 else ' '}: {median(rates):6.1f} msg/s while all send (rounds: "
              + " ".join(f"{r:.1f}" for r in rates) + f"), {median(WHOLE[k]):6.1f} msg/s due to last message; "
              f"last worker's first message {median(JOINED[k]):.2f} s after due; workers' CPU "
              f"{median(CPU_MS[k]):.1f} ms/message; sessions waiting for the ledger lock "
              f"{median(w for w, _ in LOCK[k]):.2f}, in a transaction {median(t for _, t in LOCK[k]):.2f} (mean)")
    two, three = median_ratio(runs["2 workers"], one), median_ratio(runs["3 workers"], one)
    print(f"workers, whole delivery (due to last message): 2 vs 1: {median_ratio(WHOLE[2], WHOLE[1]):.2f}x, "
          f"3 vs 1: {median_ratio(WHOLE[3], WHOLE[1]):.2f}x")
    print(f"workers, while all send: 2 vs 1: {two:.2f}x")
    print(f"workers, while all send: 3 vs 1: {three:.2f}x (target >= {TARGET}x): {'OK' if three >= TARGET else 'FAIL'}")
    return 0 if three >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
