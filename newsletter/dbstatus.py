"""What `newsletter db status` reports: the backend, each component's schema version against
this tool's, and the rows in every table. Reads only: it migrates nothing and locks nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from newsletter.db import backend, connect
from newsletter.dburl import redact
from newsletter.schema import COMPONENTS, available, migrations


class ComponentStatus(NamedTuple):
    name: str
    version: int           # recorded in the database (0: never migrated)
    known: int | None      # this tool's newest; None when this backend has no migrations for it yet
    rows: dict[str, int]   # per table; absent tables are left out


class DbStatus(NamedTuple):
    backend: str
    where: str             # the file, or the URL with its password hidden
    components: tuple[ComponentStatus, ...]


def db_status(target: Path | str) -> DbStatus:
    if isinstance(target, Path) and not target.exists():  # nothing to read; and reading must not create it
        return DbStatus("sqlite", str(target), tuple(
            ComponentStatus(c.name, 0, len(migrations(c)), {}) for c in COMPONENTS))
    conn = connect(target)
    try:
        kind = backend(conn)
        recorded = _versions(conn)
        usable = {c.name for c in available(conn)}
        out = []
        for component in COMPONENTS:
            known = len(migrations(component)) if component.name in usable else None
            rows = {t: n for t in component.tables if (n := _count(conn, t)) is not None}
            out.append(ComponentStatus(component.name, recorded.get(component.name, 0), known, rows))
    finally:
        conn.close()
    return DbStatus(kind, redact(str(target)), tuple(out))


def _versions(conn: Any) -> dict[str, int]:
    if _count(conn, "schema_migrations") is None:  # a PostgreSQL database nothing has migrated yet
        return {}
    return {c: v for c, v in conn.execute("SELECT component, version FROM schema_migrations")}


def _count(conn: Any, table: str) -> int | None:
    """Rows in ``table``, or None when it does not exist (that component never ran here)."""
    if backend(conn) == "sqlite":
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone()
    else:
        found = conn.execute("SELECT to_regclass(?)", (table,)).fetchone()[0]
    if not found:
        return None
    return conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
