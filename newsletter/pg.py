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

import sqlite3
from functools import lru_cache
from typing import Any, Iterable, Iterator, Sequence

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


def _row_factory(cursor: psycopg.Cursor) -> Any:
    names = tuple(c.name for c in cursor.description or ())
    cls = type("Row", (Row,), {"_names": names, "__slots__": ()})
    return lambda values: cls(values)


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


def connect(url: str) -> PgConnection:
    """Open ``url`` (``postgresql://user@host:port/db``). The password comes from the URL,
    ``PGPASSWORD`` or ``~/.pgpass`` (libpq reads the last two); an error names the database
    with the password hidden."""
    try:
        raw = psycopg.connect(url, autocommit=True, row_factory=_row_factory, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot open database {redact(url)}: {redact(reason)}") from None
    conn = PgConnection(raw, url)
    conn.execute("SET TIME ZONE 'UTC'")
    return conn


class _PooledConnection(psycopg.Connection):
    """A pool's connection, which keeps what the web app built on it (its store, whose schema
    checks are done) for as long as the pool keeps the connection."""

    newsletter_store: Any = None


def web_pool(url: str, size: int) -> Any:  # psycopg_pool.ConnectionPool
    """The web app's connections to ``url``: at most ``size``, opened as :func:`connect` opens
    them (autocommit, UTC), each checked before it is lent, so a restarted server costs a
    reconnect instead of a failed request on every thread."""
    from psycopg_pool import ConnectionPool

    def configure(raw: psycopg.Connection) -> None:
        raw.execute("SET TIME ZONE 'UTC'")

    return ConnectionPool(url, connection_class=_PooledConnection, min_size=0, max_size=size, open=True,
                          kwargs={"autocommit": True, "row_factory": _row_factory, "connect_timeout": CONNECT_TIMEOUT_S},
                          configure=configure, check=ConnectionPool.check_connection, timeout=CONNECT_TIMEOUT_S,
                          name="newsletter-web")


def pooled(raw: Any, url: str) -> PgConnection:
    """A pool's connection driven like :func:`connect`'s."""
    return PgConnection(raw, url)
