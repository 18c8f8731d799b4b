"""The public WSGI app: a route table, per-thread store connections, and one error policy.

Routes are mounted with :meth:`WebApp.route`; every route gets the same body-size
limit (413), method check (405), security headers and error handling (a plain 4xx,
or a plain 500 that is logged, never a traceback). Another component adds its
endpoints with one line, e.g. ``app.route("/webhooks/<provider>", handler, ["POST"])``.

There is no global lock. Each thread has its own SQLite connection, opened lazily
(and again after a fork), so a slow client reading or sending a body holds nothing
that other requests need; SQLite's own locking orders the writes.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from newsletter.clock import SYSTEM, Clock
from newsletter.config import Settings
from newsletter.db import is_locked
from newsletter.dburl import is_postgres
from newsletter.schema import migrate_all, open_database
from newsletter.store import SubscriberStore
from newsletter.web.proxies import client_ip

log = logging.getLogger("newsletter.web")

MAX_BODY_BYTES = 16 * 1024
NOT_FOUND_BODY = "Not found\n"
DB_BUSY_MS = 2_000  # per attempt; a request retries a locked database a few times (see WebApp.write)
DB_ATTEMPTS = 4

Handler = Callable[..., Response]


@dataclass(frozen=True)
class Route:
    rule: str
    handler: Handler
    methods: tuple[str, ...]
    max_body: int
    reads_subscribers: bool = True  # spooled unsubscribes are applied before the handler runs


def text_response(body: str, status: int) -> Response:
    return Response(body, status=status, mimetype="text/plain")


def not_found() -> Response:
    return text_response(NOT_FOUND_BODY, 404)


class WebApp:
    """The WSGI callable. Construct with :func:`newsletter.web.make_app`."""

    def __init__(self, settings: Settings, store_path: Path, *, clock: Clock = SYSTEM):
        self.settings, self.clock = settings, clock
        #: The SQLite file, or a PostgreSQL URL (no spool there: a write never waits for a sender).
        self.store_path: Path | str = store_path if is_postgres(store_path) else Path(store_path)
        self.trusted_proxies = settings.trusted_proxies
        self.routes: dict[str, Route] = {}
        self.url_map = Map(strict_slashes=False, merge_slashes=False)
        # Bound once, to a fixed server name: the Host header is the client's to choose, and no URL
        # we build depends on it (links use base_url). Matching takes the path as an argument and
        # changes nothing in the adapter, so every thread shares it.
        self._adapter = self.url_map.bind("localhost", url_scheme="http")
        self._local = threading.local()
        self._pool: tuple[int, Any] | None = None  # (pid, psycopg_pool.ConnectionPool) on PostgreSQL
        self._pool_lock = threading.Lock()
        #: Connections the pool may lend at once: serve's threads, the signup mail thread and one spare.
        self.pool_size = settings.integer("NEWSLETTER_SERVE_THREADS", 4, minimum=1) + 2
        self.extensions: dict[str, Any] = {}  # per-feature state (signup limits, mail queue, ...)

    # ---- routes ----------------------------------------------------------------------
    def route(self, rule: str, handler: Handler, methods: Iterable[str] = ("GET",), *,
              max_body: int = MAX_BODY_BYTES, reads_subscribers: bool = True) -> None:
        """Mount ``handler(app, request, **url_args) -> Response`` at ``rule``.
        GET routes answer HEAD too; ``max_body`` bounds the request body (413 beyond).
        A route that ``reads_subscribers`` sees spooled unsubscribes applied first."""
        endpoint = f"r{len(self.routes)}"
        self.routes[endpoint] = Route(rule, handler, tuple(methods), max_body, reads_subscribers)
        self.url_map.add(Rule(rule, endpoint=endpoint, methods=list(methods)))

    def owns(self, path: str) -> bool:
        """Whether ``path`` belongs to a route (it then wins over files of the web archive)."""
        try:
            self._adapter.match(path, method="GET")
        except NotFound:
            return False
        except HTTPException:
            return True
        return True

    # ---- the store -----------------------------------------------------------------
    def store(self) -> SubscriberStore:
        """This thread's store: on SQLite its own connection (one per thread and process); on
        PostgreSQL a connection the pool lends until :meth:`release` (each request's end)."""
        local = self._local
        if getattr(local, "store", None) is None or local.pid != os.getpid():
            if isinstance(self.store_path, Path):
                conn = open_database(self.store_path)
                conn.execute(f"PRAGMA busy_timeout={DB_BUSY_MS}")
                local.store = SubscriberStore(conn)
            else:
                local.store = self._lend()
            local.pid = os.getpid()
        return local.store

    def _lend(self) -> SubscriberStore:
        """A store on a connection from this process's pool (PostgreSQL), made once per connection."""
        from newsletter import pg

        with self._pool_lock:
            if self._pool is None or self._pool[0] != os.getpid():
                self._pool = (os.getpid(), pg.web_pool(str(self.store_path), self.pool_size))
            pool = self._pool[1]
        try:
            raw = pool.getconn()
        except Exception as exc:  # noqa: BLE001 - psycopg_pool.PoolTimeout, or the server is gone
            raise sqlite3.OperationalError(f"database busy: no connection to lend ({type(exc).__name__})") from None
        self._local.lent = (pool, raw)
        if raw.newsletter_store is None:  # as open_database would: migrated (or checked) once per connection
            conn = pg.pooled(raw, str(self.store_path))
            migrate_all(conn)
            raw.newsletter_store = SubscriberStore(conn)
        return raw.newsletter_store

    def release(self) -> None:
        """Give back the connection this thread was lent (PostgreSQL; nothing on SQLite)."""
        lent = getattr(self._local, "lent", None)
        if lent is not None:
            self._local.lent = self._local.store = None
            lent[0].putconn(lent[1])

    def write(self, fn: Callable[[SubscriberStore], Any]) -> Any:
        """Run ``fn`` with the store, retrying a locked database a bounded number of times.
        Raises the last ``sqlite3.OperationalError`` when it stays locked."""
        for attempt in range(1, DB_ATTEMPTS + 1):
            try:
                return fn(self.store())
            except sqlite3.OperationalError as exc:
                if not is_locked(exc) or attempt == DB_ATTEMPTS:
                    raise
                log.warning("database locked; retrying (%d/%d)", attempt, DB_ATTEMPTS)
                self.clock.sleep(0.25 * attempt)
        raise AssertionError("unreachable")

    def catch_up(self) -> None:
        """Apply unsubscribes spooled while the database was locked, before a handler reads
        subscriber state (cheap when there are none). Still locked: the spool waits for the
        next request, and the handler goes on (a POST that cannot write spools again)."""
        from newsletter.unsubscribe_spool import apply_spool

        if not self.spool_waiting():
            return
        try:
            apply_spool(self.store(), str(self.settings.secret_key), now=self.clock.now(), db_path=self.store_path)
        except sqlite3.OperationalError as exc:
            if not is_locked(exc):
                raise
            log.warning("database locked; spooled unsubscribes wait for the next request")

    def spool_waiting(self) -> bool:
        """Whether unsubscribes wait in the spool: one stat, the usual answer no (a crashed
        applier's leftovers are recovered at start)."""
        from newsletter.unsubscribe_spool import spool_path

        if not isinstance(self.store_path, Path):  # PostgreSQL: nothing is ever spooled
            return False
        spool = self.extensions.get("spool path")
        if spool is None:
            spool = self.extensions["spool path"] = spool_path(self.store_path)
        return os.path.exists(spool)

    def client_ip(self, request: Request) -> str:
        return client_ip(request.environ, self.trusted_proxies)

    # ---- WSGI ----------------------------------------------------------------------
    def dispatch(self, request: Request) -> Response:
        try:
            endpoint, args = self._adapter.match(request.path, method=request.method if request.method != "HEAD" else "GET")
        except NotFound:
            return not_found()
        except HTTPException as exc:  # 405 with Allow; redirects are never produced (no strict slashes)
            return exc.get_response()  # type: ignore[return-value]
        route = self.routes[endpoint]
        if route.reads_subscribers:
            self.catch_up()
        request.max_content_length = route.max_body
        request.max_form_memory_size = route.max_body
        return route.handler(self, request, **args)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        try:
            try:
                response = self.dispatch(request)
            finally:
                self.release()
        except HTTPException as exc:  # 413 for an oversized body, 400 for a malformed one
            response = text_response(f"{exc.code} {exc.name}\n", exc.code or 400)
        except Exception as exc:  # noqa: BLE001 - answered plainly, never shown
            # Only the first path segment in logs: the rest may be a reader's token.
            where = f"{request.method} /{request.path.split('/')[1][:40]}/..."
            if is_locked(exc):  # locked past the in-request retries: ours and brief, so 503, not 500
                log.warning("database locked; %s answered 503", where)
                response = text_response("Temporarily unavailable; please try again in a moment\n", 503)
                response.headers["Retry-After"] = "5"
            else:
                log.exception("error serving %s", where)
                response = text_response("Internal error\n", 500)
        return response(environ, start_response)
