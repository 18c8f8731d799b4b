"""`newsletter serve` under concurrent clients, beside a hello-world WSGI app on the same server.

    .venv/bin/python benchmarks/bench_serve.py [--seconds S] [--clients 1,8,32]

Needs ``wrk`` (Debian: ``apt-get install wrk``). A publication made by ``newsletter init``
with generated readers is served by a real ``newsletter serve`` process on 127.0.0.1; a
hello-world WSGI app runs on the same waitress set-up (:func:`newsletter.web.server.create_server`,
the same limits) in its own process. For each client count, wrk (one thread, keep-alive
connections) drives, in turn: the hello-world app, ``GET /unsubscribe/<token>``, the
one-click ``POST /unsubscribe/<token>`` and a Postmark bounce webhook, each request naming
a reader no earlier request named. Afterwards the database must show every answered write
applied, and the server's log is counted. Targets: write throughput at 8 and 32 clients at
least that at 1 client; write p99 at 8 clients <= 20 ms.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from _common import NEWSLETTER, initialised_publication, process_env, seed_subscribers

SECRET, HOOK_SECRET = "bench-secret-key-0123456789abcdef", "bench-hook-secret"
P99_TARGET_MS = 20.0
ENDPOINTS = ("hello", "GET unsubscribe page", "POST one-click", "Postmark webhook")
WRITES = ("POST one-click", "Postmark webhook")

_LUA = r"""
local lines, i = {}, 0
for line in io.lines(os.getenv("BENCH_TOKENS")) do lines[#lines + 1] = line end
local mode = os.getenv("BENCH_MODE")
request = function()
  i = i + 1
  if i > #lines then i = 1 end
  local t = lines[i]
  if mode == "get" then return wrk.format("GET", "/unsubscribe/" .. t) end
  if mode == "post" then
    return wrk.format("POST", "/unsubscribe/" .. t,
      {["Content-Type"] = "application/x-www-form-urlencoded"}, "List-Unsubscribe=One-Click")
  end
  if mode == "hook" then
    return wrk.format("POST", "/webhooks/postmark", {["Content-Type"] = "application/json",
      ["Authorization"] = os.getenv("BENCH_AUTH")}, t)
  end
  return wrk.format("GET", "/")
end
done = function(summary, latency, requests)
  io.write(string.format("BENCH %d %d %d %d %d %d\n", summary.requests, summary.duration,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""

_HELLO = """
import sys
sys.path.insert(0, sys.argv[2])
from newsletter.web.server import ServerLimits, create_server
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, world\\n"]
server = create_server(app, "127.0.0.1", int(sys.argv[1]), ServerLimits())
print(server.effective_port, flush=True)
server.run()
"""


class Result(NamedTuple):
    requests: int
    rate: float     # requests/s
    non2xx: int
    errors: int     # socket errors
    p50_ms: float
    p99_ms: float


def wrk(url: str, clients: int, seconds: float, env: dict[str, str], script: Path) -> Result:
    out = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(script), url],
                         capture_output=True, text=True, env=env, timeout=seconds + 60, check=True).stdout
    m = re.search(r"^BENCH (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)$", out, re.M)
    if m is None:
        raise SystemExit(f"wrk said:\n{out}")
    n, us, non2xx, errors, p50, p99 = map(int, m.groups())
    return Result(n, n / (us / 1e6), non2xx, errors, p50 / 1000, p99 / 1000)


def _tokens(db: Path, first: int, count: int, mode: str) -> list[str]:
    from newsletter.tokens import make_token

    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT id, email FROM subscribers WHERE id>=? ORDER BY id LIMIT ?", (first, count)).fetchall()
    conn.close()
    if mode != "hook":
        return [make_token(SECRET, sid, email) for sid, email in rows]
    return [json.dumps({"RecordType": "Bounce", "ID": sid, "Type": "HardBounce", "Email": email, "MessageID": f"m{sid}",
                        "BouncedAt": "2025-01-01T00:00:00Z", "Details": "550 no such user"}) for sid, email in rows]


def _start(cmd: list[str], env: dict[str, str], log: Path) -> tuple[subprocess.Popen, int]:
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, env=env, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r":(\d+)/", line)  # "Serving on http://127.0.0.1:PORT/ …", or the bare port
    if m is None and not line.strip().isdigit():
        proc.kill()
        raise SystemExit(f"server did not start: {line!r} {log.read_text()[-2000:]}")
    return proc, int(m.group(1) if m else line)


def _applied(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db)
    out = dict(conn.execute("SELECT status, COUNT(*) FROM subscribers GROUP BY status").fetchall())
    conn.close()
    return out


