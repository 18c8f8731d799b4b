"""One-time tokens already seen (Mailgun's ``token``), so a captured request cannot be replayed.

Bounded: a token is kept only as long as its signed timestamp could still pass the
staleness check; older ones are pruned on every claim.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

from newsletter.db import migrate

COMPONENT = "webhook_nonces"

MIGRATIONS: list[str] = [
    """CREATE TABLE webhook_nonces (
  nonce TEXT PRIMARY KEY,
  seen_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX webhook_nonces_seen ON webhook_nonces(seen_at)""",
]

_TS = "%Y-%m-%dT%H:%M:%S.%fZ"


def ensure_schema(conn: sqlite3.Connection) -> None:
    migrate(conn, COMPONENT, MIGRATIONS)


def claim(conn: sqlite3.Connection, nonce: str, now: datetime, *, keep: timedelta) -> bool:
    """Record ``nonce``; False when it was seen before. Call inside the request's transaction."""
    conn.execute("DELETE FROM webhook_nonces WHERE seen_at < ?",
                 ((now - keep).astimezone(timezone.utc).strftime(_TS),))
    cur = conn.execute("INSERT OR IGNORE INTO webhook_nonces(nonce, seen_at) VALUES(?, ?)",
                       (nonce, now.astimezone(timezone.utc).strftime(_TS)))
    return cur.rowcount == 1
