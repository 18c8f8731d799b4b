"""Benchmark the delivery engine: memory must not grow with the list, and the ledger must be cheap.

    .venv/bin/python benchmarks/bench_delivery.py            # 10,000 and 100,000 subscribers
    .venv/bin/python benchmarks/bench_delivery.py --sizes 2000 20000

For each size, a fresh SQLite database is filled with generated subscribers (2 % of them
unsubscribed), then two child processes each send the same realistic issue (issue 006
rendered, ~57 KB of HTML; a generated one if the issue is missing) through the
NullTransport, which still builds every message's bytes:

* ``plain``  — the floor: a streaming cursor over active subscribers, batches of 100,
  token → personalise → transport. No ledger, no crash safety.
* ``ledger`` — the real thing: ``start_or_resume`` (freezes the list into the ledger) and
  ``run_delivery`` (claim batch → commit 'sending' → send → commit results).

Each child reports its send time and its peak RSS (``ru_maxrss``). Per size, ``--repeat``
(default 3) plain/ledger pairs run back to back on copies of the same database; the
throughput ratio is the median of the pairs' ratios (wall clock; the CPU-time ratio is
printed beside it, and every pair's ratio, so noise from a busy machine is visible). Checks printed at the end:
peak RSS at the largest size ≤ 1.2 × at the smallest (the engine streams, it never holds
the list), and ledger throughput ≥ 0.8 × plain throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRET = "benchmark-secret-key-0123456789abcdef"
BATCH = 100


def _prepared():
    from newsletter.config import load_settings
    from newsletter.message import PreparedIssue

    settings = load_settings(ROOT, environ={})
    issue = next(iter(sorted((ROOT / "issues").glob("006-*.md"))), None)
    if issue is not None:
        from newsletter.render import render_issue

        rendered = render_issue(issue, settings)
    else:  # a generated ~50 KB issue with the same placeholders
        from newsletter.render import RenderedEmail, content_hash

        para = "<p style=\"margin:0 0 16px\">" + "Global governance of AI, summarised. " * 12 + "</p>\n"
        html = ("<html><body><p>Dear %%NAME%%,</p>" + para * 110
                + "<a href=\"%%UNSUBSCRIBE_URL%%\">Unsubscribe %%EMAIL%%</a></body></html>")
        text = "Dear %%NAME%%,\n\n" + ("Global governance of AI, summarised. " * 12 + "\n\n") * 35 \
            + "Unsubscribe: %%UNSUBSCRIBE_URL%%\n"
        rendered = RenderedEmail(slug="bench", number=6, title="Bench", subject="Bench issue", preheader="",
                                 html=html, text=text, lang="en", reply_to=None,
                                 content_hash=content_hash(html, text))
    return PreparedIssue(rendered, settings.publication, SECRET)


def _rss_now_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---- children -----------------------------------------------------------------------------
def setup(db: str, n: int) -> None:
    """Fill a database with n generated subscribers, 2 % of them unsubscribed."""
    from _common import seed_subscribers

    seed_subscribers(db, n, unsubscribe_every=50)


def child(mode: str, db: str) -> None:
    from newsletter.transports.base import NullTransport

    prepared = _prepared()
    prepared.personalise  # noqa: B018 - everything imported and rendered before the clock starts
    rss_before = _rss_now_kb()
    t0, c0 = time.perf_counter(), time.process_time()
    if mode == "plain":
        from newsletter.db import connect

        conn = connect(db)
        transport = NullTransport()
        sent = 0
        batch = []
        for sid, email, name in conn.execute("SELECT id, email, name FROM subscribers WHERE status='active' "
                                             "ORDER BY id"):
            batch.append(prepared.for_subscriber(sid, email, name))
            if len(batch) == BATCH:
                sent += sum(r.status.delivered for r in transport.send(batch))
                batch = []
        if batch:
            sent += sum(r.status.delivered for r in transport.send(batch))
    else:
        from newsletter.delivery import DeliveryOptions, run_delivery
        from newsletter.ledger.engine import start_or_resume
        from newsletter.schema import open_database

        conn = open_database(db)
        did = start_or_resume(conn, prepared)
        report = run_delivery(conn, did, prepared, NullTransport,
                              options=DeliveryOptions(batch_size=BATCH))
        assert report.state == "done", report
        sent = report.sent
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"mode": mode, "sent": sent, "seconds": elapsed, "cpu_seconds": cpu, "rss_before_kb": rss_before,
                      "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


# ---- parent -------------------------------------------------------------------------------
def _run(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)
    if proc.returncode != 0:
        sys.exit(f"child {args} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--repeat", type=int, default=3, help="plain/ledger pairs per size; medians count")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "DB"), help=argparse.SUPPRESS)
    ap.add_argument("--setup", nargs=2, metavar=("DB", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.setup:
        setup(args.setup[0], int(args.setup[1]))
        return 0
    if args.child:
        child(*args.child)
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="nl-bench-"))
    rows = []
    try:
        for n in args.sizes:
            seed = str(tmp / f"seed-{n}.db")
            _run("--setup", seed, str(n))
            pairs: list[tuple[dict, dict]] = []
            # Plain and ledger runs back to back, in alternating order, so each pair shares the
            # machine's load at that moment; the medians over the pairs are what count.
            for i in range(args.repeat):
                pair: dict[str, dict] = {}
                for mode in (("plain", "ledger") if i % 2 == 0 else ("ledger", "plain")):
                    db = str(tmp / f"run-{n}.db")
                    shutil.copyfile(seed, db)  # every run starts from the same, never-sent database
                    pair[mode] = _run("--child", mode, db)
                    for suffix in ("", "-wal", "-shm"):
                        if os.path.exists(db + suffix):
                            os.remove(db + suffix)
                assert pair["plain"]["sent"] == pair["ledger"]["sent"], pair
                pairs.append((pair["plain"], pair["ledger"]))
            rows.append((n, pairs))
            os.remove(seed)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    med = statistics.median
    print(f"{'subscribers':>11} {'sent':>7} | {'plain msg/s':>11} {'ledger msg/s':>12} {'ratio':>5} "
          f"{'cpu ratio':>9} {'ratios of the pairs':>24} | {'plain peak RSS':>14} {'ledger peak RSS':>15}")
    summary = []
    for n, pairs in rows:
        sent = pairs[0][1]["sent"]
        p_rate = med(p["sent"] / p["seconds"] for p, _ in pairs)
        l_rate = med(lg["sent"] / lg["seconds"] for _, lg in pairs)
        ratios = [p["seconds"] / lg["seconds"] for p, lg in pairs]
        cpu_ratio = med(p["cpu_seconds"] / lg["cpu_seconds"] for p, lg in pairs)
        p_rss = max(p["peak_rss_kb"] for p, _ in pairs)
        l_rss = max(lg["peak_rss_kb"] for _, lg in pairs)
        summary.append((n, med(ratios), l_rss))
        print(f"{n:>11,} {sent:>7,} | {p_rate:>11,.0f} {l_rate:>12,.0f} {med(ratios):>5.2f} {cpu_ratio:>9.2f} "
              f"{' '.join(f'{r:.2f}' for r in ratios):>24} | {p_rss / 1024:>11.1f} MB {l_rss / 1024:>12.1f} MB")
    before = max(lg["rss_before_kb"] for _, pairs in rows for _, lg in pairs)
    print(f"(RSS of a ledger child after imports and rendering, before sending: {before / 1024:.1f} MB)")
    small, large = summary[0], summary[-1]
    rss_ratio = large[2] / small[2]
    worst = min(r for _, r, _ in summary)
    ok_rss, ok_rate = rss_ratio <= 1.2, worst >= 0.8
    print(f"ledger peak RSS {large[0]:,} vs {small[0]:,}: {rss_ratio:.3f}x (target <= 1.2): "
          f"{'OK' if ok_rss else 'FAIL'}")
    print(f"ledger/plain throughput (median of pairs), worst size: {worst:.2f} (target >= 0.8): "
          f"{'OK' if ok_rate else 'FAIL'}")
    return 0 if ok_rss and ok_rate else 1


if __name__ == "__main__":
    sys.exit(main())
