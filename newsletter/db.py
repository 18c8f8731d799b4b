"""SQLite connection and versioned migrations, shared by the store and the ledger.

Each component (``subscribers``, ``delivery``, ...) owns an ordered list of
migration scripts; the ``schema_migrations`` table records how far each has
been applied, so components evolve independently in one database file.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence, Union

from newsletter.dburl import is_postgres
from newsletter.errors import ConfigError

BUSY_TIMEOUT_MS = 10_000

#: A migration step: SQL statements separated by ";\n", or a function for what SQL alone cannot do.
Step = Union[str, Callable[[sqlite3.Connection], None]]


def backend(conn: object) -> str:
    """``sqlite`` or ``postgresql``: the one question SQL that differs between them asks."""
    return getattr(conn, "backend", "sqlite")


def table_columns(conn: object, table: str) -> list[str]:
    """The columns of ``table`` in their order, on either backend."""
    if backend(conn) == "sqlite":
        return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]  # type: ignore[attr-defined]
    return [r[0] for r in conn.execute(  # type: ignore[attr-defined]
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = ? ORDER BY ordinal_position", (table,))]


def is_locked(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite saying another connection holds the lock ("database is
    locked", "database table is locked", SQLITE_BUSY)."""
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


class FairLock:
    """A lock handed to its waiters in the order they came (FIFO), with a bounded wait.

    A plain lock wakes an arbitrary waiter (or lets the releaser take it straight back); this
    one hands ownership to the oldest waiter, so no request starves behind newer ones."""

    path = ""                  # the database file (writer_lock's)
    line_fd: int | None = None  # the line shared with other processes (share_writer_line), once opened

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiters: deque[threading.Lock] = deque()
        self._held = False
        self.commits = 0  # by its holders, since the last checkpoint (see write_transaction)

    def acquire(self, timeout: float) -> bool:
        with self._mutex:
            if not self._held:
                self._held = True
                return True
            baton = threading.Lock()
            baton.acquire()
            self._waiters.append(baton)
        try:
            if baton.acquire(timeout=timeout):
                return True  # released to us: ownership came with the baton
        except BaseException:  # Ctrl-C while waiting: leave the line, passing on what was handed to us
            if not self._leave(baton):
                self.release()
            raise
        return not self._leave(baton)  # handed over between the timeout and here: ours after all

    def _leave(self, baton: threading.Lock) -> bool:
        """Take ``baton`` out of the line; False when it was already handed over (we hold the lock)."""
        with self._mutex:
            if baton in self._waiters:
                self._waiters.remove(baton)
                return True
            return False

    def release(self) -> None:
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()  # still held: ownership passes to the oldest waiter
            else:
                self._held = False


_WRITERS: dict[tuple[int, str], FairLock] = {}
_WRITERS_LOCK = threading.Lock()


def writer_lock(path: Path | str) -> FairLock:
    """The one writer lock of this process for the database at ``path`` (per process: a forked
    child starts with its own)."""
    key = (os.getpid(), os.path.realpath(path))
    with _WRITERS_LOCK:
        lock = _WRITERS.get(key)
        if lock is None:
            lock = _WRITERS[key] = FairLock()
            lock.path = key[1]
        return lock


#: Whether this process's writers also queue with other processes' (see :func:`share_writer_line`).
_SHARED_LINE = False


def share_writer_line() -> None:
    """Make this process's writers wait in one line with the other processes that call this (the
    processes of ``serve``, :mod:`newsletter.web.prefork`): the holder of the process's writer
    lock also holds an ``flock`` on ``<database>-writers``, which the kernel hands to the next
    waiter the moment it is let go. Without it, a writer that meets another process's write is
    put to sleep by SQLite for 1, 2, 5 … ms, far longer than the write it waits for. Only
    processes that share the line wait in it; SQLite's own lock still orders them against the
    rest (a send, an import)."""
    global _SHARED_LINE
    _SHARED_LINE = True


