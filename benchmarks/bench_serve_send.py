"""One-click unsubscribes through `newsletter serve` while a send runs, on SQLite and on PostgreSQL.

    .venv/bin/python benchmarks/bench_serve_send.py [--seconds S] [--clients C] [--readers N]

Needs ``wrk`` (as bench_serve, whose load script and server start-up this reuses). For each
backend, a publication made by ``newsletter init`` with N generated readers (SQLite: its
file; PostgreSQL: a database on a throwaway loopback cluster, tests/pg_cluster.py) is served
by a real ``newsletter serve``. After one unmeasured second (the server's first connections),
wrk (one thread, C keep-alive connections) posts one-click unsubscribes
(``POST /unsubscribe/<token>``), each for a reader no earlier request named:

* idle    with nothing else running (the reference, same server, same run);
* sending while ``newsletter send 1`` sends to the same readers through a loopback relay
          that takes 20 ms per message (benchmarks/_relay.py), recording each answer.

Right after each, with the send still running in the sending phase, wrk drives a hello-world
WSGI app on the same server set-up (bench_serve's) for as long: what any app shows on this
machine at that moment, the part of the p99 that is not the store's.

Printed: requests/s and p99 for each, the relay's messages during the sending run (the send
must be under way), every answered unsubscribe applied, and on PostgreSQL that nothing was
spooled (the spool is SQLite's). Target: p99 during a send <= 100 ms on PostgreSQL.
"""

from __future__ import annotations

import argparse
import glob
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from _common import NEWSLETTER, initialised_publication, process_env, seed_subscribers
from _pg import cluster, create_database, sql
from _relay import Relay
from bench_serve import _HELLO, _LUA, PER_CLIENT, _start, wrk

SECRET = "bench-secret-key-0123456789abcdef"
P99_TARGET_MS = 100.0


def _unsubscribed(db: str) -> int:
    if db.startswith("postgresql://"):
        return sql(db, "SELECT COUNT(*) FROM subscribers WHERE status='unsubscribed'")[0][0]
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT COUNT(*) FROM subscribers WHERE status='unsubscribed'").fetchone()[0]
    finally:
        conn.close()


def _tokens(path: Path, first: int, count: int) -> None:
    """Tokens of readers first … first+count-1 (ids and addresses as seed_subscribers made them)."""
    from newsletter.tokens import make_token

    path.write_text("".join(make_token(SECRET, i, f"reader{i:07d}@example.org") + "\n"
                            for i in range(first, first + count)))


