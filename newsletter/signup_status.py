"""What became of signup mails that have not gone out: read-only, for ``subscribers list`` and ``status``.

Kept apart from :mod:`newsletter.signups` so a reading command neither migrates (a write lock,
refused while another process writes) nor pays for that module's imports at start-up. A database
whose signup outbox predates v3 (which keeps failures) has nothing to show.
"""

from __future__ import annotations

import sqlite3

_OUTBOX_KEEPS_FAILURES = 3  # the signup component's schema version that added the columns read here


def _readable(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT version FROM schema_migrations WHERE component='signup'").fetchone()
    return bool(row) and row[0] >= _OUTBOX_KEEPS_FAILURES


def mail_problems(conn: sqlite3.Connection) -> dict[int, str]:
    """Reader id → what happened to a signup mail not sent yet: waiting to retry, or given up
    after the retry window, with the last error."""
    if not _readable(conn):
        return {}
    out: dict[int, str] = {}
    for sid, kind, attempts, error, gave_up in conn.execute(
            "SELECT subscriber_id, kind, attempts, last_error, gave_up_at FROM signup_outbox"
            " WHERE attempts>0 ORDER BY id"):
        state = "not sent, gave up after the retry window" if gave_up else f"not sent yet, retrying ({attempts} tries)"
        out[sid] = f"{kind} mail {state}" + (f": {error}" if error else "")
    return out


def mail_counts(conn: sqlite3.Connection) -> tuple[int, int]:
    """(signup mails waiting to retry after a failure, signup mails given up)."""
    if not _readable(conn):
        return 0, 0
    retrying, gave_up = conn.execute(
        "SELECT coalesce(sum(CASE WHEN attempts>0 AND gave_up_at=0 THEN 1 ELSE 0 END), 0), "
        "coalesce(sum(CASE WHEN gave_up_at>0 THEN 1 ELSE 0 END), 0)"
        " FROM signup_outbox").fetchone()
    return retrying, gave_up
