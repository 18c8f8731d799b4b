"""`newsletter db copy --to postgresql://…`: move a SQLite publication into an empty PostgreSQL
database, table by table in the order of :data:`newsletter.schema.COMPONENTS`, and check the
count of every table afterwards.

Everything is copied as stored: subscribers with every status and consent record, the
suppression list (it is those rows), the former addresses that keep old links working, the
ledger history, feedback events and replies, and the signup outbox. Ids are kept, so every
link already mailed (its token names the reader's id) still works against the new database.
The copy runs in one transaction on the target: it lands whole or not at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from newsletter.db import table_columns
from newsletter.dburl import is_postgres, redact
from newsletter.errors import ConfigError, InputError
from newsletter.schema import COMPONENTS, open_database

#: Tables whose id PostgreSQL gives out (an identity column): its next value follows the copied rows.
_IDENTITY = {"subscribers": "id", "deliveries": "id", "signup_outbox": "id"}


class CopyReport(NamedTuple):
    target: str                      # the URL, password hidden
    counts: dict[str, int]           # rows per table, equal on both sides


def copy_database(source: Path, target_url: str) -> CopyReport:
    """Copy ``source`` (SQLite) into the empty PostgreSQL database ``target_url``."""
    if not is_postgres(target_url):
        raise InputError(f"--to {redact(target_url)!r}: give a postgresql://user@host:port/dbname URL")
    if not Path(source).is_file():
        raise InputError("no SQLite database to copy", path=source)
    src = open_database(source)  # brought up to this tool's schema first, as any command would
    dst = open_database(target_url)
    try:
        _refuse_non_empty(dst)
        dst.execute("BEGIN")
        try:
            counts = {t: _copy_table(src, dst, t) for c in COMPONENTS for t in c.tables}
            _check_counts(dst, counts)
        except BaseException:
            dst.execute("ROLLBACK")
            raise
        dst.execute("COMMIT")
    finally:
        src.close()
        dst.close()
    return CopyReport(redact(target_url), counts)


def _refuse_non_empty(dst: Any) -> None:
    filled = [t for c in COMPONENTS for t in c.tables if dst.execute(f'SELECT 1 FROM "{t}" LIMIT 1').fetchone()]
    if filled:
        raise InputError(f"the target database is not empty ({', '.join(filled)} have rows); "
                         "db copy only fills an empty database, and changed nothing")


def _copy_table(src: Any, dst: Any, table: str) -> int:
    """Every row of ``table`` through COPY; returns how many."""
    columns = table_columns(src, table)
    missing = set(columns) - set(table_columns(dst, table))
    if missing:
        raise ConfigError(f"{table}: the target has no column {', '.join(sorted(missing))}; "
                          "upgrade newsletter where the target was created")
    names = ", ".join(f'"{c}"' for c in columns)
    n = 0
    with dst.raw.cursor() as cur, cur.copy(f'COPY "{table}" ({names}) FROM STDIN') as copy:
        for row in src.execute(f'SELECT {names} FROM "{table}"'):
            copy.write_row(tuple(row))
            n += 1
    if table in _IDENTITY:
        dst.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{_IDENTITY[table]}'), "
                    f"GREATEST((SELECT MAX({_IDENTITY[table]}) FROM \"{table}\"), 1))")
    return n


def _check_counts(dst: Any, counts: dict[str, int]) -> None:
    for table, expected in counts.items():
        got = dst.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
        if got != expected:
            raise ConfigError(f"{table}: {got} rows arrived of {expected}; nothing was copied")
