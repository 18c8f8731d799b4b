"""One-time tokens already seen (Mailgun's ``token``), so a captured request cannot be replayed.

Each token is kept with the hash of the body it came with. Mailgun's signature covers the
timestamp and token only, not the body, so the token binds the first body we saw to it: the
same token with the same body is Mailgun retrying an answer it lost (a 200 that changes
nothing), with any other body a forgery. Bounded: a token is kept only as long as its signed
timestamp could still pass the staleness check; older ones are pruned on every claim.
"""

from __future__ import annotations

import enum
import sqlite3
from datetime import datetime, timedelta

from newsletter.store import stamp



class Seen(enum.Enum):
    NEW = "new"                  # first time: claimed now
    SAME_BODY = "same-body"      # seen with this very body: the provider retrying
    OTHER_BODY = "other-body"    # seen with another body: a replay



def claim(conn: sqlite3.Connection, nonce: str, digest: str, now: datetime, *, keep: timedelta) -> Seen:
    """Record ``nonce`` with its body's ``digest``; say whether and how it was seen before.
    Call inside the request's transaction (a refused request rolls the claim back)."""
    conn.execute("DELETE FROM webhook_nonces WHERE seen_at < ?", (stamp(now - keep),))
    row = conn.execute("SELECT body_sha256 FROM webhook_nonces WHERE nonce=?", (nonce,)).fetchone()
    if row is None:
        conn.execute("INSERT INTO webhook_nonces(nonce, seen_at, body_sha256) VALUES(?, ?, ?)",
                     (nonce, stamp(now), digest))
        return Seen.NEW
    return Seen.SAME_BODY if row[0] == digest else Seen.OTHER_BODY
