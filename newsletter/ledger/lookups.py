"""What other parts ask the ledger about mail already sent: which delivery a bounce, complaint
or reply is about (events, feedback), who an issue went to and at which address, which issues
the archive may publish, and recent sends for the complaint rate.
"""

import sqlite3
from datetime import datetime
from typing import Iterator

from newsletter.message_ids import issue_slug
from newsletter.states import REACHED_ROW_STATES, RowState, sql_list
from newsletter.timestamps import timestamp


def recent_deliveries(conn: sqlite3.Connection, since: datetime) -> list[tuple[int, int]]:
    """(id, readers sent) of every real delivery started since ``since``: what a complaint rate
    over recent sends is measured against."""
    return [(row[0], row[1]) for row in conn.execute(
        f"SELECT d.id, (SELECT COUNT(*) FROM ledger l WHERE l.delivery_id=d.id AND l.state='{RowState.SENT}') FROM "
        "deliveries d "
        "WHERE d.test=0 AND d.started_at>=?", (timestamp(since),))]


def delivery_for_event(conn: sqlite3.Connection, subscriber_id: int, *, provider_id: str | None = None,
                       message_id: str | None = None) -> int | None:
    """The delivery a bounce, complaint or reply is about: the one whose ledger row for
    this reader carries ``provider_id``, else the latest one of the issue named in our
    Message-ID (``<slug.hash@domain>``), else None."""
    if provider_id:
        row = conn.execute("SELECT delivery_id FROM ledger WHERE subscriber_id=? AND provider_id=? "
                           "ORDER BY delivery_id DESC LIMIT 1", (subscriber_id, provider_id)).fetchone()
        if row:
            return row[0]
    slug = issue_slug(message_id or "")
    if slug:
        row = conn.execute("SELECT l.delivery_id FROM ledger l JOIN deliveries d ON d.id = l.delivery_id "
                           "WHERE l.subscriber_id=? AND d.slug=? ORDER BY l.delivery_id DESC LIMIT 1",
                           (subscriber_id, slug)).fetchone()
        if row:
            return row[0]
    return None


def sent_issue(conn: sqlite3.Connection, *, slug: str = "", subject: str = "") -> tuple[int, str] | None:
    """(id, slug) of the latest real (not test) delivery of an issue, named by its slug or by
    the subject it went out with (case-insensitive); None when we never sent it."""
    if slug:
        row = conn.execute("SELECT id, slug FROM deliveries WHERE slug=? AND test=0 ORDER BY id DESC LIMIT 1",
                           (slug,)).fetchone()
    elif subject:
        row = conn.execute("SELECT id, slug FROM deliveries WHERE test=0 AND lower(subject)=lower(?) "
                           "ORDER BY id DESC LIMIT 1", (subject,)).fetchone()
    else:
        row = None
    return (row[0], row[1]) if row else None


def issue_freezes(conn: sqlite3.Connection, slug: str) -> list[tuple[int, str | None]]:
    """Every real (not test) delivery of an issue, newest first: one issue can go out in several
    (a cancelled one, then another for those it had not reached), and mail about any may come back.
    Each with when its readers were frozen (None: not yet): rows are only added at the freeze, so
    while this list is unchanged, so are the issue's recipients."""
    return [(row[0], row[1]) for row in conn.execute(
        "SELECT id, frozen_at FROM deliveries WHERE slug=? AND test=0 ORDER BY id DESC", (slug,))]


def issue_addresses(conn: sqlite3.Connection, slug: str, subscriber_id: int) -> list[str]:
    """The addresses a reader had in the real deliveries of an issue, newest first (usually one)."""
    return [row[0] for row in conn.execute(
        "SELECT l.email FROM ledger l JOIN deliveries d ON d.id = l.delivery_id "
        "WHERE l.subscriber_id=? AND d.slug=? AND d.test=0 GROUP BY l.email ORDER BY MAX(l.delivery_id) DESC",
        (subscriber_id, slug))]


def latest_sent_slug(conn: sqlite3.Connection, subscriber_id: int) -> str | None:
    """The slug of the last issue this reader was sent (what a mailed unsubscribe answers)."""
    row = conn.execute("SELECT d.slug FROM ledger l JOIN deliveries d ON d.id = l.delivery_id WHERE l.subscriber_id=? "
                       f"AND l.state='{RowState.SENT}' AND d.test=0 ORDER BY l.delivery_id DESC LIMIT 1",
                       (subscriber_id,)).fetchone()
    return row[0] if row else None


def iter_recipients(conn: sqlite3.Connection, delivery_id: int) -> Iterator[tuple[int, str]]:
    """(subscriber id, address) of everyone a delivery was for, in id order."""
    yield from conn.execute("SELECT subscriber_id, email FROM ledger WHERE delivery_id=? ORDER BY subscriber_id",
                            (int(delivery_id),))


def subscriber_for_provider_id(conn: sqlite3.Connection, provider_id: str) -> int | None:
    """The reader a provider's message id was sent to, when exactly one ledger row carries it:
    for bounces that name an address we never sent to (a forwarder's, an alias). Rare, so
    no index; an id shared by several rows names nobody."""
    rows = conn.execute("SELECT DISTINCT subscriber_id FROM ledger WHERE provider_id=? LIMIT 2",
                        (provider_id,)).fetchall()
    return rows[0][0] if len(rows) == 1 else None


def sent_slugs(conn: sqlite3.Connection) -> set[str]:
    """Slugs of issues some reader may already have: a real (not test) delivery with a message
    handed to the transport. The web archive publishes these whatever their date or status,
    so every "read in your browser" link works."""
    rows = conn.execute("SELECT DISTINCT d.slug FROM deliveries d WHERE d.test = 0 AND EXISTS ("
                        "SELECT 1 FROM ledger l WHERE l.delivery_id = d.id"
                        f" AND l.state IN {sql_list(REACHED_ROW_STATES)})").fetchall()
    return {row[0] for row in rows}
