"""`newsletter serve` under concurrent clients, beside a hello-world WSGI app on the same server.

    .venv/bin/python benchmarks/bench_serve.py [--seconds S] [--rounds R] [--clients 1,8,32]

Needs ``wrk`` (Debian: ``apt-get install wrk``). A publication made by ``newsletter init``
with generated readers is served by a real ``newsletter serve`` on 127.0.0.1, as it runs by
default (one process per core, each answering on its loop's own thread); a hello-world WSGI app
runs on the same set-up (:func:`newsletter.web.server.serve`: as many processes, the same limits
and GIL switch interval). Each round drives, for each client count in turn, with wrk
(one thread, keep-alive connections): the hello-world app, ``GET /unsubscribe/<token>``, the
one-click ``POST /unsubscribe/<token>`` and a Postmark bounce webhook, each write naming a reader
no earlier request named. The rounds interleave the client counts, so a busy spell of the machine
hits all of them; each cell is the median over the rounds, and each ratio the median of the
rounds' own ratios. wrk's connections all come from 127.0.0.1, so both servers allow 64 per
address (the default cap, 20, is for floods of slow clients, see docs/serve.md). Afterwards
the database must show every answered write applied, and the server's log is counted.
Targets: write throughput at 8 and 32 clients at least that at 1 client; write p99 at 8
clients <= 20 ms (hello-world's own p99 is printed beside it: on a loaded machine it bounds
what any app on this server can show).
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
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from _common import NEWSLETTER, initialised_publication, process_env, seed_subscribers

SECRET, HOOK_SECRET = "bench-secret-key-0123456789abcdef", "bench-hook-secret"
P99_TARGET_MS = 20.0
PER_CLIENT = 64  # wrk's connections, all from 127.0.0.1, within one address's cap
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
from newsletter.web.server import ServerLimits, default_processes, serve
PER_CLIENT = int(sys.argv[3])
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, world\\n"]
# As many processes as `newsletter serve` runs here, each started the same way (newsletter.web.prefork).
serve(app, "127.0.0.1", int(sys.argv[1]), ServerLimits(per_client=PER_CLIENT, processes=default_processes()),
      ready=lambda line: print(line, flush=True), spawn=[sys.executable, *sys.argv])
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


LOST = [0]  # answered writes the database did not show applied, over the whole run
MODES = {"hello": "hello", "GET unsubscribe page": "get", "POST one-click": "post", "Postmark webhook": "hook"}
Cells = dict[tuple[str, int], list[Result]]  # (endpoint, clients) -> one Result per round


def measure(seconds: float, clients: tuple[int, ...], readers: int, rounds: int) -> Cells:
    """``rounds`` interleaved runs of every endpoint at every client count; prints the checks and the log."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    results: Cells = {}
    with initialised_publication("nl-bench-serve-") as (tmp, root):
        db = root / "newsletter.db"
        seed_subscribers(db, readers)
        env = process_env({"NEWSLETTER_SECRET_KEY": SECRET, "NEWSLETTER_WEBHOOK_SECRET": HOOK_SECRET,
                           "NEWSLETTER_TRANSPORT": "dryrun", "NEWSLETTER_BASE_URL": "https://news.example",
                           "NEWSLETTER_SERVE_PER_CLIENT": str(PER_CLIENT)})
        serve, port = _start([NEWSLETTER, "--root", str(root), "serve", "--port", "0"], env, tmp / "serve.log")
        (tmp / "hello.py").write_text(_HELLO)
        hello, hello_port = _start([sys.executable, str(tmp / "hello.py"), "0", str(Path(__file__).resolve().parent.parent),
                                    str(PER_CLIENT)], env, tmp / "hello.log")
        script = tmp / "bench.lua"
        script.write_text(_LUA)
        per_run = readers // (len(WRITES) * len(clients) * rounds + 1)
        next_id = [1]
        try:
            for _ in range(rounds):
                for c in clients:
                    for name in ENDPOINTS:
                        r = _cell(name, c, seconds, per_run, next_id, db, env, tmp, script,
                                  hello_port if name == "hello" else port)
                        results.setdefault((name, c), []).append(r)
        finally:
            for proc in (serve, hello):
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        _print_log(tmp / "serve.log")
    return results


