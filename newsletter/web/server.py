"""``newsletter serve``: the app on waitress, a pure-Python production WSGI server.

Waitress reads requests asynchronously and hands a worker thread only a *complete*
request, so a slow client holds no worker. It does hold a connection slot, though, and
waitress stops accepting when its slots are full: 100 clients trickling a header byte a
second once kept every other request waiting for the idle timeout. So this server:

* bounds the time to receive a request's headers (``header_timeout``, counted from the
  connection or the request's first byte, never from the last byte) and the whole request
  (``timeout``), checked every second;
* never stops accepting: when all slots are taken, a new connection takes the slot of the
  client that has waited longest without sending a complete request (:func:`victim`), so a
  health check or a reader gets in at once; only when every slot is busy being answered
  is the newcomer closed;
* caps connections per client address (``per_client``) the same way: a client's new
  connection replaces its own longest-waiting one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol

from newsletter.config import Settings

log = logging.getLogger("newsletter.web.server")


@dataclass(frozen=True)
class ServerLimits:
    threads: int = 4                 # NEWSLETTER_SERVE_THREADS: bounded worker threads
    timeout: int = 20                # NEWSLETTER_SERVE_TIMEOUT: seconds to receive one request, or idle
    header_timeout: int = 10         # NEWSLETTER_SERVE_HEADER_TIMEOUT: seconds to receive a request's headers
    max_body: int = 1024 * 1024      # waitress's own cap; routes cap lower (16 KiB) with a 413
    max_header: int = 16 * 1024
    connections: int = 100           # NEWSLETTER_SERVE_CONNECTIONS
    per_client: int = 20             # NEWSLETTER_SERVE_PER_CLIENT: connections from one address

    @classmethod
    def from_settings(cls, settings: Settings) -> "ServerLimits":
        timeout = settings.integer("NEWSLETTER_SERVE_TIMEOUT", cls.timeout, minimum=1)
        return cls(threads=settings.integer("NEWSLETTER_SERVE_THREADS", cls.threads, minimum=1),
                   timeout=timeout,
                   header_timeout=settings.integer("NEWSLETTER_SERVE_HEADER_TIMEOUT", min(cls.header_timeout, timeout),
                                                   minimum=1),
                   connections=settings.integer("NEWSLETTER_SERVE_CONNECTIONS", cls.connections, minimum=2),
                   per_client=settings.integer("NEWSLETTER_SERVE_PER_CLIENT", cls.per_client, minimum=1))


class Waiting(Protocol):
    """What the slot policy needs to know of a connection."""

    def busy(self) -> bool: ...          # a complete request is queued or being answered, or output pending
    def waiting_since(self) -> float: ... # when it began waiting for the request it has not finished sending
    def in_headers(self) -> bool: ...     # still sending (or not yet begun) a request's headers


def overdue(channel: Waiting, now: float, limits: ServerLimits) -> bool:
    """Whether a connection has had longer than its limit to send what it owes."""
    if channel.busy():
        return False
    allowed = limits.header_timeout if channel.in_headers() else limits.timeout
    return now - channel.waiting_since() > allowed


def victim(channels: Iterable[Waiting]) -> Waiting | None:
    """The connection to close for a newcomer: the one waiting longest that is not busy."""
    idle = [c for c in channels if not c.busy()]
    return min(idle, key=lambda c: c.waiting_since()) if idle else None


def _server_classes(limits: ServerLimits):  # noqa: ANN202 - built lazily so importing this module needs no waitress
    from waitress.channel import HTTPChannel
    from waitress.server import TcpWSGIServer

    class GuardedChannel(HTTPChannel):
        """Remembers when the request it is receiving began (the first byte, or the
        connection for its first request) and whether it has served one before."""

        _started: float | None = None
        _served = False

        def received(self, data: bytes) -> bool:
            if self.request is None and not self.requests:
                self._started = time.time()
            return super().received(data)

        def service(self) -> None:
            super().service()
            self._served = True
            self._started = None if self.request is None else self._started

        def busy(self) -> bool:
            return bool(self.requests or self.total_outbufs_len or self.will_close or self.close_when_flushed)

        def waiting_since(self) -> float:
            if self.request is not None and self._started is not None:
                return self._started
            return self.last_activity if self._served else self.creation_time

        def in_headers(self) -> bool:
            return (self.request is None and not self._served) or (
                self.request is not None and not self.request.headers_finished)

    class GuardedServer(TcpWSGIServer):
        channel_class = GuardedChannel

        def readable(self) -> bool:
            now = time.time()
            if now >= self.next_channel_cleanup:
                self.next_channel_cleanup = now + self.adj.cleanup_interval
                self.maintenance(now)
            return self.accepting  # never stop accepting: a full house makes room (handle_accept)

        def maintenance(self, now: float) -> None:
            for channel in list(self.active_channels.values()):
                if overdue(channel, now, limits):
                    channel.will_close = True

        def handle_accept(self) -> None:
            try:
                accepted = self.accept()
            except OSError:
                return
            if accepted is None:
                return
            conn, addr = accepted
            addr = self.fix_addr(addr)
            if not self._room_for(addr[0]):
                SLOTS.note("refused", addr[0])
                conn.close()
                return
            self.channel_class(self, conn, addr, self.adj, map=self._map)

        def _room_for(self, host: str) -> bool:
            """Make room for a new connection from ``host``: its own oldest waiting one goes
            when it is at ``per_client``, anyone's when the house is full. False: all busy."""
            mine = [c for c in self._open() if c.addr[0] == host]
            if len(mine) >= limits.per_client and not self._make_room(mine):
                return False
            return len(self._open()) < limits.connections or self._make_room(self._open())

        def _open(self) -> list[Any]:
            return [c for c in self.active_channels.values() if not c.will_close]

        def _make_room(self, channels: Iterable[Any]) -> bool:
            chosen = victim(channels)
            if chosen is None:
                return False
            SLOTS.note("evicted", chosen.addr[0])
            chosen.handle_close()  # at once: the newcomer needs its slot now, not at the next loop pass
            return True

    return GuardedServer


