"""Benchmark each HTTP provider against its emulator limited to 10 requests/s.

    .venv/bin/python benchmarks/bench_providers.py                 # 10,000 readers, every provider
    .venv/bin/python benchmarks/bench_providers.py --readers 2000 --providers sendgrid brevo

For each provider, 10,000 readers (a fresh SQLite ledger) go through the real delivery
engine and the real transport to the provider's local emulator (tests/provider_emulator.py),
which allows 10 requests/s (a token bucket, one second of burst) and answers 429 with
``Retry-After`` beyond that. The rendered issue is #6 (~57 KB of HTML).

**Time is simulated.** At 10 requests/s a provider that takes one message a request
needs 1,000 s for 10,000 readers; rather than wait, the emulator, the rate limiter and
the engine share one :class:`~newsletter.clock.FakeClock`: every wait advances it
instantly, and requests take no simulated time (the CPU work is real and its wall time
is printed too). So the "simulated" column measures the pacing (how close the adaptive
rate gets to the limit, and what the 429s cost), not network latency. Brevo runs with
``BREVO_CONCURRENCY=1`` here: concurrency saves real round trips, not simulated time, and
threads sleeping on one fake clock would interleave by chance.

Printed per provider: requests sent, the ideal time (requests needed ÷ limit), the
simulated time and its ratio to the ideal, the 429s, and the wall time. The check at
the end: every provider within 1.3× of its own ideal, every reader delivered once.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import seed_subscribers  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from bench_delivery import _prepared  # noqa: E402

LIMIT = 10.0  # requests per second the emulated provider allows

def batch_of(provider: str) -> int:
    """Engine batch per provider: what one transport call takes (its ``max_batch``)."""
    from newsletter.transports import transport_class

    return transport_class(provider).max_batch


def run(provider: str, readers: int, prepared) -> dict:
    from datetime import datetime, timezone

    from newsletter.clock import FakeClock
    from newsletter.config import Publication, Settings
    from newsletter.delivery import DeliveryOptions, run_delivery
    from newsletter.ledger.engine import start_or_resume
    from newsletter.schema import open_database
    from newsletter.transports import get_transport
    from tests.provider_emulator import ProviderEmulator, env

    clock = FakeClock(datetime(2031, 3, 4, 9, 0, tzinfo=timezone.utc))
    with tempfile.TemporaryDirectory() as tmp, ProviderEmulator(provider, clock, rate=LIMIT, inspect=False) as api:
        db = Path(tmp) / "bench.db"
        seed_subscribers(db, readers)
        settings = Settings(root=Path(tmp), publication=Publication(),
                            env={**env(provider, api.url), "BREVO_CONCURRENCY": "1"})
        conn = open_database(db)
        wall = time.perf_counter()
        try:
            did = start_or_resume(conn, prepared, now=clock.now)
            report = run_delivery(conn, did, prepared, lambda: get_transport(settings, provider, clock=clock),
                                  options=DeliveryOptions(batch_size=batch_of(provider)), clock=clock)
        finally:
            conn.close()
        wall = time.perf_counter() - wall
        copies = collections.Counter(d.recipient for d in api.delivered)
    needed = api.counters.requests - api.counters.rate_limited
    return {"provider": provider, "requests": needed, "ideal": needed / LIMIT, "simulated": clock.monotonic(),
            "limited": api.counters.rate_limited, "wall": wall, "state": report.state, "sent": report.sent,
            "once": len(copies) == readers and set(copies.values()) == {1}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readers", type=int, default=10_000)
    from tests.provider_emulator import PROVIDERS

    parser.add_argument("--providers", nargs="+", default=list(PROVIDERS), choices=list(PROVIDERS))
    args = parser.parse_args()
    prepared = _prepared()
    print(f"{args.readers:,} readers per provider; emulated limit {LIMIT:g} requests/s; time is SIMULATED "
          "(one fake clock for engine, limiter and emulator; CPU work real)\n")
    print(f"{'provider':<10}{'requests':>9}{'ideal s':>9}{'simulated s':>13}{'ratio':>7}{'429s':>6}"
          f"{'wall s':>8}  result")
    ok = True
    for provider in args.providers:
        r = run(provider, args.readers, prepared)
        ratio = r["simulated"] / r["ideal"] if r["ideal"] else float("nan")
        good = r["once"] and r["state"] == "done" and ratio <= 1.3
        ok &= good
        print(f"{provider:<10}{r['requests']:>9,}{r['ideal']:>9.1f}{r['simulated']:>13.1f}{ratio:>7.2f}"
              f"{r['limited']:>6}{r['wall']:>8.1f}  {r['state']}, {r['sent']:,} sent, "
              f"{'each reader once' if r['once'] else 'NOT each reader once'}{'' if good else '  <-- FAIL'}")
    print("\ncheck: every provider within 1.3x of its own ideal, everyone delivered once:",
          "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
