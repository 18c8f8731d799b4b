"""`status` and `subscribers count` at 10k and at 1M ledger rows, on PostgreSQL and on SQLite.

    .venv/bin/python benchmarks/bench_pg_counts.py [--rounds R] [--small N] [--large N]

For each backend, two databases: one with 10,000 readers and one with 1,000,000 (every 50th
unsubscribed), each with one delivery to every active reader, half of them sent, so the ledger
has as many rows. The rows are made in SQL (``generate_series`` on PostgreSQL, a recursive CTE
on SQLite), not through the engine; PostgreSQL's are then vacuumed, analysed and checkpointed.
PostgreSQL runs on a throwaway loopback cluster (tests/pg_cluster.py), selected by
``NEWSLETTER_DB=postgresql://…``.
Each command runs as a fresh process, all eight (2 commands x 2 sizes x 2 backends) interleaved.
Printed per backend and command: medians, and the median of the pairs' ratios (large / small);
target <= 1.5x on PostgreSQL (SQLite's printed beside it for comparison, bench_counts holds its target).
"""

from __future__ import annotations

import argparse
import sys

from _common import NEWSLETTER, initialised_publication, interleaved, median, median_ratio, process_env, run_process, seed_subscribers
from _pg import cluster, create_database, sql
from bench_counts import add_delivery

TARGET = 1.5
COMMANDS = ("status", "subscribers count")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    sizes = {"small": args.small, "large": args.large}
    with cluster() as c, initialised_publication("nl-bench-pgcounts-") as (tmp, root):
        targets: dict[tuple[str, str], str] = {}
        for label, n in sizes.items():
            url = create_database(c, label)
            path = str(tmp / f"{label}.db")
            for db in (url, path):
                seed_subscribers(db, n, unsubscribe_every=50)
                add_delivery(db)
            sql(url, "VACUUM ANALYZE")
            targets[("postgresql", label)], targets[("sqlite", label)] = url, path
        sql(c.url(), "CHECKPOINT")  # the seeding's dirty pages are written now, not while a command is timed
        contestants = {}
        for (backend, label), db in targets.items():
            env = process_env({"NEWSLETTER_TRANSPORT": "dryrun", "NEWSLETTER_DB": db})
            for cmd in COMMANDS:
                argv_ = [NEWSLETTER, "--root", str(root), *cmd.split()]
                run_process(argv_, env=env)  # bytecode, page cache
                contestants[f"{backend} {cmd} {label}"] = (lambda a=argv_, e=env: run_process(a, env=e).wall)
        runs = interleaved(max(1, args.rounds), contestants)
    ok = True
    print(f"whole processes, {args.small:,} vs {args.large:,} readers (as many ledger rows), medians of "
          f"{args.rounds} interleaved rounds")
    for backend in ("postgresql", "sqlite"):
        for cmd in COMMANDS:
            s, l = runs[f"{backend} {cmd} small"], runs[f"{backend} {cmd} large"]
            ratio = median_ratio(l, s)
            verdict = ""
            if backend == "postgresql":
                ok &= ratio <= TARGET
                verdict = f" (target <= {TARGET}x): {'OK' if ratio <= TARGET else 'FAIL'}"
            print(f"  {backend:<10} newsletter {cmd:<18} {median(s) * 1000:7.1f} ms at {args.small:,}  "
                  f"{median(l) * 1000:7.1f} ms at {args.large:,}  {ratio:.2f}x{verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