class SlotLog:
    """Counts closed slow connections and refusals; logs at most one summary line a minute,
    so a flood of slow clients cannot flood the log."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.interval, self.clock = interval, clock
        self.counts: dict[str, int] = {}
        self.hosts: set[str] = set()
        self._next = 0.0

    def note(self, what: str, host: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1
        if len(self.hosts) < 1000:
            self.hosts.add(host)
        now = self.clock()
        if now >= self._next:
            self.flush()
            self._next = now + self.interval

    def flush(self) -> None:
        if self.counts:
            parts = ", ".join(f"{n} {what}" for what, n in sorted(self.counts.items()))
            log.warning("connection slots full: %s (from %d address(es)) to make room for new clients",
                        parts, len(self.hosts))
        self.counts.clear()
        self.hosts.clear()


SLOTS = SlotLog()


def create_server(app: Callable, host: str, port: int, limits: ServerLimits):  # noqa: ANN201
    """A started (listening) waitress server; call ``.run()`` to serve, ``.close()`` to stop."""
    from waitress.adjustments import Adjustments
    from waitress.server import MultiSocketServer
    from waitress.task import ThreadedTaskDispatcher

    adj = Adjustments(
        host=host, port=port, threads=limits.threads, channel_timeout=limits.timeout, cleanup_interval=1,
        connection_limit=limits.connections, max_request_body_size=limits.max_body,
        max_request_header_size=limits.max_header, expose_tracebacks=False, ident="newsletter",
        clear_untrusted_proxy_headers=False)
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    socket_map: dict = {}
    server_class = _server_classes(limits)
    servers = [server_class(app, socket_map, dispatcher=dispatcher, adj=adj, sockinfo=info) for info in adj.listen]
    if len(servers) == 1:
        return servers[0]
    listen = [(s.effective_host, s.effective_port) for s in servers]
    return MultiSocketServer(socket_map, adj, listen, dispatcher, servers[-1].log_info)


def serve(app: Callable, host: str = "127.0.0.1", port: int = 8080, limits: ServerLimits | None = None,
          ready: Callable[[str], None] | None = None) -> None:
    """Serve until interrupted. Keep ``host`` on loopback behind a TLS-terminating proxy."""
    server = create_server(app, host, port, limits or ServerLimits())
    if ready:
        address = server.effective_listen[0] if hasattr(server, "effective_listen") else (host, server.effective_port)
        ready(f"Serving on http://{host}:{address[1]}/ (waitress, Ctrl-C to stop)")
    try:
        server.run()
    finally:
        server.close()
