"""SQLite connection and versioned migrations, shared by the store and the ledger.

Each component (``subscribers``, ``delivery``, ...) owns an ordered list of
migration scripts; the ``schema_migrations`` table records how far each has
been applied, so components evolve independently in one database file.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Sequence

from newsletter.errors import ConfigError

BUSY_TIMEOUT_MS = 10_000


def connect(path: Path | str) -> sqlite3.Connection:
    """Open the database in WAL mode with foreign keys on.

    ``isolation_level=None`` puts transactions in our hands (``BEGIN IMMEDIATE``
    where we write), so a crash never leaves a half-applied batch.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000,
                               check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(f"cannot open database: {exc}", path=path) from None
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # durable at each WAL checkpoint; safe against process crashes
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise ConfigError(f"not a usable newsletter database: {exc}", path=path) from None
    return conn


def migrate(conn: sqlite3.Connection, component: str, steps: Sequence[str]) -> None:
    """Apply the not-yet-applied ``steps`` of ``component``, each in its own transaction."""
    row = conn.execute("SELECT version FROM schema_migrations WHERE component=?", (component,)).fetchone()
    current = row[0] if row else 0
    if current > len(steps):
        raise ConfigError(f"database schema for {component} is newer (v{current}) than this tool knows "
                          f"(v{len(steps)}); upgrade newsletter")
    for version, script in enumerate(steps[current:], start=current + 1):
        rebuild = script.lstrip().startswith(REBUILD_MARKER)
        if rebuild:  # SQLite's 12-step table rebuild: foreign keys off outside the transaction
            conn.execute("PRAGMA foreign_keys=OFF")
        try:
            _apply(conn, component, version, script, check_foreign_keys=rebuild)
        finally:
            if rebuild:
                conn.execute("PRAGMA foreign_keys=ON")


#: A migration script starting with this line rebuilds a table (SQLite cannot alter a CHECK
#: constraint): it runs with foreign keys off, and commits only if ``foreign_key_check`` is clean.
REBUILD_MARKER = "-- rebuild"


def _apply(conn: sqlite3.Connection, component: str, version: int, script: str, *,
           check_foreign_keys: bool) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("SELECT version FROM schema_migrations WHERE component=?", (component,)).fetchone()
        if (row[0] if row else 0) >= version:  # another process applied it while we waited
            conn.execute("ROLLBACK")
            return
        for statement in script.split(";\n"):
            if statement.strip():
                conn.execute(statement)
        if check_foreign_keys and conn.execute("PRAGMA foreign_key_check").fetchone() is not None:
            raise ConfigError(f"migration {component} v{version} would break foreign keys; nothing changed")
        conn.execute("INSERT INTO schema_migrations(component, version) VALUES(?, ?) "
                     "ON CONFLICT(component) DO UPDATE SET version=excluded.version", (component, version))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
