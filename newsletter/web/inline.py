"""Answering requests on the server's own thread: waitress's event loop, without its thread pool.

Waitress reads each request on its I/O thread and hands it, complete, to one of its worker
threads. For an app whose requests are short and CPU-bound (a token check, a template, one
SQLite write queued behind this process's other writers) the threads buy nothing: Python runs
one at a time, and every hand-over between the I/O thread and a worker costs a wake-up, a GIL
switch and a trigger pipe write. Measured with wrk on 2 cores (``benchmarks/bench_serve.py``),
a hello-world app on the threaded set-up served fewer requests at 32 clients than at 1, while
answered on the loop's own thread it serves about twice as many.

So with ``NEWSLETTER_SERVE_THREADS=0`` (the default on SQLite) the loop collects the requests
that became complete in one pass and answers them in order before it polls again. Slow
clients still cost nothing: reading and writing stay asynchronous, and the slot policy of
:mod:`newsletter.web.server` is unchanged. The price is that a request that blocks (a
database another process keeps locked) holds up the others for as long; the web app bounds
that wait (``newsletter.web.app.DB_BUSY_MS``), and PostgreSQL, whose every query is a network
round trip, keeps the pool of threads by default.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from waitress import wasyncore

log = logging.getLogger("waitress")


class InlineDispatcher:
    """Waitress's task dispatcher interface, with no threads: ``add_task`` only queues the
    channel (waitress calls it while holding the channel's request lock), and :meth:`loop`
    answers what is queued between polls."""

    def __init__(self) -> None:
        self.pending: deque[Any] = deque()
        self.parked: list[Any] = []  # queued, but their clients have not read the answers before
        self.loop_thread: int | None = None

    def add_task(self, channel: Any) -> None:
        self.pending.append(channel)

    def set_thread_count(self, count: int) -> None:
        """No threads to start (waitress's interface)."""

    def shutdown(self, cancel_pending: bool = True, timeout: float = 5) -> bool:
        while cancel_pending and self.pending:
            self.pending.popleft().cancel()
        while cancel_pending and self.parked:
            self.parked.pop().cancel()
        return True

    def _unpark(self) -> None:
        """Queue again the parked connections whose clients have read (or that have closed)."""
        for channel in list(self.parked):
            if not channel.connected or channel.total_outbufs_len <= channel.adj.outbuf_high_watermark:
                self.parked.remove(channel)
                self.pending.append(channel)

    def on_loop_thread(self) -> bool:
        return self.loop_thread == threading.get_ident()

    def serve(self, socket_map: dict, adj: Any) -> None:
        """Run :meth:`loop` with waitress's settings until Ctrl-C or SIGTERM, then cancel what is queued."""
        try:
            self.loop(socket_map, adj.asyncore_loop_timeout, adj.asyncore_use_poll)
        except (SystemExit, KeyboardInterrupt):
            self.shutdown()

    def loop(self, socket_map: dict, timeout: float, use_poll: bool) -> None:
        """Poll the sockets and answer the requests that became complete, until no socket is left.

        A connection whose unsent output is past waitress's high watermark waits (parked) until its
        client has read it down: pipelined requests to a client that reads nothing would otherwise
        each add their whole answer (hundreds from one 8 KB read), where waitress's worker waits."""
        poll = wasyncore.poll2 if use_poll else wasyncore.poll
        self.loop_thread = threading.get_ident()
        pending, parked = self.pending, self.parked
        while socket_map:
            poll(0.0 if pending else timeout, socket_map)
            if parked:
                self._unpark()
            while pending:
                channel = pending.popleft()
                if channel.connected and channel.total_outbufs_len > channel.adj.outbuf_high_watermark:
                    parked.append(channel)
                    continue
                try:
                    channel.service()  # a pipelined next request queues itself again
                except Exception:  # noqa: BLE001 - as waitress's worker threads do: logged, the loop goes on
                    log.exception("Exception when servicing %r", channel)
