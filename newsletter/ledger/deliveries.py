"""Whole deliveries, as the editor and the scheduler move them: find, list the open and the
due ones, hold, pause for the editor, cancel, and forget a reader's rows
(:mod:`newsletter.schedule` and the CLI decide; the SQL lives here).
"""

import sqlite3
from datetime import datetime

from newsletter.errors import InputError, scrub
from newsletter.ledger.records import OPEN_SQL, Delivery, get_delivery, lock_is_live
from newsletter.ledger.reports import ledger_counts, open_rows
from newsletter.ledger.schema import transaction
from newsletter.states import DeliveryState, RowState
from newsletter.timestamps import timestamp


def readers_to_send(conn: sqlite3.Connection, slug: str, *, retry_failed: bool = False) -> int | None:
    """How many readers the open delivery of ``slug`` still has to send (those whose retry window
    ran out too, with ``retry_failed``); None when there is none whose list is frozen yet."""
    row = conn.execute(f"SELECT id FROM deliveries WHERE slug=? AND test=0 AND state IN {OPEN_SQL} "
                       "AND frozen_at IS NOT NULL ORDER BY id DESC LIMIT 1", (slug,)).fetchone()
    if row is None:
        return None
    counts = ledger_counts(conn, row[0])
    return open_rows(counts) + (counts[RowState.GAVE_UP] if retry_failed else 0)


def hold(conn: sqlite3.Connection, delivery_id: int, reason: str) -> None:
    """Hold a delivery for the editor, with the reason ``status`` shows: nobody more is sent
    until `newsletter resume` (a worker or cron dispatch never picks a held delivery up).
    For what only the editor can fix: the server refused our sender (HELO name, login,
    relay), a complaint or bounce rate past its limit. Readers keep their rows as they are.
    Runs inside the caller's transaction."""
    conn.execute(f"UPDATE deliveries SET state='{DeliveryState.HELD}', reason=?, resume_at=NULL, finished_at=NULL "
                 "WHERE id=?",
                 (scrub(reason), delivery_id))


def open_delivery_id(conn: sqlite3.Connection, slug: str) -> int | None:
    """The unfinished (scheduled, running, paused, deferred or held) delivery of an issue, if any."""
    row = conn.execute(f"SELECT id FROM deliveries WHERE slug=? AND test=0 AND state IN {OPEN_SQL}",
                       (slug,)).fetchone()
    return row[0] if row else None


def wait_for_editor(conn: sqlite3.Connection, delivery_id: int) -> None:
    """A send the editor stopped by hand stays stopped: no worker or cron dispatch picks
    it up again; only `newsletter send` or `resume` continues it."""
    with transaction(conn):
        conn.execute("UPDATE deliveries SET resume_at=NULL WHERE id=? AND "
                     f"state='{DeliveryState.PAUSED}'", (delivery_id,))


def hold_for_editor(conn: sqlite3.Connection, delivery_id: int, reason: str) -> None:
    """An editor's send that could not start (the transport or a setting refused, nobody was
    contacted) leaves its delivery paused, not ``running``: a worker or cron dispatch would
    otherwise send the whole issue on its own. `newsletter send` or `resume` continues it.
    A delivery another live process is sending is left alone."""
    with transaction(conn):
        if lock_is_live(get_delivery(conn, delivery_id)):  # another process is sending it right now
            return
        conn.execute(f"UPDATE deliveries SET state='{DeliveryState.PAUSED}', resume_at=NULL, reason=? WHERE id=? AND "
                     f"state='{DeliveryState.RUNNING}'",
                     (scrub(reason), delivery_id))


def forget_subscriber(conn: sqlite3.Connection, subscriber_id: int) -> int:
    """Delete a subscriber's ledger rows (erasure requests), so the store can remove them.
    Returns how many rows went. Their deliveries' totals keep counting them."""
    with transaction(conn):
        return conn.execute("DELETE FROM ledger WHERE subscriber_id=?", (int(subscriber_id),)).rowcount


def list_open(conn: sqlite3.Connection) -> list[Delivery]:
    """Every delivery not finished; soonest send time first."""
    rows = conn.execute(f"SELECT * FROM deliveries WHERE state IN {OPEN_SQL} "
                        "ORDER BY send_at IS NULL, send_at, id").fetchall()
    return [Delivery.from_row(r) for r in rows]


def find_delivery(conn: sqlite3.Connection, slug_or_id: str | int) -> Delivery:
    """A delivery by id (``12`` or ``#12``), or the open (else latest) delivery of a slug."""
    text = str(slug_or_id).strip()
    if text.lstrip("#").isdigit() and len(text) < 19:
        return get_delivery(conn, int(text.lstrip("#")))
    row = conn.execute(f"SELECT * FROM deliveries WHERE slug=? ORDER BY state IN {OPEN_SQL} DESC, id DESC "
                       "LIMIT 1", (text,)).fetchone()
    if row is None:
        raise InputError(f"no delivery for {text!r}")
    return Delivery.from_row(row)


def set_state(conn: sqlite3.Connection, d: Delivery, state: str, reason: str, *, now: datetime | None = None) -> None:
    """Move a delivery that is not being sent (held, cancelled), if it is still as ``d`` saw it."""
    conn.execute("UPDATE deliveries SET state=?, reason=?, finished_at=COALESCE(?, finished_at) WHERE id=? "
                 "AND state=?", (state, scrub(reason), timestamp(now) if now else None, d.id, d.state))


def due_deliveries(conn: sqlite3.Connection, now: datetime) -> list[Delivery]:
    """Scheduled ones whose time has come (or whose stored time is unreadable), paused and
    deferred ones whose resume time has come, and running ones (whose sender may have died)."""
    stamp = timestamp(now)
    rows = conn.execute(
        f"SELECT * FROM deliveries WHERE test=0 AND ((state='{DeliveryState.SCHEDULED}' AND (send_at<=? OR "
        "length(send_at)<>27)) OR "
        f"(state IN ('{DeliveryState.PAUSED}','{DeliveryState.DEFERRED}') AND resume_at IS NOT NULL AND resume_at<=?) "
        f"OR state='{DeliveryState.RUNNING}') "
        "ORDER BY COALESCE(send_at, created_at), id", (stamp, stamp)).fetchall()
    return [Delivery.from_row(r) for r in rows]
