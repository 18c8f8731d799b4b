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

import gc
import ipaddress
import os
import signal
import sys
import threading
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Protocol, Sequence

from newsletter.config import Settings
from newsletter.dburl import is_postgres
from newsletter.errors import ConfigError

#: Seconds a refused request's connection keeps reading (and dropping) what the client still sends.
LINGER = 2.0


#: How long a thread may hold the GIL while another waits for it (Python's default: 5 ms). A request
#: thread waking from a SQLite call or the waiting writer lock, or waitress's I/O thread with a socket
#: ready, otherwise waits up to 5 ms behind a thread busy with Python code; while a writer holds the
#: database the interval is shorter still (newsletter.db.WRITER_SWITCH_INTERVAL).
SWITCH_INTERVAL = 0.001


#: ``serve``'s processes at most (each holds a SQLite connection, or a PostgreSQL pool, of its own).
MAX_PROCESSES = 16


def default_processes() -> int:
    """One ``serve`` process per core this process may run on, on SQLite (see :mod:`newsletter.web.prefork`)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_PROCESSES))


def _processes(settings: Settings, default: int) -> int:
    count = settings.integer("NEWSLETTER_SERVE_PROCESSES", default, minimum=1)
    if count > MAX_PROCESSES:
        raise ConfigError(f"NEWSLETTER_SERVE_PROCESSES must be at most {MAX_PROCESSES}")
    return count


#: Worker threads of ``serve`` on PostgreSQL by default (on SQLite: none, see :mod:`newsletter.web.inline`).
PG_THREADS = 4


@dataclass(frozen=True)
class ServerLimits:
    threads: int = 0                 # NEWSLETTER_SERVE_THREADS: worker threads; 0 answers on the loop's thread
    processes: int = 1               # NEWSLETTER_SERVE_PROCESSES: processes on one socket (newsletter.web.prefork)
    timeout: int = 20                # NEWSLETTER_SERVE_TIMEOUT: seconds to receive one request, or idle
    header_timeout: int = 10         # NEWSLETTER_SERVE_HEADER_TIMEOUT: seconds to receive a request's headers
    max_body: int = 1024 * 1024      # waitress's own cap; routes cap lower (16 KiB) with a 413
    max_header: int = 16 * 1024
    connections: int = 100           # NEWSLETTER_SERVE_CONNECTIONS
    per_client: int = 20             # NEWSLETTER_SERVE_PER_CLIENT: connections from one address
    trusted_proxies: Any = 0         # NEWSLETTER_TRUSTED_PROXIES: their connections are not capped per address

    @classmethod
    def from_settings(cls, settings: Settings) -> "ServerLimits":
        timeout = settings.integer("NEWSLETTER_SERVE_TIMEOUT", cls.timeout, minimum=1)
        # PostgreSQL: each query waits on the network, so threads overlap the waits (newsletter.web.inline);
        # SQLite: one process per core, each answering on its loop's thread (newsletter.web.prefork).
        postgres = is_postgres(settings.get("NEWSLETTER_DB"))
        threads, processes = (PG_THREADS, 1) if postgres else (cls.threads, default_processes())
        return cls(threads=settings.integer("NEWSLETTER_SERVE_THREADS", threads, minimum=0),
                   processes=_processes(settings, processes),
                   timeout=timeout,
                   header_timeout=settings.integer("NEWSLETTER_SERVE_HEADER_TIMEOUT", min(cls.header_timeout, timeout),
                                                   minimum=1),
                   connections=settings.integer("NEWSLETTER_SERVE_CONNECTIONS", cls.connections, minimum=2),
                   per_client=settings.integer("NEWSLETTER_SERVE_PER_CLIENT", cls.per_client, minimum=1),
                   trusted_proxies=settings.trusted_proxies)

    def per_process(self) -> "ServerLimits":
        """Each of ``processes`` processes' share of ``connections``, so that together they keep the
        bound set (each process sees only its own). ``per_client`` stays whole in each: the kernel
        does not spread one client's connections evenly, and a share of it would cut a browser's
        few keep-alive connections; one address still holds at most ``per_client`` of each share."""
        if self.processes <= 1:
            return self
        return replace(self, connections=max(2, self.connections // self.processes))

    def capped(self, peer: str) -> bool:
        """Whether ``peer``'s connections count against ``per_client``: not a proxy of ours,
        which carries many clients (with a count of proxies, any peer may be one)."""
        if isinstance(self.trusted_proxies, int):
            return self.trusted_proxies <= 0
        try:
            addr = ipaddress.ip_address(peer)
        except ValueError:
            return True
        return not any(addr in net for net in self.trusted_proxies)


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


def create_server(app: Callable, host: str, port: int, limits: ServerLimits,  # noqa: ANN201
                  sockets: list[Any] | None = None):
    """A started (listening) waitress server; call ``.run()`` to serve, ``.close()`` to stop.
    ``sockets``: listening sockets to serve instead of binding ``host``:``port`` (a child of
    :mod:`newsletter.web.prefork`)."""
    from waitress.adjustments import Adjustments
    from waitress.task import ThreadedTaskDispatcher

    from newsletter.web.inline import InlineDispatcher

    try:
        where: dict[str, Any] = {"sockets": sockets} if sockets else {"host": host, "port": port}
        adj = Adjustments(
            **where, threads=max(1, limits.threads), channel_timeout=limits.timeout, cleanup_interval=1,
            connection_limit=limits.connections, max_request_body_size=limits.max_body,
            max_request_header_size=limits.max_header, expose_tracebacks=False, ident="newsletter",
            clear_untrusted_proxy_headers=False)
    except ValueError:  # waitress resolves the host here: a name nobody knows, or an empty one
        raise ConfigError(f"cannot listen on {host!r} port {port}: not an address or host name of this machine "
                          "(use --host 127.0.0.1 behind a proxy)") from None
    dispatcher: Any = InlineDispatcher() if limits.threads == 0 else ThreadedTaskDispatcher()
    dispatcher.set_thread_count(limits.threads)
    socket_map: dict = {}
    from newsletter.web.guarded import GuardedMultiSocketServer, GuardedServer

    if sockets:
        servers = [GuardedServer(app, socket_map, _sock=sock, dispatcher=dispatcher, adj=adj, bind_socket=False,
                                 sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname())) for sock in sockets]
    else:
        servers = [GuardedServer(app, socket_map, dispatcher=dispatcher, adj=adj, sockinfo=info) for info in adj.listen]
    for server in servers:
        server.limits = limits
    if len(servers) == 1:
        server = servers[0]
    else:
        listen = [(s.effective_host, s.effective_port) for s in servers]
        server = GuardedMultiSocketServer(socket_map, adj, listen, dispatcher, servers[-1].log_info)
    server.listening = [s.socket for s in servers]  # what a child of newsletter.web.prefork inherits
    return server


def serve(app: Callable, host: str = "127.0.0.1", port: int = 8080, limits: ServerLimits | None = None,
          ready: Callable[[str], None] | None = None, spawn: Sequence[str] | None = None) -> None:
    """Serve until interrupted. Keep ``host`` on loopback behind a TLS-terminating proxy.
    ``spawn``: the command that starts one more process of this server on its socket
    (:mod:`newsletter.web.prefork`), run ``limits.processes - 1`` times."""
    from newsletter.web import logsummary, prefork

    limits = limits or ServerLimits()
    share = limits.per_process()
    if limits.processes > 1:
        from newsletter.db import share_writer_line

        share_writer_line()  # the processes' writes to one SQLite file queue, not sleep
    sys.setswitchinterval(SWITCH_INTERVAL)
    inherited = prefork.inherited_sockets()
    if inherited:
        prefork.die_with_parent()
    server = create_server(app, host, port, share, inherited)
    summary = logsummary.install()
    if threading.current_thread() is threading.main_thread():  # a service stop ends like Ctrl-C: counts written
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    children = None
    if not inherited and spawn and limits.processes > 1:
        children = prefork.Children(spawn, server.listening, limits.processes - 1)
    if ready and not inherited:
        address = server.effective_listen[0] if hasattr(server, "effective_listen") else (host, server.effective_port)
        how = f"{limits.processes} processes" if children else "1 process"
        ready(f"Serving on http://{host}:{address[1]}/ (waitress, {how}, Ctrl-C to stop)")
    gc.freeze()  # what start-up made (modules, templates, settings) lives as long as the server: a full
    # collection no longer walks it, so the rare one a request meets is a shorter pause
    try:
        if children:
            children.start()
        server.run()
    finally:
        if children:
            children.stop()
        server.close()
        core = getattr(app, "web_app", None)
        if core is not None:
            core.close()  # PostgreSQL: the pool's connections
        logsummary.uninstall(summary)
