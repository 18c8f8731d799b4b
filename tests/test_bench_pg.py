"""The issue-17 benchmarks' own parts: the slow relay answers late and in order, and run_all reads
the figures each benchmark prints (a changed line would otherwise drop a row silently)."""

from __future__ import annotations

import smtplib
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import run_all  # noqa: E402

WORKERS = """600 readers, relay 20 ms per message, one SMTP connection per worker, 3 interleaved rounds (medians)
  1 worker :   36.4 msg/s while all send (rounds: 36.4),   31.3 msg/s due to last message; last worker's first message 1.37 s after due
  2 workers:   74.9 msg/s while all send (rounds: 74.9),   46.2 msg/s due to last message; last worker's first message 1.56 s after due
  3 workers:  118.9 msg/s while all send (rounds: 118.9),   72.1 msg/s due to last message; last worker's first message 1.67 s after due
workers, whole delivery (due to last message): 2 vs 1: 1.48x, 3 vs 1: 2.31x
workers, while all send: 2 vs 1: 2.06x
workers, while all send: 3 vs 1: 3.27x (target >= 2.5x): OK
"""
SERVE = """  postgresql idle         266 req/s  p50   25.1 ms  p99  150.0 ms  (540 answered)
  postgresql sending      363 req/s  p50   19.5 ms  p99   62.8 ms  (732 answered)
serve during a send: postgresql p99 62.8 ms (idle 150.0 ms; sqlite 149.8 ms), spool files {spooled} (target <= 100 ms, none): OK
"""


def _row(bench: str, words: str) -> run_all.Row:
    return next(r for r in run_all.ROWS if r.bench == bench and words in r.label)


def test_run_all_reads_the_workers_figures():
    row = _row("bench_workers.py", "3 `newsletter worker`")
    assert (run_all.number(row.ours, WORKERS), run_all.number(row.reference, WORKERS),
            run_all.number(row.figure, WORKERS)) == (118.9, 36.4, 3.27)
    whole = _row("bench_workers.py", "whole delivery")
    assert (run_all.number(whole.ours, WORKERS), run_all.number(whole.figure, WORKERS)) == (72.1, 2.31)


def test_the_postgresql_p99_row_counts_only_without_a_spool_file():
    row = _row("bench_serve_send.py", "PostgreSQL: one-click POST")
    assert run_all.number(row.figure, SERVE.format(spooled=0)) == 62.8
    assert run_all.number(row.reference, SERVE.format(spooled=0)) == 150.0
    assert run_all.number(row.figure, SERVE.format(spooled=1)) is None


def test_the_relay_answers_each_message_after_its_delay_in_order():
    from _relay import Relay

    relay = Relay(0.1)
    try:
        with smtplib.SMTP("127.0.0.1", relay.port, timeout=10) as smtp:
            t = time.monotonic()
            for i in range(3):
                assert smtp.sendmail("a@example.org", [f"r{i}@example.org"], b"Subject: x\r\n\r\nhi\r\n") == {}
            elapsed = time.monotonic() - t
        n, first, last = relay.stats()
        assert n == 3 and elapsed >= 0.3 and last - first >= 0.2
        start, end, within = relay.together  # one connection: its whole span
        assert (start, end, within) == (first, last, 3)
        assert relay.stats()[0] == 0  # counted once
    finally:
        relay.stop()


def test_run_all_write_with_only_replaces_just_the_rows_that_ran(tmp_path):
    """A partial run keeps the other rows, each with the stamp of when it was measured."""
    first, second = run_all.ROWS[0], run_all.ROWS[1]
    old = ("Measured 2026-01-02 03:04 (UTC), commit `abc1234`, 3 separate runs; load average (1/5/15 min) "
           "1.5 / 1 / 1 before and 2.5 / 1 / 1 after\n\n" + "\n".join(run_all.TABLE_HEAD[:1]) + "\n"
           f"| {first.label} | 1 s | 2 s | 0.50× | <= 0.6× | yes |\n| {second.label} | 3 | 4 | 0.75× | x | no |\n")
    new = [f"| {second.label} | 9 | 9 | 1.00× | x | yes | 2026-02-03 04:05, `def5678`, load 0.1→0.2 |"]
    rows = run_all.merged(new, old)
    assert rows[0] == f"| {first.label} | 1 s | 2 s | 0.50× | <= 0.6× | yes | 2026-01-02 03:04, `abc1234`, load 1.5→2.5 |"
    assert rows[1] == new[0] and len(rows) == 2
