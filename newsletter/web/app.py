"""The public WSGI app: a route table, per-thread store connections, and one error policy.

Routes are mounted with :meth:`WebApp.route`; every route gets the same body-size
limit (413), method check (405), security headers and error handling (a plain 4xx,
or a plain 500 that is logged, never a traceback). Another component adds its
endpoints with one line, e.g. ``app.route("/webhooks/<provider>", handler, ["POST"])``.

There is no global lock. On SQLite each thread has its own connection, opened lazily
(and again after a fork), so a slow client reading or sending a body holds nothing
that other requests need; SQLite's own locking orders the writes. On PostgreSQL each
request borrows a connection from a pool (:class:`newsletter.pg.Pool`) for its length.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from newsletter.clock import SYSTEM, Clock
from newsletter.config import Settings
from newsletter.db import backend, is_locked
from newsletter.dburl import is_postgres
from newsletter.schema import open_database
from newsletter.store import SubscriberStore
from newsletter.web.proxies import client_ip

log = logging.getLogger("newsletter.web")

MAX_BODY_BYTES = 16 * 1024
NOT_FOUND_BODY = "Not found\n"
DB_BUSY_MS = 2_000  # per attempt; a request retries a locked database a few times (see WebApp.write)
DB_ATTEMPTS = 4
POOL_WAIT_S = 10.0  # PostgreSQL: a request that finds no pooled connection free this long is answered 503
# (a connection the server dropped costs about a second to find broken when borrowed: after a restart,
# a request may meet every one of a full pool)

Handler = Callable[..., Response]


@dataclass(frozen=True)
class Route:
    rule: str
    handler: Handler
    methods: tuple[str, ...]
    max_body: int
    reads_subscribers: bool = True  # spooled unsubscribes are applied before the handler runs


def _shut(pool: Any, mailer: Any) -> None:
    """The mail thread first (it may borrow from the pool), then the pool."""
    if mailer is not None:
        mailer.stop()
    if pool is not None:
        pool.close()


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
        self.extensions: dict[str, Any] = {}  # per-feature state (signup limits, mail queue, ...)
        self._pool: Any = None  # PostgreSQL: newsletter.pg.Pool, opened at the first request
        self._pool_pid = 0
        self._pool_lock = threading.Lock()
        self._pooled_stores: "weakref.WeakKeyDictionary[Any, SubscriberStore]" = weakref.WeakKeyDictionary()

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
        """This thread's store: on SQLite one connection per thread and process; on PostgreSQL
        the connection this request borrowed (see :meth:`scope`), or outside a request (start-up,
        the signup mail thread) one of the thread's own."""
        local = self._local
        if getattr(local, "store", None) is None or local.pid != os.getpid():
            conn = open_database(self.store_path)
            if backend(conn) == "sqlite":
                conn.execute(f"PRAGMA busy_timeout={DB_BUSY_MS}")
            local.store, local.pid = SubscriberStore(conn), os.getpid()
        return local.store

    @contextmanager
    def scope(self) -> Iterator[None]:
        """One request's hold on the database. On PostgreSQL it borrows a pooled connection and
        gives it back at the end (rolled back if a transaction was left open); the store made
        on it is kept with it, so the schema check runs once per connection, not per request."""
        local = self._local
        if isinstance(self.store_path, Path) or getattr(local, "store", None) is not None:
            yield  # SQLite, or a thread that holds a connection of its own already
            return
        pool = self._postgres_pool()
        raw = pool.borrow()
        try:
            store = self._pooled_stores.get(raw)
            if store is None:
                store = self._pooled_stores[raw] = SubscriberStore(pool.wrap(raw))
            local.store, local.pid = store, os.getpid()
            yield
        finally:
            local.store = None
            pool.give_back(raw)

    def _postgres_pool(self) -> Any:
        """The pool, made at the first request (and again in a forked child): as many
        connections as serve has request threads, and one for the signup mail's thread. Made
        under a lock: the first requests arrive on several threads at once, and each making its
        own pool would multiply the connections the bound promises."""
        if self._pool is not None and self._pool_pid == os.getpid():
            return self._pool
        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():
                from newsletter import pg
                from newsletter.web.server import ServerLimits

                size = max(1, ServerLimits.from_settings(self.settings).threads) + 1  # 0: the loop thread answers
                self._pool, self._pool_pid = pg.Pool(str(self.store_path), size, wait=POOL_WAIT_S), os.getpid()
                # An app dropped unclosed (tests), or still open at exit, leaves no pool or mail thread behind.
                weakref.finalize(self, _shut, self._pool, self.extensions.get("signup", {}).get("mail"))
        return self._pool

    def release_own(self) -> None:
        """On PostgreSQL, close this thread's own connection (start-up's): from here on the
        thread borrows from the pool like any request. On SQLite the connection is kept."""
        local = self._local
        if not isinstance(self.store_path, Path) and getattr(local, "store", None) is not None:
            local.store.close()
            local.store = None

    def close(self) -> None:
        """Stop the signup mail thread and close the pool (PostgreSQL); the server calls this when it stops."""
        own_pool = self._pool if self._pool_pid == os.getpid() else None
        _shut(own_pool, self.extensions.get("signup", {}).get("mail"))
        self._pool = None

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
            with self.scope():
                response = self.dispatch(request)
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
