"""The inbox reader's place in each folder (the ``inbox_state`` table): the last UID handled, under
the folder's UIDVALIDITY. The SQL :mod:`newsletter.inbox` needs, kept apart from the IMAP code."""

from __future__ import annotations

import sqlite3


def checkpoint(conn: sqlite3.Connection, account: str, uidvalidity: int) -> int:
    """The last UID handled in this folder, 0 when the folder is new or its UIDVALIDITY changed."""
    row = conn.execute("SELECT uidvalidity, last_uid FROM inbox_state WHERE account=?", (account,)).fetchone()
    return row[1] if row and row[0] == uidvalidity else 0


def advance(conn: sqlite3.Connection, account: str, uidvalidity: int, uid: int) -> None:
    """Note ``uid`` as handled (inside the caller's transaction, with what handling it wrote)."""
    conn.execute("INSERT INTO inbox_state(account, uidvalidity, last_uid) VALUES(?,?,?) ON CONFLICT(account) "
                 "DO UPDATE SET uidvalidity=excluded.uidvalidity, last_uid=excluded.last_uid",
                 (account, uidvalidity, uid))
