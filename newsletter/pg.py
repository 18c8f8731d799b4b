"""The PostgreSQL backend's connection: the same calls the components make on SQLite.

The store and the ledger speak DB-API with ``?`` (and ``:name``) placeholders and manage
their transactions with explicit ``BEGIN … COMMIT``. :class:`PgConnection` takes exactly
those calls to psycopg 3, so one component's code serves both backends; what differs in
SQL lives behind named operations (:mod:`newsletter.dialect`) and in per-backend
migrations (:mod:`newsletter.pg_schema`).

* Placeholders are rewritten outside string literals; ``%`` is escaped for psycopg.
* ``BEGIN IMMEDIATE`` (SQLite's "take the write lock now") becomes ``BEGIN``: PostgreSQL
  locks rows, not the database.
* psycopg's integrity and operational errors are raised as :mod:`sqlite3`'s DB-API classes
  of the same name, so a caller catches one class whichever backend it runs on.

psycopg is imported here only: SQLite users never load it.
"""

from __future__ import annotations

import select
import sqlite3
import time
import weakref
from functools import lru_cache
from typing import Any, Callable, Iterable, Iterator, Sequence

import psycopg
from psycopg import pq

from newsletter.dburl import redact
from newsletter.errors import ConfigError

BACKEND = "postgresql"
CONNECT_TIMEOUT_S = 10


@lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """SQLite-style placeholders (``?``, ``:name``) as psycopg's (``%s``, ``%(name)s``);
    a literal ``%`` doubled. String literals and ``::`` casts are left alone."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch == "'":
            end = sql.find("'", i + 1)
            while end != -1 and end + 1 < n and sql[end + 1] == "'":  # '' inside a literal
                end = sql.find("'", end + 2)
            end = n - 1 if end == -1 else end
            out.append(sql[i:end + 1].replace("%", "%%"))
            i = end + 1
            continue
        if ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        elif ch == ":" and i + 1 < n and (sql[i + 1].isalpha() or sql[i + 1] == "_") and (i == 0 or sql[i - 1] != ":"):
            j = i + 1
            while j < n and (sql[j].isalnum() or sql[j] == "_"):
                j += 1
            out.append(f"%({sql[i + 1:j]})s")
            i = j
            continue
        else:
            out.append(ch)
        i += 1
    return "".join(out)


class Row(tuple):
    """A result row read by position or by column name, as :class:`sqlite3.Row` is."""

    _names: tuple[str, ...] = ()

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names.index(key))
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._names)


@lru_cache(maxsize=256)
def _row_class(names: tuple[str, ...]) -> type[Row]:
    """One class per column list, made once: a class made per statement is a reference cycle
    that only the garbage collector frees, and its collections are pauses a busy server feels."""
    return type("Row", (Row,), {"_names": names, "__slots__": ()})


def _row_factory(cursor: psycopg.Cursor) -> Any:
    return _row_class(tuple(c.name for c in cursor.description or ()))


class _Cursor:
    """What ``execute`` returns: rows to fetch or iterate, and ``rowcount``."""

    def __init__(self, cur: psycopg.Cursor) -> None:
        self._cur = cur
        self.rowcount = cur.rowcount

    def fetchone(self) -> Row | None:
        return self._cur.fetchone() if self._cur.description else None

    def fetchall(self) -> list[Row]:
        return self._cur.fetchall() if self._cur.description else []

    def __iter__(self) -> Iterator[Row]:
        return iter(self.fetchall())


def _db_api_error(exc: psycopg.Error) -> Exception:
    """The sqlite3 class of the same DB-API kind, carrying PostgreSQL's message."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, psycopg.IntegrityError):
        return sqlite3.IntegrityError(text)
    if isinstance(exc, psycopg.OperationalError):
        return sqlite3.OperationalError(text)
    if isinstance(exc, psycopg.ProgrammingError):
        return sqlite3.OperationalError(text)  # what sqlite3 raises for bad SQL or a missing table
    return sqlite3.DatabaseError(text)


