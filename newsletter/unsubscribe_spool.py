"""The durable spool of unsubscribes that arrived while the database stayed locked.

The web app appends a one-click unsubscribe here (fsynced) rather than lose it. Every reader
of subscriber state applies it first: the web app at start and before each request, the
delivery engine before it freezes a recipient list or resumes, and every command that opens
the store through :func:`open_store` (``subscribers list``, ``count``, ``export``, ``import``,
``send --dry-run`` and ``--test``, the inbox), so nothing shows or mails a reader as
subscribed whose unsubscribe waits in the spool. One file beside the
database (``newsletter.db.unsubscribe-spool``), JSON lines; tokens are verified when applied.
"""

from __future__ import annotations

import fcntl
import glob
import json
import logging
import os
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter.db import backend, is_locked
from newsletter.errors import DatabaseLockedError
from newsletter.processes import pid_alive
from newsletter.store import SubscriberStore

if TYPE_CHECKING:
    from newsletter.config import Settings

log = logging.getLogger("newsletter.spool")
_lock = threading.Lock()

SPOOL_MAX_BYTES = 4 * 1024 * 1024  # ~30,000 unsubscribes
SUFFIX = ".unsubscribe-spool"


def spool_path(db_path: Path | str) -> Path:
    """The spool file of the database at ``db_path``, beside the real file: SQLite resolves
    symbolic links (and relative paths) the same way, so the web app and the engine agree."""
    db_path = Path(db_path).resolve()
    return db_path.with_name(db_path.name + SUFFIX)


def db_file(conn: sqlite3.Connection) -> Path | None:
    """The file behind ``conn``'s main database (None for an in-memory one)."""
    for row in conn.execute("PRAGMA database_list").fetchall():
        if row[1] == "main":
            return Path(row[2]) if row[2] else None
    return None


def spool_full(db_path: Path | str) -> bool:
    try:
        return spool_path(db_path).stat().st_size > SPOOL_MAX_BYTES
    except FileNotFoundError:
        return False


def spool_unsubscribe(db_path: Path | str, token: str, reason: str, at: datetime) -> None:
    """Keep one unsubscribe on disk (the caller checked the token's shape)."""
    line = json.dumps({"token": token, "reason": reason, "at": at.isoformat()}) + "\n"
    _append(spool_path(db_path), line.encode())
    log.warning("database locked; unsubscribe spooled to %s", spool_path(db_path))


def apply_spool(store: SubscriberStore, secret: str, *, now: datetime, db_path: Path | str | None = None) -> int:
    """Apply spooled unsubscribes in one transaction of their own; returns how many verified.

    ``db_path`` defaults to the store's own file. Must not run inside a transaction the
    caller may still roll back: the spool file is gone once this returns. PostgreSQL has no spool."""
    if backend(store.conn) != "sqlite":
        return 0
    path_of_db = Path(db_path) if db_path is not None else db_file(store.conn)
    if path_of_db is None:
        return 0
    path = spool_path(path_of_db)
    _recover_orphans(path)
    if not path.exists():
        return 0
    with _lock:
        taken = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}")
        try:
            os.replace(path, taken)
        except FileNotFoundError:
            return 0
    text = _read_taken(taken).decode("utf-8", errors="replace")
    done = 0
    try:
        with store.transaction():
            for token, reason in _entries(text):
                sub = store.get_by_token(secret, token, "unsubscribe", now=now)
                if sub is not None:
                    store.unsubscribe(sub.id, reason + " (spooled)")
                    done += 1
    except BaseException:
        _append(path, text.encode())  # nothing was applied: put every line back for the next try
        taken.unlink()
        raise
    taken.unlink()
    return done


def open_store(settings: "Settings", *, now: datetime | None = None) -> SubscriberStore:
    """The subscriber store with every spooled unsubscribe applied: what a reader of subscriber
    state opens. A database locked past the busy timeout is a one-line
    :class:`DatabaseLockedError` (try again), never a list that still shows those readers.
    On PostgreSQL nothing is spooled (an unsubscribe never waits for a writer there)."""
    if not isinstance(target := settings.db_target, Path):
        return SubscriberStore.open(target)
    store = SubscriberStore.open(settings.db_path)
    try:
        apply_spool(store, str(settings.secret_key), now=now or datetime.now(timezone.utc), db_path=settings.db_path)
    except sqlite3.OperationalError as exc:
        store.close()
        if not is_locked(exc):
            raise
        raise DatabaseLockedError(f"database {settings.db_path} is locked, and unsubscribes wait in "
                                  f"{spool_path(settings.db_path).name}; try again in a moment") from None
    except BaseException:
        store.close()
        raise
    return store


def _recover_orphans(path: Path) -> None:
    """A process killed while applying its taken spool (``<spool>.<pid>.<thread>``) left it
    behind: put its lines back. Applying a line twice is harmless (unsubscribing is idempotent)."""
    for orphan in path.parent.glob(glob.escape(path.name) + ".*"):
        pid = orphan.name[len(path.name) + 1:].partition(".")[0]
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        try:
            data = _read_taken(orphan)
        except FileNotFoundError:  # another process recovered it first
            continue
        _append(path, data)
        orphan.unlink(missing_ok=True)


def _entries(text: str) -> list[tuple[str, str]]:
    out = []
    for line in text.splitlines():
        try:
            item = json.loads(line)
            out.append((str(item["token"]), str(item["reason"])[:100]))
        except (ValueError, KeyError, TypeError):
            continue
    return out


#: Times an append re-opens a spool that an applier took away meanwhile (each take is a rename).
APPEND_ATTEMPTS = 50


def _append(path: Path, data: bytes) -> None:
    """Append ``data`` durably. Several processes append (``serve``'s processes, a send's
    catch-up) while one may take the file away to apply it (a rename, then a read under the
    same ``flock``): an append that opened the file just before the rename would write into
    the taken copy after it was read, and be lost. So the append holds the ``flock`` while it
    checks that its file is still the spool, and opens the new one when it is not."""
    with _lock:
        for _ in range(APPEND_ATTEMPTS):
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    current = os.stat(path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    current = False
                if current:
                    os.write(fd, data)
                    os.fsync(fd)
                    return
            finally:
                os.close(fd)  # and the flock with it
        raise OSError(f"{path}: taken away {APPEND_ATTEMPTS} times while appending")


def _read_taken(path: Path) -> bytes:
    """A taken spool's whole content, read once every append that still had it open is done."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