def _line_file(writer: FairLock) -> int | None:
    """The descriptor of ``writer``'s line file, opened once per process; None when it cannot be
    (a read-only folder): SQLite's own lock then orders the processes."""
    if writer.line_fd is None and writer.path:
        try:
            writer.line_fd = os.open(f"{writer.path}-writers", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            writer.path = ""
    return writer.line_fd


class Connection(sqlite3.Connection):
    """A connection that knows its database's writer lock (see :func:`write_transaction`)."""

    writer: FairLock | None = None
    busy_seconds: float | None = None  # read once, at the first write (the web app sets its own)


#: Commits by one process's writers between the WAL checkpoints they run after leaving the lock.
#: Each takes a few pages, so this stays under SQLite's own trigger (1,000 pages), which would
#: otherwise run the checkpoint (and its fsyncs) inside a commit, with every other writer waiting.
CHECKPOINT_EVERY = 100


@contextmanager
def write_transaction(conn: sqlite3.Connection, *, one_statement: bool = False) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on any exception), queued behind this
    process's other writers to the same file.

    ``one_statement``: the block runs a single statement, which SQLite's autocommit makes a
    transaction of its own (its triggers included), so the writer skips the BEGIN and COMMIT
    calls while the line waits for it; each call lets the GIL go to another thread. Only on
    a connection in autocommit mode (``isolation_level=None``, as :func:`connect` opens them).
    On PostgreSQL (always autocommit, see :mod:`newsletter.pg`) it saves two round trips, and
    the rows the statement locks (a reader's, the counts its trigger keeps) are held only
    while it runs.

    SQLite itself makes a blocked writer sleep and retry (1, 2, 5 … 100 ms), so under a burst
    of concurrent requests writes waited far longer than they took, and out of order. Threads
    of one process now wait in line on a :class:`FairLock` and are woken the moment the writer
    before them commits; SQLite's busy timeout is left to order this process against others
    (a send, an import). A wait past the busy timeout is SQLite's own "database is locked"."""
    writer = getattr(conn, "writer", None)
    if writer is None:
        if one_statement and getattr(conn, "backend", "sqlite") == "postgresql":
            yield conn  # autocommit: the statement (its triggers too) is a transaction of its own
        else:
            yield from _transaction(conn)
        return
    begin = not (one_statement and conn.isolation_level is None)
    if conn.busy_seconds is None:
        conn.busy_seconds = conn.execute("PRAGMA busy_timeout").fetchone()[0] / 1000
    _quick_switching(True)  # from the wait on: a writer handed the line picks it up at once
    if not writer.acquire(timeout=conn.busy_seconds):
        _quick_switching(False)
        raise sqlite3.OperationalError("database is locked (waiting for this process's writers)")
    line = _line_file(writer) if _SHARED_LINE else None
    locked = False
    try:
        if line is not None:
            fcntl.flock(line, fcntl.LOCK_EX)  # the GIL is let go while the other processes' writer finishes
            locked = True
        if begin:
            yield from _transaction(conn)
        else:
            yield conn
        writer.commits += 1
        checkpoint = writer.commits >= CHECKPOINT_EVERY
        if checkpoint:
            writer.commits = 0
    finally:
        if locked:
            fcntl.flock(line, fcntl.LOCK_UN)
        _quick_switching(False)
        writer.release()
    if checkpoint:  # outside the lock: a passive checkpoint lets writers go on meanwhile
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.OperationalError:
            pass  # the write is committed; SQLite's own checkpoint, or the next of ours, catches up


#: The GIL switch interval while a writer holds or waits for the database. Each SQLite call lets
#: the GIL go, and so does the wait in line; a thread busy with Python code then keeps it for up to
#: the switch interval (5 ms by default) before the writer gets it back, with every other writer
#: waiting in line meanwhile. A short interval while the line moves gives it back within this much.
WRITER_SWITCH_INTERVAL = 0.0001
_switching = threading.Lock()
_holders = 0
_interval = 0.0


def _quick_switching(on: bool) -> None:
    """Shorten the switch interval while any writer holds or waits for a database; restore it after the last."""
    global _holders, _interval
    with _switching:
        if on:
            _holders += 1
            if _holders == 1:
                _interval = sys.getswitchinterval()
                sys.setswitchinterval(min(_interval, WRITER_SWITCH_INTERVAL))
        else:
            _holders -= 1
            if _holders == 0:
                sys.setswitchinterval(_interval)


def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def connect(path: Path | str) -> sqlite3.Connection:
    """Open the database in WAL mode with foreign keys on; a ``postgresql://`` URL opens
    PostgreSQL instead (:mod:`newsletter.pg`, driven with the same calls).

    ``isolation_level=None`` puts transactions in our hands (``BEGIN IMMEDIATE``
    where we write), so a crash never leaves a half-applied batch.
    """
    if is_postgres(path):
        from newsletter import pg

        return pg.connect(str(path))  # type: ignore[return-value]  # the same calls, see newsletter.pg
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000,
                               check_same_thread=False, factory=Connection)
        conn.writer = writer_lock(path)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(f"cannot open database: {exc}", path=path) from None
    conn.row_factory = sqlite3.Row
    try:
        # The busy timeout first: two processes opening a fresh file race for the WAL switch.
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        _switch_to_wal(conn)
        conn.execute("PRAGMA synchronous=NORMAL")  # durable at each WAL checkpoint; safe against process crashes
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise ConfigError(f"not a usable newsletter database: {exc}", path=path) from None
    return conn


