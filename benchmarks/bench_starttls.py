"""SMTP over STARTTLS against plain text, to the same server, side by side (issue 22 #9).

    .venv/bin/python benchmarks/bench_starttls.py [--messages N] [--rounds R]

A minimal asyncio SMTP sink runs in its own process on 127.0.0.1 (the one bench_smtp.py uses,
plus STARTTLS with a certificate from a throwaway CA made here). In interleaved rounds, the
project's :class:`~newsletter.transports.smtp.SMTPTransport` sends N personalised copies of
issue #6 (built before the clock starts) over one connection:

(a) plain      SMTP_SECURITY=none
(b) starttls   SMTP_SECURITY=starttls, the certificate verified against the CA
(c) starttls without TCP_NODELAY (the option switched off again after connecting): what the
    transport did before; the last small TLS record of each message then waits for the
    server's delayed ACK (Nagle), ~40 ms a message

Reported: medians in messages per second, and (b)/(a) (target >= 0.6x; exit 1 below it).
Nothing leaves the loopback interface.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path

from _common import ISSUE6, REPO, interleaved, median, median_ratio, start_sink

import bench_smtp

FROM = "newsletter@chinaffairs.example"
TLS_DIR = Path(tempfile.gettempdir()) / "nl-bench-starttls"


# ---- the sink (child process): bench_smtp's, plus STARTTLS -------------------------------------
class TLSSink(bench_smtp.Sink):
    context: ssl.SSLContext | None = None

    early: bytes | None = None  # what arrived over TLS before start_tls handed us the new transport

    def data_received(self, data: bytes) -> None:
        if self.early is not None:
            self.early += data
            return
        if not self.in_data and self.buffer == b"" and data[:8].upper() == b"STARTTLS":
            self.early = b""
            self.transport.write(b"220 2.0.0 Ready to start TLS\r\n")
            self.transport.pause_reading()  # the ClientHello must reach the TLS layer, not us
            asyncio.ensure_future(self._upgrade())
            return
        if not self.in_data and data[:4].upper() == b"EHLO":
            self.transport.write(b"250-sink\r\n250-PIPELINING\r\n250-STARTTLS\r\n250-SIZE 200000000\r\n"
                                 b"250 8BITMIME\r\n")
            return
        super().data_received(data)

    async def _upgrade(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport = await loop.start_tls(self.transport, self, self.context, server_side=True)
        early, self.early = self.early, None
        if early:
            self.data_received(early)


def serve() -> None:
    from tests.smtp_server import make_tls_files

    tls = make_tls_files(TLS_DIR)
    TLSSink.context = tls.server_context()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(TLSSink, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await loop.run_in_executor(None, sys.stdin.read)
        server.close()

    asyncio.run(main())


# ---- the parent ------------------------------------------------------------------------------
def _messages(n: int):
    from newsletter.config import load_settings
    from newsletter.message import PreparedIssue
    from newsletter.render import render_issue

    settings = load_settings(REPO, environ={"NEWSLETTER_BASE_URL": "https://chinaffairs.example"})
    prepared = PreparedIssue(render_issue(ISSUE6, settings), settings.publication, "bench-secret-key-0123456789")
    msgs = [prepared.for_subscriber(i, f"reader{i:07d}@example.org", f"Reader {i}") for i in range(1, n + 1)]
    for m in msgs:
        m.smtp_bytes()  # built before the clock starts
    return msgs


def _timed(port: int, security: str, msgs, nodelay: bool = True) -> float:
    from newsletter.transports.smtp import SMTPTransport

    t = SMTPTransport("127.0.0.1", port, envelope_from=FROM, security=security, helo_name="bench.local",
                      ca_file=str(TLS_DIR / "ca.crt") if security != "none" else None)
    start = time.perf_counter()
    with t:
        first = t.send(msgs[:1])
        if not nodelay and t._smtp is not None:
            t._smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        rest = t.send(msgs[1:])
    elapsed = time.perf_counter() - start
    if not all(r.status.delivered for r in first + rest):
        raise SystemExit(f"{security}: not every message was accepted")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=400, help="messages per run (50..20000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (1..9)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return 0
    n = max(50, min(args.messages, 20_000))
    rounds = max(1, min(args.rounds, 9))
    msgs = _messages(n)
    size = sum(len(m.smtp_bytes()) for m in msgs) / n
    proc, port = start_sink(__file__, "STARTTLS sink")
    try:
        runs = interleaved(rounds, {"plain": lambda: _timed(port, "none", msgs),
                                    "starttls": lambda: _timed(port, "starttls", msgs),
                                    "nagle": lambda: _timed(port, "starttls", msgs[:max(50, n // 8)], False)})
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)
    a, b, c = runs["plain"], runs["starttls"], runs["nagle"]
    print(f"issue #6, {n:,} messages of {size / 1024:.1f} KB, one connection, asyncio sink, {rounds} interleaved "
          f"rounds (medians)")
    print(f"(a) plain text:                          {n / median(a):7,.0f} msg/s")
    print(f"(b) STARTTLS (TCP_NODELAY, as shipped):  {n / median(b):7,.0f} msg/s")
    print(f"(c) STARTTLS with Nagle (before):        {max(50, n // 8) / median(c):7,.0f} msg/s")
    ratio = median_ratio(a, b)  # times: plain over STARTTLS is STARTTLS's rate over plain's
    print(f"ratio (b)/(a): {ratio:.2f}x  (target >= 0.6x)  pairs: {' '.join(f'{x / y:.2f}' for x, y in zip(a, b))}")
    return 0 if ratio >= 0.6 else 1


if __name__ == "__main__":
    sys.exit(main())