def _sending(root: Path, env: dict[str, str], tmp: Path) -> subprocess.Popen:
    """`newsletter send 1` in the background, started and past its list freeze."""
    log = open(tmp / "send.log", "wb")
    proc = subprocess.Popen([NEWSLETTER, "--root", str(root), "send", "1", "--yes", "--skip-checks"], env=env,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return proc


def measure(backend: str, db: str, root: Path, tmp: Path, relay: Relay, hello_port: int,
            args: argparse.Namespace) -> dict:
    """The idle and the sending run on one backend."""
    env = process_env({"NEWSLETTER_DB": db, "NEWSLETTER_SECRET_KEY": SECRET, "NEWSLETTER_BASE_URL": "https://news.example",
                       "NEWSLETTER_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(relay.port),
                       "SMTP_SECURITY": "none", "SMTP_HELO_NAME": "bench.local"})
    seed_subscribers(db, args.readers)
    serve, port = _start([NEWSLETTER, "--root", str(root), "serve", "--port", "0"], env, tmp / f"serve-{backend}.log")
    script = tmp / "bench.lua"
    script.write_text(_LUA)
    per_run = args.readers // 5
    out: dict = {}
    try:
        warm = tmp / f"tokens-{backend}-warm.txt"  # the server's first requests (connections, caches) go unmeasured
        _tokens(warm, args.readers - 3 * per_run + 1, per_run)
        wrk(f"http://127.0.0.1:{port}/", args.clients, 1, dict(env, BENCH_TOKENS=str(warm), BENCH_MODE="post"), script)
        for i, phase in enumerate(("idle", "sending")):
            tokens = tmp / f"tokens-{backend}-{phase}.txt"
            first = args.readers - (i + 1) * per_run + 1  # the list's far end: the send reaches it last
            _tokens(tokens, first, per_run)
            send = None
            if phase == "sending":
                relay.stats()
                send = _sending(root, env, tmp)
                time.sleep(args.warmup)  # start-up, render, freeze: the send is under way
            before = _unsubscribed(db)
            run_env = dict(env, BENCH_TOKENS=str(tokens), BENCH_MODE="post")
            r = wrk(f"http://127.0.0.1:{port}/", args.clients, args.seconds, run_env, script)
            time.sleep(0.3)  # what wrk left in flight at its deadline
            applied = _unsubscribed(db) - before
            out[f"{phase} hello"] = wrk(f"http://127.0.0.1:{hello_port}/", args.clients, args.seconds, run_env, script)
            if send is not None:
                mailed, _, _ = relay.stats()
                running = send.poll() is None
                send.send_signal(signal.SIGTERM)
                send.wait(timeout=60)
                out["mailed"], out["running"] = mailed, running
            if r.requests >= per_run:
                raise SystemExit(f"{backend} {phase}: wrk named every reader; seed more (--readers)")
            out[phase] = r
            out[f"{phase} applied"] = applied
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(timeout=10)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
    out["spooled"] = sum(Path(p).stat().st_size > 0 for p in glob.glob(str(tmp / "**" / "*unsubscribe-spool*"),
                                                                       recursive=True))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--readers", type=int, default=40_000)
    parser.add_argument("--warmup", type=float, default=4, help="seconds the send runs before wrk starts")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    issue = "001-hello-world.md"
    results: dict[str, dict] = {}
    relay = Relay(0.02)
    hello, hello_port = _start([sys.executable, "-c", _HELLO, "0", str(Path(__file__).resolve().parent.parent),
                                str(PER_CLIENT)], process_env(), Path("/dev/null"))
    try:
        with cluster() as c:
            for backend in ("sqlite", "postgresql"):
                with initialised_publication(f"nl-bench-serve-send-{backend}-") as (tmp, root):
                    path = root / "issues" / issue
                    path.write_text(path.read_text(encoding="utf-8").replace("status: draft", "status: ready"),
                                    encoding="utf-8")
                    db = str(root / "newsletter.db") if backend == "sqlite" else create_database(c, "serve")
                    results[backend] = measure(backend, db, root, tmp, relay, hello_port, args)
    finally:
        relay.stop()
        hello.send_signal(signal.SIGINT)
        hello.wait(timeout=10)
    return report(results, args)


def report(results: dict[str, dict], args: argparse.Namespace) -> int:
    ok = True
    print(f"one-click POST through `serve`, {args.clients} clients, {args.seconds:g} s each; 'sending': `newsletter "
          f"send` to a relay at 20 ms per message at the same time")
    for backend, out in results.items():
        for phase in ("idle", "sending"):
            r = out[phase]
            answered = r.requests - r.non2xx
            good = answered <= out[f"{phase} applied"] <= r.requests + args.clients and r.non2xx == 0
            ok &= good
            print(f"  {backend:<10} {phase:<8} {r.rate:7,.0f} req/s  p50 {r.p50_ms:6.1f} ms  p99 {r.p99_ms:6.1f} ms  "
                  f"({answered} answered, {out[f'{phase} applied']} applied, {r.non2xx} non-2xx, {r.errors} socket "
                  f"errors: {'OK' if good else 'FAIL'})")
            h = out[f"{phase} hello"]
            print(f"  {backend:<10} {phase:<8} hello-world right after: {h.rate:7,.0f} req/s  p50 {h.p50_ms:6.1f} ms  "
                  f"p99 {h.p99_ms:6.1f} ms")
        under_way = out["mailed"] > 0 and out["running"]
        ok &= under_way
        print(f"  {backend:<10} the send mailed {out['mailed']} readers meanwhile"
              f"{'' if out['running'] else ', and had ended before wrk did: FAIL'}; spool files left: {out['spooled']}")
    pg = results["postgresql"]
    p99 = pg["sending"].p99_ms
    met = p99 <= P99_TARGET_MS and pg["spooled"] == 0
    ok &= met
    print(f"serve during a send: postgresql p99 {p99:.1f} ms (idle {pg['idle'].p99_ms:.1f} ms; sqlite "
          f"{results['sqlite']['sending'].p99_ms:.1f} ms), spool files {pg['spooled']} (target <= "
          f"{P99_TARGET_MS:.0f} ms, none): {'OK' if met else 'FAIL'}")
    print(f"serve during a send: hello-world's own p99 on this machine meanwhile {pg['sending hello'].p99_ms:.1f} ms "
          f"(idle {pg['idle hello'].p99_ms:.1f} ms): the part of the p99 no store can remove")
    for backend, out in results.items():
        print(f"serve during a send: {backend} {out['sending'].rate:.0f} req/s vs idle {out['idle'].rate:.0f} req/s: "
              f"{out['sending'].rate / out['idle'].rate:.2f}x")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
