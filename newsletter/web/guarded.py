"""Waitress's server and connection, guarded against slow clients (see :mod:`newsletter.web.server`
for the policy; this module holds only what must subclass waitress, and is imported when
``serve`` starts, so importing the web app needs no waitress)."""

from __future__ import annotations

import logging
import socket
import time
from typing import Any, Iterable

from waitress.channel import HTTPChannel
from waitress.server import MultiSocketServer, TcpWSGIServer

from newsletter.web.inline import InlineDispatcher
from newsletter.web.server import LINGER, ServerLimits, overdue, victim

log = logging.getLogger("newsletter.web.server")


class GuardedChannel(HTTPChannel):
    """Remembers when the request it is receiving began (the first byte, or the
    connection for its first request) and whether it has served one before."""

    _started: float | None = None
    _served = False
    _linger = False                   # the request being answered was refused (413, 431, 400 …)
    _linger_until: float | None = None

    def received(self, data: bytes) -> bool:
        if self.request is None and not self.requests:
            self._started = time.time()
        return super().received(data)

    def service(self) -> None:
        if self.requests and self.requests[0].error is not None:
            self._linger = True  # before the answer goes out: the main thread may close at once
        super().service()
        self._served = True
        self._started = None if self.request is None else self._started

    # A refused request is closed while the client may still be sending (a 2 MB body to a 1 MB
    # limit): closing with unread input makes the kernel send a reset, and the client loses
    # our answer. So, as HTTP servers do, close our side first and read (and drop) what still
    # comes, for at most LINGER seconds, then close.
    def handle_close(self) -> None:
        if self._linger and self._linger_until is None and self.connected:
            try:
                self.socket.shutdown(socket.SHUT_WR)
            except OSError:
                return super().handle_close()
            self._linger_until = time.time() + LINGER
            self.will_close = self.close_when_flushed = False
            return None
        return super().handle_close()

    def readable(self) -> bool:
        return True if self._linger_until is not None else super().readable()

    def writable(self) -> bool:
        return False if self._linger_until is not None else super().writable()

    def handle_read(self) -> None:
        if self._linger_until is None:
            return super().handle_read()
        data = self.recv(64 * 1024)  # b"" once the client is done: wasyncore then closes
        if data and time.time() > self._linger_until:
            super().handle_close()
        return None

    def _flush_outbufs_below_high_watermark(self) -> None:
        # Answering on the loop's own thread, nobody else would flush while we waited: the
        # output beyond the watermark stays buffered (waitress spills it to a temporary file).
        if not isinstance(self.server.task_dispatcher, InlineDispatcher):
            super()._flush_outbufs_below_high_watermark()

    def busy(self) -> bool:
        if self.total_outbufs_len and time.time() - self.last_activity > self.server.limits.timeout:
            return False  # its client has taken none of our answer for that long: it waits on itself
        return bool(self.requests or self.total_outbufs_len or self.will_close or self.close_when_flushed)

    def waiting_since(self) -> float:
        if self.request is not None and self._started is not None:
            return self._started
        return self.last_activity if self._served else self.creation_time

    def in_headers(self) -> bool:
        return (self.request is None and not self._served) or (
            self.request is not None and not self.request.headers_finished)

class GuardedServer(TcpWSGIServer):
    """Waitress's TCP server with :class:`GuardedChannel` connections and the slot policy of
    :mod:`newsletter.web.server`; ``limits`` is set by :func:`newsletter.web.server.create_server`."""

    channel_class = GuardedChannel
    limits: ServerLimits = ServerLimits()

    def run(self) -> None:
        if not isinstance(self.task_dispatcher, InlineDispatcher):
            return super().run()
        return self.task_dispatcher.serve(self._map, self.adj)

    def pull_trigger(self) -> None:
        # A request answered on the loop's thread wakes nobody: the loop polls again next.
        dispatcher = self.task_dispatcher
        if not (isinstance(dispatcher, InlineDispatcher) and dispatcher.on_loop_thread()):
            super().pull_trigger()

    def readable(self) -> bool:
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        return self.accepting  # never stop accepting: a full house makes room (handle_accept)

    def maintenance(self, now: float) -> None:
        for channel in list(self.active_channels.values()):
            if channel._linger_until is not None and now > channel._linger_until:
                HTTPChannel.handle_close(channel)
            elif overdue(channel, now, self.limits):
                channel.will_close = True

    def handle_accept(self) -> None:
        try:
            accepted = self.accept()
            if accepted is None:
                return
            conn, addr = accepted
            self.set_socket_options(conn)  # waitress's TCP_NODELAY: without it every keep-alive answer waits ~40 ms on Nagle
        except OSError:
            return
        addr = self.fix_addr(addr)
        if not self._room_for(addr[0]):
            log.warning("connection slots full and all busy: refused a new connection from %s", addr[0])
            conn.close()
            return
        self.channel_class(self, conn, addr, self.adj, map=self._map)

    def _room_for(self, host: str) -> bool:
        """Make room for a new connection from ``host``: its own oldest waiting one goes
        when it is at ``per_client``, anyone's when the house is full. False: all busy."""
        if self.limits.capped(host):
            mine = [c for c in self._open() if c.addr[0] == host]
            if len(mine) >= self.limits.per_client and not self._make_room(mine):
                return False
        return len(self._open()) < self.limits.connections or self._make_room(self._open())

    def _open(self) -> list[Any]:
        return [c for c in self.active_channels.values() if not c.will_close]

    def _make_room(self, channels: Iterable[Any]) -> bool:
        chosen = victim(channels)
        if chosen is None:
            return False
        log.warning("connection slots full: closed the longest-waiting unfinished connection, from %s",
                    chosen.addr[0])  # summarised when repeated (newsletter.web.logsummary)
        chosen.handle_close()  # at once: the newcomer needs its slot now, not at the next loop pass
        return True


class GuardedMultiSocketServer(MultiSocketServer):
    """Waitress's server for several listening addresses (a host name with IPv4 and IPv6), whose
    loop answers requests on its own thread when its dispatcher is inline."""

    def run(self) -> None:
        if not isinstance(self.task_dispatcher, InlineDispatcher):
            return super().run()
        return self.task_dispatcher.serve(self.map, self.adj)  # serve() closes the sockets when it ends
