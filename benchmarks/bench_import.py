"""Subscriber import: speed against a plain reference loop, and memory against file size.

    .venv/bin/python benchmarks/bench_import.py [--rows N] [--small N] [--rounds R]

Generated CSVs (``email,name``, 200 domains, 1 % invalid rows) are imported
into fresh SQLite databases by two child processes, in interleaved rounds:

(a) reference  ``csv.reader`` + ``email_validator.validate_email`` per row + one
               ``executemany`` INSERT, in one transaction: the plain loop anyone
               would write, with none of the import's rules (no duplicates check,
               no suppression list, no line numbers, no header aliases);
(b) ours       ``newsletter.csvio.import_csv``: all of those rules, streamed.

Each child times its own import (from opening the file to COMMIT; wall and CPU time) and its peak
RSS is taken by ``wait4``. Printed: rows/s medians and the median of the pairs'
ratios (target >= 2x), and our peak RSS at N rows against ``--small`` rows
(target <= 1.2x: memory stays flat with the file's size).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import interleaved, median, median_ratio, run_process

DOMAINS = 200


def make_csv(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("email,name\r\n")
        for i in range(n):
            local = f"reader.{i}" if i % 100 else f"bad..{i}"  # 1 % invalid: two dots in a row
            fh.write(f"{local}@Mail{i % DOMAINS}.Example.org,Reader {i}\r\n")


def reference(csv_path: str, db: str) -> None:
    import csv

    from email_validator import EmailNotValidError, validate_email

    from newsletter.store import SubscriberStore

    store = SubscriberStore.open(db)
    t, c = time.perf_counter(), time.process_time()
    rows = []
    with open(csv_path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        for email, name in reader:
            try:
                email = validate_email(email, check_deliverability=False, allow_smtputf8=False).normalized
            except EmailNotValidError:
                continue
            rows.append((email, name, "2025-01-01", "2025-01-01"))
    with store.transaction() as conn:
        conn.executemany("INSERT OR IGNORE INTO subscribers(email, name, created_at, changed_at) VALUES(?,?,?,?)",
                         rows)
    print(f"{time.perf_counter() - t:.6f} {time.process_time() - c:.6f} {store.count()}")


def ours(csv_path: str, db: str) -> None:
    from newsletter.csvio import import_csv
    from newsletter.store import SubscriberStore

    store = SubscriberStore.open(db)
    t, c = time.perf_counter(), time.process_time()
    report = import_csv(store, csv_path)
    print(f"{time.perf_counter() - t:.6f} {time.process_time() - c:.6f} {report.added} {report.error_count}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=3, metavar=("WHO", "CSV", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        {"reference": reference, "ours": ours}[args.child[0]](args.child[1], args.child[2])
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="nl-bench-import-"))
    try:
        big, small = tmp / "big.csv", tmp / "small.csv"
        make_csv(big, args.rows)
        make_csv(small, args.small)
        peaks: dict[str, list[float]] = {"big": [], "small": []}
        counts: dict[str, str] = {}

        def child(who: str, csv_path: Path, size: str = "big") -> tuple[float, float]:
            db = tmp / f"{who}.db"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            run = run_process([sys.executable, __file__, "--child", who, str(csv_path), str(db)], cwd=tmp)
            peak, out = run.peak_mb, run.stdout
            if who == "ours":
                peaks[size].append(peak)
            seconds, cpu, *rest = out.split()
            counts[f"{who}-{size}"] = " ".join(rest)
            return float(seconds), float(cpu)

        runs = interleaved(args.rounds, {
            "reference": lambda: child("reference", big),
            "ours": lambda: child("ours", big),
            "ours-small": lambda: child("ours", small, "small"),
        })
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    a, b = [w for w, _ in runs["reference"]], [w for w, _ in runs["ours"]]
    a_cpu, b_cpu = [c for _, c in runs["reference"]], [c for _, c in runs["ours"]]
    n = args.rows
    print(f"import of {n:,} rows over {DOMAINS} domains (1 % invalid), {args.rounds} interleaved rounds (medians)")
    print(f"(a) reference loop (csv + email-validator + executemany): {n / median(a):8,.0f} rows/s")
    print(f"(b) newsletter.csvio.import_csv:                          {n / median(b):8,.0f} rows/s "
          f"(added, bad: {counts['ours-big']})")
    speed = median_ratio(a, b)
    print(f"ratio (b)/(a): {speed:.2f}x  (target >= 2x)  pairs: {' '.join(f'{x / y:.2f}' for x, y in zip(a, b))}"
          f";  CPU time {median(a_cpu):.2f} s / {median(b_cpu):.2f} s = {median_ratio(a_cpu, b_cpu):.2f}x")
    big_peak, small_peak = median(peaks["big"]), median(peaks["small"])
    memory = big_peak / small_peak
    print(f"peak RSS of the import process, {n:,} vs {args.small:,} rows: {big_peak:.1f} / {small_peak:.1f} MB "
          f"= {memory:.3f}x  (target <= 1.2x)")
    return 0 if speed >= 2 and memory <= 1.2 else 1


if __name__ == "__main__":
    sys.exit(main())
