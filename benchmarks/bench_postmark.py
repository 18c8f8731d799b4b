"""Postmark `/email/batch`: our transport against pre-built JSON posted with http.client.

    .venv/bin/python benchmarks/bench_postmark.py [--readers N] [--rounds R]

A minimal asyncio HTTP/1.1 sink runs in its own process on 127.0.0.1: it reads
each request body, counts the messages in it and answers Postmark's documented
batch reply (one ``{"ErrorCode": 0, ...}`` per message). Then, interleaved:

(a) floor  the request bodies for issue #6, built and JSON-encoded *before* the
           clock starts, posted in batches of 500 over one ``http.client``
           connection; only the posting is timed;
(b) ours   ``PostmarkTransport.send`` of N messages personalised from one
           ``PreparedIssue`` *inside* the timed region, 500 a request.

Printed: messages per second (medians) and the median of the pairs' ratios,
(b) against (a) (target >= 0.6x). Nothing leaves the loopback interface.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import sys
import time

from _common import interleaved, median, median_ratio, rendered6, settings, start_sink

BATCH = 500
COUNT_MARK = b'"MessageStream":'


# ---- the sink (child process) -------------------------------------------------------------
async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Keep-alive HTTP/1.1: read each request, answer one entry per message in its body."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
            n = body.count(COUNT_MARK)
            reply = json.dumps([{"ErrorCode": 0, "Message": "OK", "MessageID": f"id-{i}", "To": "x"}
                                for i in range(n)]).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                         + str(len(reply)).encode() + b"\r\n\r\n" + reply)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


def serve() -> None:
    async def main() -> None:
        server = await asyncio.start_server(_handle, "127.0.0.1", 0, limit=1 << 20)
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        server.close()

    asyncio.run(main())


# ---- the contestants ------------------------------------------------------------------------
def _people(n: int):
    from newsletter.message import Recipient

    return [Recipient(f"reader{i}@example.org", f"Reader {i}", f"{i:x}.sig{i:012d}", i) for i in range(n)]


def _transport(port: int):
    from newsletter.config import Settings
    from newsletter.transports.postmark import PostmarkTransport

    base = settings()
    env = {"POSTMARK_SERVER_TOKEN": "bench-token", "POSTMARK_API_URL": f"http://127.0.0.1:{port}"}
    return PostmarkTransport.from_settings(Settings(root=base.root, publication=base.publication, env=env))


def floor_bodies(port: int, rendered, n: int) -> list[bytes]:
    """The requests' JSON, built the plain way (json.dumps of the whole payload), before any clock."""
    from newsletter.message import PreparedIssue

    prepared = PreparedIssue(rendered=rendered, publication=settings().publication, secret_key="bench-key")
    transport = _transport(port)
    people = _people(n)
    bodies = []
    for i in range(0, n, BATCH):
        msgs = [prepared.personalise(r) for r in people[i:i + BATCH]]
        payload = transport.build_payload(msgs, None).json
        for entry, m in zip(payload, msgs):
            entry["HtmlBody"], entry["TextBody"] = m.html, m.text
        bodies.append(json.dumps(payload).encode())
    return bodies


def run_floor(port: int, bodies: list[bytes]) -> float:
    t = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for body in bodies:
        conn.request("POST", "/email/batch", body=body, headers={
            "Content-Type": "application/json", "Accept": "application/json",
            "X-Postmark-Server-Token": "bench-token"})
        reply = conn.getresponse()
        json.loads(reply.read())
    conn.close()
    return time.perf_counter() - t


def run_ours(port: int, rendered, n: int) -> float:
    from newsletter.message import PreparedIssue
    from newsletter.transports.base import Status

    people = _people(n)
    t = time.perf_counter()
    prepared = PreparedIssue(rendered=rendered, publication=settings().publication, secret_key="bench-key")
    sent = 0
    with _transport(port) as transport:
        for i in range(0, n, BATCH):
            msgs = [prepared.personalise(r) for r in people[i:i + BATCH]]
            sent += sum(1 for r in transport.send(msgs) if r.status is Status.SENT)
    elapsed = time.perf_counter() - t
    if sent != n:
        raise SystemExit(f"ours: sent {sent}/{n}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--readers", type=int, default=2000, help="messages per run (500..20000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (1..9)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return 0
    n = max(BATCH, min(args.readers, 20_000))
    rounds = max(1, min(args.rounds, 9))
    rendered = rendered6()
    proc, port = start_sink(__file__, "HTTP sink")
    try:
        bodies = floor_bodies(port, rendered, n)
        run_floor(port, bodies[:1])  # warm-up
        runs = interleaved(rounds, {"floor": lambda: run_floor(port, bodies),
                                    "ours": lambda: run_ours(port, rendered, n)})
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)
    size = sum(len(b) for b in bodies) / n
    print(f"issue #6, {n:,} readers, {size / 1024:.1f} KB of JSON per message, {BATCH} a request, "
          f"minimal asyncio sink, {rounds} interleaved rounds (medians)")
    print(f"(a) pre-built JSON posted with http.client (posting only): {n / median(runs['floor']):7,.0f} msg/s")
    print(f"(b) PostmarkTransport.send, personalised inside the clock:  {n / median(runs['ours']):7,.0f} msg/s")
    ratio = median_ratio(runs["floor"], runs["ours"])
    print(f"ratio (b)/(a): {ratio:.2f}x  (target >= 0.6x)  pairs: "
          f"{' '.join(f'{a / b:.2f}' for a, b in zip(runs['floor'], runs['ours']))}")
    return 0 if ratio >= 0.6 else 1


if __name__ == "__main__":
    sys.exit(main())
