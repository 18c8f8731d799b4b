"""Issue 17's soak figures: the multi-process soak on PostgreSQL three times in a row, and SIGKILLs of
a sending worker over SMTP on both backends.

    python benchmarks/bench_soak.py [--runs 3]

Each soak run (tests/soak.py): 3 `newsletter worker` processes, each as its own host, and 1 `newsletter
serve` as the least-privilege web role; 3,000 readers; an SMTP server on loopback answering one
message in ten with a 4xx and dropping connections; 10 SIGKILLs of random workers (a replacement
each time); 500 one-click unsubscribes through serve meanwhile; a 15 s lease. The crash runs
(tests/test_crash.py's scenario): a two-connection sender SIGKILLed 4 times, at random moments
and at the worst one (the server holding a message), on SQLite and on PostgreSQL.

Printed, each with its reference from the same run: readers lost, readers mailed after their
unsubscribe was answered, the most duplicates one SIGKILL caused vs the connections in flight,
and the worst takeover vs lease + 10 s. Needs PostgreSQL's server programs (tests/pg_cluster.py).
"""

from __future__ import annotations

import argparse
import collections
import secrets
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import _common  # noqa: F401  (puts the repo on sys.path)

from tests.conftest import make_publication
from tests.pg_cluster import Cluster, start_cluster
from tests.soak import SoakPlan, SoakResult, run_soak

CRASH_KILLS = 4


def fresh_database(cluster: Cluster) -> tuple[str, str]:
    """A new database migrated by its owner, and the URL of a web role on it (as serve's host has)."""
    import psycopg

    from newsletter.pg_roles import web_role_sql
    from newsletter.schema import open_database

    name = "soak_" + secrets.token_hex(4)
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        role, password = "web_" + secrets.token_hex(4), secrets.token_urlsafe(12)
        admin.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")
    owner = cluster.url(name)
    open_database(owner).close()
    with psycopg.connect(owner, autocommit=True) as conn:
        for statement in web_role_sql(role, urlsplit(owner).path.lstrip("/")):
            conn.execute(statement)
    return owner, cluster.url(name, user=role, password=password)


def crash_run(db: Path | str) -> list[int]:
    """tests/test_crash.py's SMTP scenario once: the readers each SIGKILL left in flight (received
    by the server while their row stayed 'sending'), per kill."""
    from tests.helpers import add_subscribers
    from tests.smtp_server import SMTPTestServer
    from tests.test_crash import N, Gate, crash_and_resume

    add_subscribers(db, N)
    gate, seen = Gate(), collections.Counter()
    per_kill: list[int] = []

    def on_data(address: str):
        gate.tick()
        return None

    with SMTPTestServer(data_replies=on_data, keep_data=False) as server:
        def on_kill(left: set[str]) -> None:
            time.sleep(0.3)  # what the dead sender had fully written is accepted
            now = collections.Counter(r for r, _ in server.arrivals)
            per_kill.append(sum(1 for e in left if now[e] > seen[e]))
            seen.update(now - seen)

        crash_and_resume("smtp", db, server.port, gate, lambda: server.count, kills=CRASH_KILLS, seed=int(time.time()),
                         on_kill=on_kill)
        copies = len(server.arrivals)
    if copies - N > sum(per_kill):
        raise SystemExit(f"crash run: {copies - N} duplicates, more than the {sum(per_kill)} in flight at the kills")
    return per_kill


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from tests.test_crash import CONNECTIONS

    plan = SoakPlan()
    connections = CONNECTIONS["smtp"]
    assert plan.concurrency == connections, "the soak and the crash runs compare against the same connections"
    cluster = start_cluster()
    results: list[SoakResult] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
            for i in range(1, args.runs + 1):
                owner, web = fresh_database(cluster)
                root = make_publication(Path(tmp) / f"pub{i}")
                result = run_soak(root, owner, web, Path(tmp) / f"logs{i}", plan)
                results.append(result)
                print("\n".join(f"run {i}: {line}" for line in result.lines()), flush=True)
                for problem in result.problems():
                    print(f"run {i}: PROBLEM {problem}", flush=True)
            crash = {"sqlite": crash_run(Path(tmp) / "crash.db"), "postgresql": crash_run(fresh_database(cluster)[0])}
    finally:
        cluster.stop()
    print()
    lost = [len(r.lost) for r in results]
    late = [len(r.mailed_after) for r in results]
    print(f"soak readers lost ({len(results)} runs): {sum(lost)} (per run {lost})")
    print(f"soak readers mailed after their unsubscribe was answered ({len(results)} runs): {sum(late)} (per run {late})")
    soak_max = max((max(r.per_kill, default=0) for r in results), default=0)
    for name, per_kill in crash.items():
        worst = max(per_kill + ([soak_max] if name == "postgresql" else []))
        print(f"duplicates per SIGKILL, {name}: max {worst} vs {connections} connections in flight, ratio "
              f"{worst / connections:.2f}x (crash runs {per_kill}" + (f"; soak runs max {soak_max})" if name ==
                                                                       "postgresql" else ")"))
    takeovers = [t for r in results for t in r.takeovers]
    limit = plan.lease + 10
    worst = max(takeovers, default=0.0)
    print(f"takeover of a dead worker's readers: worst {worst:.1f} s vs lease + 10 = {limit} s, ratio {worst / limit:.2f}x "
          f"({len(takeovers)} kills; median {sorted(takeovers)[len(takeovers) // 2] if takeovers else 0:.1f} s)")
    print(f"status done: {sum(r.done for r in results)} of {len(results)} runs")
    return 0 if all(not r.problems() for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
