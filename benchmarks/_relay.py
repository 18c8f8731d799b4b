"""A loopback SMTP relay that takes ``--delay`` seconds to accept each message: a remote
relay's latency, without its CPU. Runs in its own process (``start_relay``), any number of
connections; each connection answers in order, a message's 250 ``delay`` after its final dot.

Over stdin the parent asks ``stats`` (answered on stdout: messages accepted, first and last
acceptance time as ``time.time()``, then counters reset); closing stdin stops it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time

from bench_smtp import Sink

ACCEPTED: list[float] = []
SPANS: list[list[float]] = []  # each connection's first and last accepted message, since the last ``stats``


class SlowRelay(Sink):
    """bench_smtp's sink, with every message's final 250 held back ``DELAY`` seconds."""

    DELAY = 0.02

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.queue: asyncio.Queue[tuple[bytes, bool]] = asyncio.Queue()
        self.span: list[float] | None = None
        self.writer = asyncio.get_running_loop().create_task(self._write())
        super().connection_made(transport)

    def answer(self, replies: bytes, close: bool = False) -> None:
        self.queue.put_nowait((replies, close))

    async def _write(self) -> None:
        while True:
            replies, close = await self.queue.get()
            if b"250 2.0.0" in replies:  # a message's final answer: the relay's time per message
                await asyncio.sleep(self.DELAY * replies.count(b"250 2.0.0"))
                ACCEPTED.append(time.time())
                if self.span is None:
                    self.span = [ACCEPTED[-1], ACCEPTED[-1]]
                    SPANS.append(self.span)
                self.span[1] = ACCEPTED[-1]
            if self.transport.is_closing():
                return
            self.transport.write(replies)
            if close:
                self.transport.close()
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self.writer.cancel()


def _commands() -> None:
    for line in sys.stdin:
        if line.strip() == "stats":
            got, spans = list(ACCEPTED), [list(s) for s in SPANS]
            del ACCEPTED[:len(got)], SPANS[:len(spans)]
            # the window in which every connection was sending: from the last one's first message
            # to the first one's last; the messages accepted within it
            start, end = max((s[0] for s in spans), default=0.0), min((s[1] for s in spans), default=0.0)
            within = sum(start <= t <= end for t in got)
            print(f"{len(got)} {got[0] if got else 0:.6f} {got[-1] if got else 0:.6f} {start:.6f} {end:.6f} "
                  f"{within}", flush=True)


def serve(delay: float) -> None:
    """Run the relay on a free port, print the port, answer ``stats`` until stdin closes."""
    SlowRelay.DELAY = delay

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(SlowRelay, "127.0.0.1", 0, backlog=256)
        print(server.sockets[0].getsockname()[1], flush=True)
        reader = threading.Thread(target=_commands, daemon=True)
        reader.start()
        await loop.run_in_executor(None, reader.join)
        server.close()

    asyncio.run(main())


class Relay:
    """The parent's handle on a relay process."""

    def __init__(self, delay: float) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, str(delay)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdin is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.proc.kill()
            raise SystemExit("the SMTP relay did not start")
        self.port = int(line)
        self.together = (0.0, 0.0, 0)

    def stats(self) -> tuple[int, float, float]:
        """Messages accepted since the last call, and the first and last acceptance times.
        :attr:`together` is then (start, end, messages) of the window in which every connection
        was sending: from the last connection's first message to the first connection's last."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        n, first, last, start, end, within = self.proc.stdout.readline().split()
        self.together = (float(start), float(end), int(within))
        return int(n), float(first), float(last)

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
    serve(float(sys.argv[1]))