def _cell(name: str, c: int, seconds: float, per_run: int, next_id: list[int], db: Path, env: dict[str, str],
          tmp: Path, script: Path, port: int) -> Result:
    """One wrk run of one endpoint at ``c`` clients; for a write, checks every answered request was applied."""
    mode = MODES[name]
    tokens = tmp / f"tokens-{mode}-{c}.txt"
    ids = next_id[0]
    if mode in ("post", "hook"):
        next_id[0] += per_run
    tokens.write_text("\n".join(_tokens(db, ids, per_run, mode)) + "\n")
    before = _applied(db)
    run_env = dict(env, BENCH_TOKENS=str(tokens), BENCH_MODE=mode,
                   BENCH_AUTH="Basic " + base64.b64encode(f"pm:{HOOK_SECRET}".encode()).decode())
    r = wrk(f"http://127.0.0.1:{port}/", c, seconds, run_env, script)
    if r.requests >= per_run and mode in ("post", "hook"):
        raise SystemExit(f"{name} at {c} clients reused readers: seed more (--readers)")
    time.sleep(0.3)  # requests wrk left in flight at its deadline finish
    if mode in ("post", "hook"):
        status = "unsubscribed" if mode == "post" else "bounced"
        applied = _applied(db).get(status, 0) - before.get(status, 0)
        answered = r.requests - r.non2xx
        ok = answered <= applied <= r.requests + c and r.non2xx == 0
        LOST[0] += max(0, answered - applied)
        print(f"  check {name} at {c}: {answered} answered 2xx, {applied} applied, {r.non2xx} non-2xx,"
              f" {r.errors} socket errors: {'OK' if ok else 'FAIL'}", flush=True)
    return r


def _print_log(log_path: Path) -> None:
    log = log_path.read_bytes()
    kinds: dict[str, int] = {}
    for line in log.decode(errors="replace").splitlines():
        kind = re.sub(r"\d+", "N", line.split(" ", 2)[-1])[:90]
        kinds[kind] = kinds.get(kind, 0) + 1
    lines = log.count(b"\n")
    print(f"  serve's log: {lines} lines, {len(log):,} bytes over the whole run; commonest:")
    for kind, n in sorted(kinds.items(), key=lambda kv: -kv[1])[:4]:
        print(f"    {n:>7} x {kind}")


def _median(values: list[float]) -> float:
    return statistics.median(values)


def report(results: Cells, clients: tuple[int, ...]) -> bool:
    """The table (medians over the rounds) and the targets (ratios: medians of each round's own)."""
    rounds = len(results[(ENDPOINTS[0], clients[0])])
    print(f"Medians of {rounds} interleaved rounds.")
    print("| endpoint | " + " | ".join(f"{c} client{'s' if c > 1 else ''}" for c in clients) + " | vs hello-world |")
    print("|---|" + "---|" * (len(clients) + 1))
    ok = True
    for name in ENDPOINTS:
        cells = [f"{_median([r.rate for r in results[(name, c)]]):,.0f} req/s, "
                 f"p50 {_median([r.p50_ms for r in results[(name, c)]]):.1f} ms, "
                 f"p99 {_median([r.p99_ms for r in results[(name, c)]]):.1f} ms" for c in clients]
        ratios = [_median([r.rate / h.rate for r, h in zip(results[(name, c)], results[("hello", c)])]) for c in clients]
        print(f"| {name} | " + " | ".join(cells) + f" | {min(ratios):.2f}–{max(ratios):.2f}× |")
    print(f"writes answered but not applied: {LOST[0]} (target 0): {'OK' if LOST[0] == 0 else 'FAIL'}")
    ok &= LOST[0] == 0
    hello_one = results[("hello", clients[0])]
    for c in clients[1:]:
        each = [r.rate / one.rate for r, one in zip(results[("hello", c)], hello_one)]
        print(f"hello: throughput at {c} clients / at {clients[0]}: {_median(each):.2f}x "
              f"(rounds {min(each):.2f}–{max(each):.2f}; the server and the machine, no app)")
    for name in WRITES:
        first = results[(name, clients[0])]
        for c in clients[1:]:
            each = [r.rate / one.rate for r, one in zip(results[(name, c)], first)]
            kept = _median(each) >= 1
            ok &= kept
            print(f"{name}: throughput at {c} clients / at {clients[0]}: {_median(each):.2f}x "
                  f"(rounds {min(each):.2f}–{max(each):.2f}; target >= 1): {'OK' if kept else 'FAIL'}")
        if 8 in clients:
            p99 = _median([r.p99_ms for r in results[(name, 8)]])
            hello = _median([r.p99_ms for r in results[("hello", 8)]])
            ok &= p99 <= P99_TARGET_MS
            print(f"{name}: p99 at 8 clients {p99:.1f} ms (target <= {P99_TARGET_MS:.0f} ms; hello-world's "
                  f"{hello:.1f} ms): {'OK' if p99 <= P99_TARGET_MS else 'FAIL'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2, help="per wrk run (whole seconds)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each cell is their median")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--readers", type=int, default=400_000,
                        help="seeded; each write names a new one (about 4,000 writes a second per cell)")
    args = parser.parse_args(argv)
    clients = tuple(int(c) for c in args.clients.split(","))
    results = measure(args.seconds, clients, args.readers, args.rounds)
    return 0 if report(results, clients) else 1


if __name__ == "__main__":
    sys.exit(main())
