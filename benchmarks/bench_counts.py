"""`subscribers count` and `status` at 10k and at 1M readers: neither may grow with the list.

    .venv/bin/python benchmarks/bench_counts.py [--rounds R] [--small N] [--large N]

Two publications made by ``newsletter init``, one with 10,000 readers and one with
1,000,000 (every 50th unsubscribed, one delivery to all of them, half sent), each command
run as a fresh process, the two sizes interleaved. Prints medians and the median of the
pairs' ratios (large ÷ small); target <= 1.5x for both commands.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import NEWSLETTER, initialised_publication, interleaved, median, median_ratio, process_env, run_process, seed_subscribers

TARGET = 1.5


def add_delivery(db: Path | str) -> None:
    """One delivery to every active reader, half of them sent, so `status` has a big row to count.
    ``db`` is a SQLite path or a ``postgresql://`` URL: the SQL means the same on both."""
    from newsletter.schema import open_database

    conn = open_database(db)
    conn.execute("BEGIN")
    conn.execute("INSERT INTO deliveries(id, slug, issue_number, content_hash, subject, state, created_at, started_at,"
                 " total) VALUES(1, 'hello-world', 1, 'x', 'Hello', 'paused', '2025-01-01T00:00:00.000000Z',"
                 " '2025-01-01T00:00:00.000000Z', (SELECT COUNT(*) FROM subscribers WHERE status='active'))")
    conn.execute("INSERT INTO ledger(delivery_id, subscriber_id, email, name, state, attempts, batch_no, updated_at)"
                 " SELECT 1, id, email, name, CASE WHEN id % 2 = 1 THEN 'sent' ELSE 'pending' END, 1, id / 100,"
                 " '2025-01-01T00:05:00.000000Z' FROM subscribers WHERE status='active'")
    conn.execute("COMMIT")
    conn.close()


def measure(rounds: int, sizes: tuple[int, int]) -> dict[str, float]:
    """Ratio (large ÷ small) of each command's median-of-pairs wall time; prints the detail."""
    with initialised_publication("nl-bench-counts-s-") as (_, small), \
            initialised_publication("nl-bench-counts-l-") as (_, large):
        for root, n in zip((small, large), sizes):
            seed_subscribers(root / "newsletter.db", n, unsubscribe_every=50)
            add_delivery(root / "newsletter.db")
        env = process_env({"NEWSLETTER_TRANSPORT": "dryrun"})
        commands = {f"{cmd} {label}": [NEWSLETTER, "--root", str(root), *cmd.split()]
                    for cmd in ("status", "subscribers count") for label, root in (("small", small), ("large", large))}
        for cmd in commands.values():
            run_process(cmd, env=env)  # bytecode, page cache
        runs = interleaved(max(1, rounds), {name: (lambda cmd=cmd: run_process(cmd, env=env))
                                            for name, cmd in commands.items()})
    ratios = {}
    print(f"whole processes, {sizes[0]:,} vs {sizes[1]:,} readers, medians of {rounds} interleaved rounds")
    for cmd in ("status", "subscribers count"):
        s, l = [r.wall for r in runs[f"{cmd} small"]], [r.wall for r in runs[f"{cmd} large"]]
        ratios[cmd] = median_ratio(l, s)
        print(f"  newsletter {cmd:<18} {median(s) * 1000:7.1f} ms at {sizes[0]:,}  {median(l) * 1000:7.1f} ms at "
              f"{sizes[1]:,}  {ratios[cmd]:.2f}x (target <= {TARGET}x)")
    return ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    ratios = measure(args.rounds, (args.small, args.large))
    ok = all(r <= TARGET for r in ratios.values())
    print(f"count and status, {args.large:,} vs {args.small:,}: {'OK' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
