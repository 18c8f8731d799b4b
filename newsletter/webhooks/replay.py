"""One-time tokens already seen (Mailgun's ``token``), so a captured request cannot be replayed.

Bounded: a token is kept only as long as its signed timestamp could still pass the
staleness check; older ones are pruned on every claim.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta

from newsletter.db import migrate
from newsletter.store import stamp

COMPONENT = "webhook_nonces"

MIGRATIONS: list[str] = [
    """CREATE TABLE webhook_nonces (
  nonce TEXT PRIMARY KEY,
  seen_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX webhook_nonces_seen ON webhook_nonces(seen_at)""",
]



def ensure_schema(conn: sqlite3.Connection) -> None:
    migrate(conn, COMPONENT, MIGRATIONS)


def claim(conn: sqlite3.Connection, nonce: str, now: datetime, *, keep: timedelta) -> bool:
    """Record ``nonce``; False when it was seen before. Call inside the request's transaction."""
    conn.execute("DELETE FROM webhook_nonces WHERE seen_at < ?",
                 (stamp(now - keep),))
    cur = conn.execute("INSERT INTO webhook_nonces(nonce, seen_at) VALUES(?, ?) ON CONFLICT DO NOTHING",
                       (nonce, stamp(now)))
    return cur.rowcount == 1
