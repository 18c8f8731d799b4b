"""SMTP over STARTTLS against plain text, to the same server, side by side (issue 22 #9).

    .venv/bin/python benchmarks/bench_starttls.py [--messages N] [--rounds R] [--postfix]

A minimal SMTP sink runs in its own process on 127.0.0.1 (bench_smtp.py's, on blocking sockets
with a thread per connection, plus STARTTLS with a certificate from a throwaway CA made here). In interleaved rounds, the
project's :class:`~newsletter.transports.smtp.SMTPTransport` sends N personalised copies of
issue #6 (built before the clock starts) over one connection:

(a) plain      SMTP_SECURITY=none
(b) starttls   SMTP_SECURITY=starttls, the certificate verified against the CA
(c) starttls without TCP_NODELAY (the option switched off again after connecting): what the
    transport did before; the last small TLS record of each message then waits for the
    server's delayed ACK (Nagle), ~40 ms a message

With ``--postfix`` the server is the real one `.ci/postfix` sets up (its port 2528: STARTTLS
offered, not required; each message queued to disk by Postfix, then discarded), the same
server for (a), (b) and (c), as in the issue's measurement.

Reported: medians in messages per second, and (b)/(a) (target >= 0.6x; exit 1 below it).
Nothing leaves the loopback interface.
"""

from __future__ import annotations

import argparse
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path

from _common import ISSUE6, REPO, interleaved, median, median_ratio, start_sink

FROM = "newsletter@chinaffairs.example"
TLS_DIR = Path(tempfile.gettempdir()) / "nl-bench-starttls"


# ---- the sink (child process) -------------------------------------------------------------
# A thread per connection on blocking sockets: reads go through OpenSSL in large chunks, so the
# sink costs little under TLS too (asyncio's pure-Python TLS layer would be what is measured).
def _session(conn: socket.socket, context: ssl.SSLContext) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock: socket.socket = conn
    buf, in_data = b"", False
    sock.sendall(b"220 sink ESMTP\r\n")
    try:
        while True:
            chunk = sock.recv(262144)
            if not chunk:
                return
            buf += chunk
            replies: list[bytes] = []
            while True:
                if in_data:
                    end = buf.find(b"\r\n.\r\n")
                    if end < 0:
                        buf = buf[-4:]
                        break
                    buf, in_data = buf[end + 5:], False
                    replies.append(b"250 2.0.0 Ok: discarded\r\n")
                    continue
                end = buf.find(b"\r\n")
                if end < 0:
                    break
                verb, buf = buf[:4].upper(), buf[end + 2:]
                if verb == b"EHLO":
                    tls = b"" if isinstance(sock, ssl.SSLSocket) else b"250-STARTTLS\r\n"
                    replies.append(b"250-sink\r\n250-PIPELINING\r\n" + tls + b"250-SIZE 200000000\r\n250 8BITMIME\r\n")
                elif verb == b"STAR":
                    sock.sendall(b"".join(replies) + b"220 2.0.0 Ready to start TLS\r\n")
                    replies, buf = [], b""
                    sock = context.wrap_socket(sock, server_side=True)
                elif verb == b"DATA":
                    replies.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    buf, in_data = b"\r\n" + buf, True
                elif verb == b"QUIT":
                    sock.sendall(b"".join(replies) + b"221 Bye\r\n")
                    return
                else:
                    replies.append(b"250 Ok\r\n")
            if replies:
                sock.sendall(b"".join(replies))
    except (OSError, ssl.SSLError):
        return
    finally:
        sock.close()


def serve() -> None:
    """Run the sink on a free port, print the port, stop when stdin closes."""
    import threading

    from tests.smtp_server import make_tls_files

    context = make_tls_files(TLS_DIR).server_context()
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)

    def accept() -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=_session, args=(conn, context), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    sys.stdin.read()


# ---- the parent ------------------------------------------------------------------------------
def _messages(n: int, domain: str = "example.org"):
    from newsletter.config import load_settings
    from newsletter.message import PreparedIssue
    from newsletter.render import render_issue

    settings = load_settings(REPO, environ={"NEWSLETTER_BASE_URL": "https://chinaffairs.example"})
    prepared = PreparedIssue(render_issue(ISSUE6, settings), settings.publication, "bench-secret-key-0123456789")
    msgs = [prepared.for_subscriber(i, f"reader{i:07d}@{domain}", f"Reader {i}") for i in range(1, n + 1)]
    for m in msgs:
        m.smtp_bytes()  # built before the clock starts
    return msgs


def _timed(port: int, security: str, msgs, nodelay: bool = True, ca_file: str | None = None) -> float:
    from newsletter.transports.smtp import SMTPTransport

    t = SMTPTransport("127.0.0.1", port, envelope_from=FROM, security=security, helo_name="bench.local",
                      ca_file=(ca_file or str(TLS_DIR / "ca.crt")) if security != "none" else None)
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
    parser.add_argument("--postfix", action="store_true", help="send to the Postfix `.ci/postfix` set up")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return 0
    n = max(50, min(args.messages, 20_000))
    rounds = max(1, min(args.rounds, 9))
    proc, ca_file, server = None, None, "minimal sink"
    if args.postfix:
        env = dict(line.split("=", 1) for line in Path("/var/lib/newsletter-ci/mta/mta.env").read_text().split())
        port, ca_file, server = int(env["MTA_BENCH_PORT"]), env["MTA_CA_FILE"], "Postfix (queued, discarded)"
        msgs = _messages(n, env["MTA_BENCH_DOMAIN"])
    else:
        msgs = _messages(n)
        proc, port = start_sink(__file__, "STARTTLS sink")
    size = sum(len(m.smtp_bytes()) for m in msgs) / n
    few = max(50, n // 8)
    try:
        runs = interleaved(rounds, {"plain": lambda: _timed(port, "none", msgs),
                                    "starttls": lambda: _timed(port, "starttls", msgs, ca_file=ca_file),
                                    "nagle": lambda: _timed(port, "starttls", msgs[:few], False, ca_file)})
    finally:
        if proc is not None:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=10)
    a, b, c = runs["plain"], runs["starttls"], runs["nagle"]
    print(f"issue #6, {n:,} messages of {size / 1024:.1f} KB, one connection, {server}, {rounds} interleaved "
          f"rounds (medians)")
    print(f"(a) plain text:                          {n / median(a):7,.0f} msg/s")
    print(f"(b) STARTTLS (TCP_NODELAY, as shipped):  {n / median(b):7,.0f} msg/s")
    print(f"(c) STARTTLS with Nagle (before):        {few / median(c):7,.0f} msg/s  ({few} messages)")
    ratio = median_ratio(a, b)  # times: plain over STARTTLS is STARTTLS's rate over plain's
    print(f"ratio (b)/(a): {ratio:.2f}x  (target >= 0.6x)  pairs: {' '.join(f'{x / y:.2f}' for x, y in zip(a, b))}")
    return 0 if ratio >= 0.6 else 1


if __name__ == "__main__":
    sys.exit(main())