def _switch_to_wal(conn: sqlite3.Connection, attempts: int = 100) -> None:
    """``journal_mode=WAL``, retried: on a fresh file SQLite answers a concurrent switch with
    "database is locked" at once, without waiting on the busy timeout (seen with threads)."""
    for attempt in range(attempts):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if not is_locked(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.01 * (1 + attempt % 5))


def migrate(conn: sqlite3.Connection, component: str, steps: Sequence[Step]) -> None:
    """Apply the not-yet-applied ``steps`` of ``component``, each in its own transaction.

    The version is read *inside* ``BEGIN IMMEDIATE``: two processes starting on a fresh
    database serialise here, and the second one finds the step already applied. A table
    rebuild (:data:`REBUILD_MARKER`) runs with foreign keys off, which SQLite only allows
    outside a transaction, and commits only if ``foreign_key_check`` finds nothing. An
    up-to-date schema (the usual case) is seen by a plain read first, so opening the
    database never waits for another process's write lock (a long import, a send).
    On PostgreSQL the component's steps for that backend run instead (:mod:`newsletter.pg_schema`).
    """
    if backend(conn) != "sqlite":
        from newsletter import pg_schema

        pg_schema.migrate(conn, component, steps)
        return
    while True:
        row = conn.execute("SELECT version FROM schema_migrations WHERE component=?", (component,)).fetchone()
        peek = row[0] if row else 0
        if peek == len(steps):  # up to date (versions only grow): no write lock needed to read the database
            return
        rebuild = peek < len(steps) and _is_rebuild(steps[peek])
        if rebuild:
            conn.execute("PRAGMA foreign_keys=OFF")
        try:
            if not _next_step(conn, component, steps, foreign_keys_off=rebuild):
                return
        finally:
            if rebuild:
                conn.execute("PRAGMA foreign_keys=ON")


#: A migration script starting with this line rebuilds a table (SQLite cannot alter a CHECK
#: constraint): it runs with foreign keys off, and commits only if ``foreign_key_check`` is clean.
REBUILD_MARKER = "-- rebuild"


def _is_rebuild(step: Step) -> bool:
    return isinstance(step, str) and step.lstrip().startswith(REBUILD_MARKER)


def _next_step(conn: sqlite3.Connection, component: str, steps: Sequence[Step], *, foreign_keys_off: bool) -> bool:
    """Apply one step in its own transaction; False when there was none left."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("SELECT version FROM schema_migrations WHERE component=?", (component,)).fetchone()
        current = row[0] if row else 0
        if current > len(steps):
            raise ConfigError(f"database schema for {component} is newer (v{current}) than this tool knows "
                              f"(v{len(steps)}); upgrade newsletter")
        if current == len(steps):
            conn.execute("COMMIT")
            return False
        if _is_rebuild(steps[current]) and not foreign_keys_off:
            conn.execute("ROLLBACK")  # another process moved on meanwhile: go round with foreign keys off
            return True
        _apply(conn, steps[current])
        if _is_rebuild(steps[current]) and conn.execute("PRAGMA foreign_key_check").fetchone() is not None:
            raise ConfigError(f"migration {component} v{current + 1} would break foreign keys; nothing changed")
        conn.execute("INSERT INTO schema_migrations(component, version) VALUES(?, ?) "
                     "ON CONFLICT(component) DO UPDATE SET version=excluded.version", (component, current + 1))
        conn.execute("COMMIT")
        return True
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _apply(conn: sqlite3.Connection, step: Step) -> None:
    if callable(step):
        step(conn)
        return
    for statement in step.split(";\n"):
        if statement.strip():
            conn.execute(statement)
