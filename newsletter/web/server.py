"""``newsletter serve``: the app on waitress, a pure-Python production WSGI server.

Waitress reads requests asynchronously and hands a worker thread only a *complete*
request, so a slow client holds no worker. Its own timeout is for idle connections,
though: a client trickling a byte a second is never idle. :class:`DeadlineChannel`
therefore counts a request's receive time from its first byte, so headers or a body
that take longer than ``timeout`` seconds get the connection closed.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable

from newsletter.config import Settings


#: How long a thread may hold the GIL while another waits for it (Python's default: 5 ms). A request
#: thread waking from a SQLite call or the waiting writer lock, or waitress's I/O thread with a socket
#: ready, otherwise waits up to 5 ms behind a thread busy with Python code; while a writer holds the
#: database the interval is shorter still (newsletter.db.WRITER_SWITCH_INTERVAL).
SWITCH_INTERVAL = 0.001


@dataclass(frozen=True)
class ServerLimits:
    threads: int = 4                 # NEWSLETTER_SERVE_THREADS: bounded worker threads
    timeout: int = 20                # NEWSLETTER_SERVE_TIMEOUT: seconds to receive one request, or idle
    max_body: int = 1024 * 1024      # waitress's own cap; routes cap lower (16 KiB) with a 413
    max_header: int = 16 * 1024
    connections: int = 100           # NEWSLETTER_SERVE_CONNECTIONS

    @classmethod
    def from_settings(cls, settings: Settings) -> "ServerLimits":
        return cls(threads=settings.integer("NEWSLETTER_SERVE_THREADS", cls.threads, minimum=1),
                   timeout=settings.integer("NEWSLETTER_SERVE_TIMEOUT", cls.timeout, minimum=1),
                   connections=settings.integer("NEWSLETTER_SERVE_CONNECTIONS", cls.connections, minimum=1))


def _deadline_channel():  # noqa: ANN202 - built lazily so importing this module needs no waitress
    from waitress.channel import HTTPChannel

    class DeadlineChannel(HTTPChannel):
        """While a request is only partly received, its age (not the last byte's) is what the
        server's idle check sees, so a trickling client is cut off after ``channel_timeout``."""

        _started: float | None = None

        def received(self, data: bytes) -> bool:
            if self.request is None:
                self._started = time.time()
            result = super().received(data)
            if self.request is not None and self._started is not None:
                self.last_activity = self._started
            return result

    return DeadlineChannel


def create_server(app: Callable, host: str, port: int, limits: ServerLimits):  # noqa: ANN201
    """A started (listening) waitress server; call ``.run()`` to serve, ``.close()`` to stop."""
    from waitress.server import create_server as waitress_server

    server = waitress_server(
        app, host=host, port=port, threads=limits.threads, channel_timeout=limits.timeout,
        cleanup_interval=max(1, min(30, limits.timeout // 2)), connection_limit=limits.connections,
        max_request_body_size=limits.max_body, max_request_header_size=limits.max_header,
        expose_tracebacks=False, ident="newsletter", clear_untrusted_proxy_headers=False)
    server.channel_class = _deadline_channel()
    return server


def serve(app: Callable, host: str = "127.0.0.1", port: int = 8080, limits: ServerLimits | None = None,
          ready: Callable[[str], None] | None = None) -> None:
    """Serve until interrupted. Keep ``host`` on loopback behind a TLS-terminating proxy."""
    sys.setswitchinterval(SWITCH_INTERVAL)
    server = create_server(app, host, port, limits or ServerLimits())
    if ready:
        ready(f"Serving on http://{host}:{server.effective_port}/ (waitress, Ctrl-C to stop)")
    try:
        server.run()
    finally:
        server.close()