class PgConnection:
    """A psycopg connection in autocommit mode, driven like the SQLite one."""

    backend = BACKEND

    def __init__(self, raw: psycopg.Connection, url: str) -> None:
        self.raw = raw
        self.where = redact(url)
        self._url = url  # for sibling(); never shown (messages use ``where``)

    def sibling(self) -> "PgConnection":
        """Another session on the same database, as the same role (a transaction of its own)."""
        return connect(self._url)

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != pq.TransactionStatus.IDLE

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> _Cursor:
        statement = sql.strip()
        if statement.upper() == "BEGIN IMMEDIATE":
            statement = "BEGIN"
        try:
            # Always with params (empty ones too): psycopg reads ``%%`` as ``%`` only when it formats.
            cur = self.raw.execute(translate(statement), params, prepare=False)
        except psycopg.Error as exc:
            raise _db_api_error(exc) from None
        return _Cursor(cur)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            with self.raw.cursor() as cur:
                cur.executemany(translate(sql.strip()), list(rows))
        except psycopg.Error as exc:
            raise _db_api_error(exc) from None

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> "PgConnection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: How every connection is opened, pooled or not: autocommit (the components say BEGIN), rows by name.
_CONNECT_KWARGS: dict[str, Any] = {"autocommit": True, "row_factory": _row_factory, "connect_timeout": CONNECT_TIMEOUT_S}


def _configure(raw: psycopg.Connection) -> None:
    raw.execute("SET TIME ZONE 'UTC'")


def connect(url: str) -> PgConnection:
    """Open ``url`` (``postgresql://user@host:port/db``). The password comes from the URL,
    ``PGPASSWORD`` or ``~/.pgpass`` (libpq reads the last two); an error names the database
    with the password hidden."""
    try:
        raw = psycopg.connect(url, **_CONNECT_KWARGS)
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot open database {redact(url)}: {redact(reason)}") from None
    _configure(raw)
    return PgConnection(raw, url)


#: A pooled connection idle longer than this is checked with a round trip when borrowed; one used
#: more recently is checked only by looking at its socket (see :func:`_looks_alive`).
IDLE_CHECK_S = 10.0


def _server_spoke(raw: psycopg.Connection) -> bool:
    """Whether an idle connection's socket has something to read: on an idle session that is
    the server's goodbye (a terminated backend's FATAL, a restart's closed socket). One poll, no round trip."""
    try:
        fd = raw.pgconn.socket
    except psycopg.Error:
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


class Pool:
    """`serve`'s connections on PostgreSQL (psycopg-pool): a request borrows one for its length.

    Unlike one connection per thread kept for ever, a connection the server closed (a restart,
    a failover, an idle timeout) is found and replaced when borrowed, so a request never
    inherits a dead one; and the count is bounded however many threads ask. The check costs a
    round trip only for a connection idle longer than ``idle_check`` seconds (a firewall may
    have dropped it silently) or whose socket shows the server spoke; a connection given back
    moments ago is checked by one poll of its socket, so a busy server's borrow costs no round
    trip. A borrow that finds none free within ``wait`` seconds is SQLite's "database is busy",
    which the web app answers with 503 and Retry-After."""

    def __init__(self, url: str, size: int, *, wait: float, idle_check: float = IDLE_CHECK_S,
                 now: Callable[[], float] = time.monotonic) -> None:
        from psycopg_pool import ConnectionPool

        self.url, self.wait, self.idle_check, self._now = url, wait, idle_check, now
        self._returned: "weakref.WeakKeyDictionary[psycopg.Connection, float]" = weakref.WeakKeyDictionary()
        self._pool = ConnectionPool(url, kwargs=_CONNECT_KWARGS, configure=_configure, check=self._check,
                                    min_size=1, max_size=size, timeout=wait, name="newsletter-serve", open=True)

    def _check(self, raw: psycopg.Connection) -> None:
        """psycopg-pool's check on borrow: raises for a connection that is gone (the pool then replaces it)."""
        from psycopg_pool import ConnectionPool

        returned = self._returned.get(raw)
        if returned is None or self._now() - returned > self.idle_check or _server_spoke(raw):
            ConnectionPool.check_connection(raw)

    def borrow(self) -> psycopg.Connection:
        from psycopg_pool import PoolTimeout

        try:
            return self._pool.getconn()
        except PoolTimeout:
            raise sqlite3.OperationalError(f"database is busy: no connection to {redact(self.url)} "
                                           f"within {self.wait:g} s") from None

    def give_back(self, raw: psycopg.Connection) -> None:
        self._returned[raw] = self._now()
        self._pool.putconn(raw)  # rolled back first if a transaction was left open; dropped if broken

    def wrap(self, raw: psycopg.Connection) -> PgConnection:
        return PgConnection(raw, self.url)

    def close(self) -> None:
        self._pool.close()
