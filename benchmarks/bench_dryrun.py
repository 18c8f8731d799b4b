"""Dry run: peak memory of the whole `newsletter send --dry-run` process, 100k readers vs 10k.

    .venv/bin/python benchmarks/bench_dryrun.py [--readers N] [--small N] [--rounds R]

A publication made by ``newsletter init`` (its first issue, ~16 KB per message; its
sample postal address fails the pre-flight checks, hence ``--skip-checks``)
and SQLite databases of N and ``--small`` active readers; each run writes every
reader's .eml and ``summary.json`` (with every recipient) into a fresh outbox.
Peak RSS comes from ``wait4`` on the process alone; runs are interleaved, medians
reported. Target: N readers <= 1.05x the memory of ``--small`` readers (the
recipient list streams to disk; nothing per reader stays in memory).
"""

from __future__ import annotations

import argparse
import shutil
import sys

from _common import NEWSLETTER, initialised_publication, interleaved, median, process_env, run_process, seed_subscribers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--readers", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    with initialised_publication("nl-bench-dryrun-") as (tmp, root):
        for n in (args.readers, args.small):
            seed_subscribers(tmp / f"{n}.db", n)

        def dry_run(n: int) -> float:
            outbox = tmp / "outbox"
            shutil.rmtree(outbox, ignore_errors=True)
            env = process_env({"NEWSLETTER_DB": str(tmp / f"{n}.db"), "NEWSLETTER_OUTBOX": str(outbox),
                               "NEWSLETTER_TRANSPORT": "dryrun"})
            peak = run_process([NEWSLETTER, "--root", str(root), "send", "1", "--dry-run", "--skip-checks"],
                               env=env, cwd=tmp).peak_mb
            written = sum(1 for _ in next(outbox.iterdir()).glob("*.eml"))
            if written != n:
                raise SystemExit(f"dry run wrote {written} of {n} messages")
            return peak

        peaks = interleaved(args.rounds, {"big": lambda: dry_run(args.readers),
                                          "small": lambda: dry_run(args.small)})
    big, small = median(peaks["big"]), median(peaks["small"])
    ratio = big / small
    print(f"`newsletter send 1 --dry-run` peak RSS, {args.readers:,} vs {args.small:,} readers "
          f"({args.rounds} interleaved rounds, medians): {big:.1f} / {small:.1f} MB = {ratio:.3f}x  (target <= 1.05x)")
    return 0 if ratio <= 1.05 else 1


if __name__ == "__main__":
    sys.exit(main())
