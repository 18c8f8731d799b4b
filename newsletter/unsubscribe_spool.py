"""The durable spool of unsubscribes that arrived while the database stayed locked.

The web app appends a one-click unsubscribe here (fsynced) rather than lose it; whoever
opens the database next applies it: the web app on its next request and at start, and
the delivery engine before it freezes a recipient list or resumes, so a send that starts
while an unsubscribe waits in the spool never mails that reader. One file beside the
database (``newsletter.db.unsubscribe-spool``), JSON lines; tokens are verified when applied.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import sqlite3
import threading
from datetime import datetime
from pathlib import Path

from newsletter.processes import pid_alive
from newsletter.store import SubscriberStore

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
    caller may still roll back: the spool file is gone once this returns."""
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
    text = taken.read_text(encoding="utf-8", errors="replace")
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


def _recover_orphans(path: Path) -> None:
    """A process killed while applying its taken spool (``<spool>.<pid>.<thread>``) left it
    behind: put its lines back. Applying a line twice is harmless (unsubscribing is idempotent)."""
    for orphan in path.parent.glob(glob.escape(path.name) + ".*"):
        pid = orphan.name[len(path.name) + 1:].partition(".")[0]
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        try:
            data = orphan.read_bytes()
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


def _append(path: Path, data: bytes) -> None:
    with _lock:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
