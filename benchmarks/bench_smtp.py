"""SMTP: the whole `newsletter send` process against raw smtplib with pre-built bytes.

    .venv/bin/python benchmarks/bench_smtp.py [--readers N] [--rounds R]

A minimal asyncio SMTP sink runs in its own process on 127.0.0.1: it answers
every command at once, offers PIPELINING, and scans DATA for the end marker in
large reads, discarding the message. (aiosmtpd tops out near 130 msg/s on these
78 KB messages, reading DATA line by line: with it, a benchmark measures the server.)

Then, in interleaved rounds, over one connection each:

(a) raw   a child process sends N messages with ``smtplib.SMTP.sendmail``: the
          project's own message bytes for issue #6, built *before* its clock
          starts; only the sending is timed (smtplib never pipelines);
(b) ours  the whole ``newsletter send 6 --yes --skip-checks`` process, timed
          from exec to exit: start-up, render, the durable ledger (N readers
          frozen and checkpointed batch by batch), personalisation and SMTP.

Reported: medians of the rounds and the median of the pairs' ratios, (b)
against (a) in messages per second (target >= 1.5x at 6,000 readers).
Nothing leaves the loopback interface.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from _common import (ISSUE6, NEWSLETTER, REPO, interleaved, median, median_ratio, process_env, run_process, seed_subscribers,
                     start_sink)

FROM = "newsletter@chinaffairs.example"
SECRET = "bench-secret-key-0123456789abcdef"


# ---- the sink (child process) -------------------------------------------------------------
class Sink(asyncio.Protocol):
    """Just enough SMTP: replies to each command line, swallows DATA up to CRLF.CRLF."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer = b""
        self.in_data = False
        self.transport.write(b"220 sink ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        replies: list[bytes] = []
        while True:
            if self.in_data:
                end = self.buffer.find(b"\r\n.\r\n")
                if end < 0:
                    self.buffer = self.buffer[-4:]  # the marker may straddle two reads
                    break
                self.buffer, self.in_data = self.buffer[end + 5:], False
                replies.append(b"250 2.0.0 Ok: discarded\r\n")
                continue
            end = self.buffer.find(b"\r\n")
            if end < 0:
                break
            verb, self.buffer = self.buffer[:4].upper(), self.buffer[end + 2:]
            if verb == b"EHLO":
                replies.append(b"250-sink\r\n250-PIPELINING\r\n250-SIZE 200000000\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                replies.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                self.buffer, self.in_data = b"\r\n" + self.buffer, True  # so an empty message ends too
            elif verb == b"QUIT":
                self.answer(b"".join(replies) + b"221 Bye\r\n", close=True)
                return
            else:
                replies.append(b"250 Ok\r\n")
        if replies:
            self.answer(b"".join(replies))

    def answer(self, replies: bytes, close: bool = False) -> None:
        """Write replies at once (a slower server overrides this)."""
        self.transport.write(replies)
        if close:
            self.transport.close()


def serve() -> None:
    """Run the sink on a free port, print the port, stop when stdin closes."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Sink, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await loop.run_in_executor(None, sys.stdin.read)
        server.close()

    asyncio.run(main())


# ---- the reference (child process) ---------------------------------------------------------
def raw(port: int, n: int) -> None:
    """Build n messages with the project's builder, then time only smtplib sending them."""
    import smtplib

    from newsletter.config import load_settings
    from newsletter.message import PreparedIssue
    from newsletter.render import render_issue

    settings = load_settings(REPO, environ=_environ(port, ""))
    prepared = PreparedIssue(render_issue(ISSUE6, settings), settings.publication, SECRET)
    payloads = [(f"reader{i:07d}@example.org", prepared.for_subscriber(i, f"reader{i:07d}@example.org",
                                                                      f"Reader {i}").as_bytes())
                for i in range(1, n + 1)]
    t = time.perf_counter()
    smtp = smtplib.SMTP("127.0.0.1", port, local_hostname="bench.local", timeout=60)
    for to, data in payloads:
        smtp.sendmail(FROM, [to], data)
    smtp.quit()
    print(f"{time.perf_counter() - t:.6f} {sum(len(d) for _, d in payloads) / n:.0f}")


# ---- the parent ------------------------------------------------------------------------------
def _environ(port: int, db: str) -> dict[str, str]:
    return process_env({"NEWSLETTER_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port),
                        "SMTP_SECURITY": "none", "SMTP_HELO_NAME": "bench.local", "NEWSLETTER_FROM": FROM,
                        "NEWSLETTER_SECRET_KEY": SECRET, "NEWSLETTER_DB": db,
                        "NEWSLETTER_BASE_URL": "https://chinaffairs.example"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--readers", type=int, default=6000, help="messages per run (100..100000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (1..9)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--raw", nargs=2, type=int, metavar=("PORT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return 0
    if args.raw:
        raw(*args.raw)
        return 0
    n = max(100, min(args.readers, 100_000))
    rounds = max(1, min(args.rounds, 9))
    tmp = Path(tempfile.mkdtemp(prefix="nl-bench-smtp-"))
    proc, port = start_sink(__file__, "SMTP sink")
    sizes: list[str] = []
    try:
        seed_subscribers(tmp / "seed.db", n)

        def ours() -> float:
            db = tmp / "run.db"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            shutil.copyfile(tmp / "seed.db", db)
            wall = run_process([NEWSLETTER, "--root", str(REPO), "send", "6", "--yes", "--skip-checks"],
                                     env=_environ(port, str(db)), cwd=tmp).wall
            sent = sqlite3.connect(db).execute("SELECT COUNT(*) FROM ledger WHERE state='sent'")
            if sent.fetchone()[0] != n:
                raise SystemExit("newsletter send did not send every message")
            return wall

        def reference() -> float:
            out = run_process([sys.executable, __file__, "--raw", str(port), str(n)], cwd=tmp).stdout
            seconds, size = out.split()
            sizes.append(size)
            return float(seconds)

        runs = interleaved(rounds, {"raw": reference, "ours": ours})
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    a, b = runs["raw"], runs["ours"]
    print(f"issue #6, {n:,} readers, {int(sizes[0]) / 1024:.1f} KB per message, minimal asyncio sink, "
          f"{rounds} interleaved rounds (medians)")
    print(f"(a) raw smtplib.sendmail, pre-built bytes, sending only: {n / median(a):7,.0f} msg/s")
    print(f"(b) whole `newsletter send 6` process over SMTP:          {n / median(b):7,.0f} msg/s")
    ratio = median_ratio(a, b)
    print(f"ratio (b)/(a): {ratio:.2f}x  (target >= 1.5x)  pairs: {' '.join(f'{x / y:.2f}' for x, y in zip(a, b))}")
    return 0 if ratio >= 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())