def measure(seconds: float, clients: tuple[int, ...], readers: int) -> dict[tuple[str, int], Result]:
    """One run of every endpoint at every client count; prints the table and the checks."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    results: dict[tuple[str, int], Result] = {}
    with initialised_publication("nl-bench-serve-") as (tmp, root):
        db = root / "newsletter.db"
        seed_subscribers(db, readers)
        env = process_env({"NEWSLETTER_SECRET_KEY": SECRET, "NEWSLETTER_WEBHOOK_SECRET": HOOK_SECRET,
                           "NEWSLETTER_TRANSPORT": "dryrun", "NEWSLETTER_BASE_URL": "https://news.example"})
        serve, port = _start([NEWSLETTER, "--root", str(root), "serve", "--port", "0"], env, tmp / "serve.log")
        hello, hello_port = _start([sys.executable, "-c", _HELLO, "0", str(Path(__file__).resolve().parent.parent)],
                                   env, tmp / "hello.log")
        script = tmp / "bench.lua"
        script.write_text(_LUA)
        per_run = readers // (2 * len(clients) + 1)
        try:
            next_id = 1
            for c in clients:
                for name in ENDPOINTS:
                    mode = {"hello": "hello", "GET unsubscribe page": "get", "POST one-click": "post",
                            "Postmark webhook": "hook"}[name]
                    tokens = tmp / f"tokens-{mode}-{c}.txt"
                    ids = next_id
                    if mode in ("post", "hook"):
                        next_id += per_run
                    tokens.write_text("\n".join(_tokens(db, ids, per_run, mode)) + "\n")
                    before = _applied(db)
                    run_env = dict(env, BENCH_TOKENS=str(tokens), BENCH_MODE=mode,
                                   BENCH_AUTH="Basic " + base64.b64encode(f"pm:{HOOK_SECRET}".encode()).decode())
                    url = f"http://127.0.0.1:{hello_port if mode == 'hello' else port}/"
                    r = results[(name, c)] = wrk(url, c, seconds, run_env, script)
                    if r.requests >= per_run and mode in ("post", "hook"):
                        raise SystemExit(f"{name} at {c} clients reused readers: seed more (--readers)")
                    time.sleep(0.3)  # requests wrk left in flight at its deadline finish
                    after = _applied(db)
                    status = "unsubscribed" if mode == "post" else "bounced"
                    if mode in ("post", "hook"):
                        applied = after.get(status, 0) - before.get(status, 0)
                        answered = r.requests - r.non2xx
                        ok = answered <= applied <= r.requests + c and r.non2xx == 0
                        print(f"  check {name} at {c}: {answered} answered 2xx, {applied} applied, {r.non2xx} non-2xx,"
                              f" {r.errors} socket errors: {'OK' if ok else 'FAIL'}", flush=True)
        finally:
            for proc in (serve, hello):
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        log = (tmp / "serve.log").read_bytes()
        lines = log.count(b"\n")
        kinds: dict[str, int] = {}
        for line in log.decode(errors="replace").splitlines():
            kind = re.sub(r"\d+", "N", line.split(" ", 2)[-1])[:90]
            kinds[kind] = kinds.get(kind, 0) + 1
        print(f"  serve's log: {lines} lines, {len(log):,} bytes over the whole run; commonest:")
        for kind, n in sorted(kinds.items(), key=lambda kv: -kv[1])[:4]:
            print(f"    {n:>7} x {kind}")
        results[("log lines", 0)] = Result(lines, 0, 0, 0, 0, 0)
    return results


def report(results: dict[tuple[str, int], Result], clients: tuple[int, ...]) -> bool:
    print(f"| endpoint | " + " | ".join(f"{c} client{'s' if c > 1 else ''}" for c in clients) + " | vs hello-world |")
    print("|---|" + "---|" * (len(clients) + 1))
    ok = True
    for name in ENDPOINTS:
        cells = [f"{results[(name, c)].rate:,.0f} req/s, p50 {results[(name, c)].p50_ms:.1f} ms, "
                 f"p99 {results[(name, c)].p99_ms:.1f} ms" for c in clients]
        ratios = [results[(name, c)].rate / results[("hello", c)].rate for c in clients]
        print(f"| {name} | " + " | ".join(cells) + f" | {min(ratios):.2f}–{max(ratios):.2f}× |")
    for name in WRITES:
        one = results[(name, clients[0])].rate
        for c in clients[1:]:
            kept = results[(name, c)].rate >= one
            ok &= kept
            print(f"{name}: throughput at {c} clients / at {clients[0]}: {results[(name, c)].rate / one:.2f}x "
                  f"(target >= 1): {'OK' if kept else 'FAIL'}")
        if 8 in clients:
            p99 = results[(name, 8)].p99_ms
            ok &= p99 <= P99_TARGET_MS
            print(f"{name}: p99 at 8 clients {p99:.1f} ms (target <= {P99_TARGET_MS:.0f} ms): "
                  f"{'OK' if p99 <= P99_TARGET_MS else 'FAIL'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--readers", type=int, default=120_000)
    args = parser.parse_args(argv)
    clients = tuple(int(c) for c in args.clients.split(","))
    results = measure(args.seconds, clients, args.readers)
    return 0 if report(results, clients) else 1


if __name__ == "__main__":
    sys.exit(main())
