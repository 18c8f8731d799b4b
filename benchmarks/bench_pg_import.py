"""`newsletter subscribers import` of 100k rows on PostgreSQL against the same on SQLite.

    .venv/bin/python benchmarks/bench_pg_import.py [--rows N] [--rounds R]

One generated CSV (bench_import's: ``email,name``, 200 domains, 1 % invalid rows) is imported
by the whole ``newsletter subscribers import`` process, exec to exit, into an empty database:
a fresh SQLite file in a publication made by ``newsletter init``, or a fresh database on a
throwaway loopback PostgreSQL cluster (tests/pg_cluster.py; ``NEWSLETTER_DB=postgresql://…``).
The two run in interleaved rounds; printed are the medians and the median of the pairs'
ratios, PostgreSQL's rows/s over SQLite's (no target: what moving to PostgreSQL costs an import).
Both must end with the same number of subscribers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import NEWSLETTER, initialised_publication, interleaved, median, median_ratio, process_env, run_process
from _pg import cluster, create_database, drop_database, sql
from bench_import import make_csv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    added: dict[str, set[int]] = {"sqlite": set(), "postgresql": set()}
    cpu: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    with cluster() as c, initialised_publication("nl-bench-pgimport-") as (tmp, root):
        csv_path = tmp / "readers.csv"
        make_csv(csv_path, args.rows)
        cmd = [NEWSLETTER, "--root", str(root), "subscribers", "import", str(csv_path)]

        def sqlite() -> float:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{root / 'newsletter.db'}{suffix}").unlink(missing_ok=True)
            run = run_process(cmd, env=process_env({"NEWSLETTER_DB": str(root / "newsletter.db")}))
            added["sqlite"].add(_count_sqlite(root / "newsletter.db"))
            cpu["sqlite"].append(run.cpu)
            return run.wall

        def postgresql() -> float:
            url = create_database(c, "import")
            run = run_process(cmd, env=process_env({"NEWSLETTER_DB": url}))
            added["postgresql"].add(sql(url, "SELECT COUNT(*) FROM subscribers")[0][0])
            drop_database(c, "import")
            cpu["postgresql"].append(run.cpu)
            return run.wall

        runs = interleaved(args.rounds, {"sqlite": sqlite, "postgresql": postgresql})
    if len(added["sqlite"] | added["postgresql"]) != 1:
        raise SystemExit(f"the backends imported different counts: {added}")
    n = args.rows
    s, p = runs["sqlite"], runs["postgresql"]
    print(f"whole `newsletter subscribers import`, {n:,} rows ({added['sqlite'].pop():,} added), "
          f"{args.rounds} interleaved rounds (medians)")
    print(f"  SQLite:     {n / median(s):8,.0f} rows/s  ({median(s):.2f} s, CPU {median(cpu['sqlite']):.2f} s)")
    print(f"  PostgreSQL: {n / median(p):8,.0f} rows/s  ({median(p):.2f} s, CPU {median(cpu['postgresql']):.2f} s "
          "of the client alone)")
    print(f"import PostgreSQL/SQLite rows/s (median of pairs): {median_ratio(s, p):.2f}x  (no target)  "
          f"pairs: {' '.join(f'{a / b:.2f}' for a, b in zip(s, p))}")
    return 0


def _count_sqlite(db: Path) -> int:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT COUNT(*) FROM subscribers").fetchone()[0]
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
