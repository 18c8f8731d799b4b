"""Read models of the ledger: readers per state, the report a run ends with, and what
``status`` shows (counts, rate, ETA, why readers wait, who failed).

Only reads, from the counts the triggers keep (see :mod:`newsletter.ledger.schema`): this is
the module ``newsletter status`` loads, so it stays light.
"""

import sqlite3
from datetime import datetime
from typing import NamedTuple

from newsletter.errors import scrub
from newsletter.ledger.records import LEDGER_STATES, Delivery, get_delivery, lock_is_live
from newsletter.ledger.schema import retry_index
from newsletter.states import FAILED_ROW_STATES, OPEN_ROW_STATES, DeliveryState, RowState, sql_list
from newsletter.timestamps import from_epoch, parse_timestamp


def ledger_counts(conn: sqlite3.Connection, delivery_id: int) -> dict[str, int]:
    return _ledger_summary(conn, delivery_id)[0]


def _ledger_summary(conn: sqlite3.Connection, delivery_id: int) -> tuple[dict[str, int], str | None]:
    """Readers per state, and the stored time a reader was last finished (not pending, retry or
    sending), from the counts the triggers keep (see :data:`_DELIVERY_COUNTS`): eight rows, however
    many readers."""
    counts, last = dict.fromkeys(LEDGER_STATES, 0), None
    for state, n, latest in conn.execute("SELECT state, n, latest FROM delivery_counts WHERE delivery_id=?",
                                         (delivery_id,)):
        counts[state] = n
        if latest is not None and (last is None or latest > last):
            last = latest
    return counts, last


def open_rows(counts: dict[str, int]) -> int:
    """Readers still to be sent (pending, waiting for a retry, or in flight)."""
    return sum(counts[s] for s in OPEN_ROW_STATES)


def next_due(conn: sqlite3.Connection, delivery_id: int) -> float | None:
    """Wall seconds the next deferred reader is due (through the small partial index)."""
    return conn.execute(f"SELECT MIN(next_attempt_at) FROM ledger {retry_index(conn)}WHERE delivery_id=? "
                        f"AND state='{RowState.RETRY}'", (delivery_id,)).fetchone()[0]


def retry_summary(conn: sqlite3.Connection, delivery_id: int, top: int = 3) -> tuple[datetime | None,
                                                                                   list[tuple[str, int]]]:
    """When the next deferred reader is due, and the commonest reasons readers are waiting: replies
    grouped by what they share once the reader's address and ids are taken out (each server reply
    names its reader, so the exact texts never group), each shown that way."""
    from newsletter.smtp_status import reply_gist

    head = next_due(conn, delivery_id)
    groups: dict[str, list] = {}
    for text, n in conn.execute("SELECT COALESCE(last_error, 'waiting'), COUNT(*) FROM ledger WHERE delivery_id=? "
                                f"AND state='{RowState.RETRY}' GROUP BY 1 ORDER BY 1", (delivery_id,)):
        gist = reply_gist(text)
        group = groups.setdefault(gist, [gist, 0])
        group[1] += n
    reasons = sorted(groups.values(), key=lambda g: (-g[1], g[0]))[:top]
    return from_epoch(head), [(scrub(text, 120), n) for text, n in reasons]


def _next_retry(conn: sqlite3.Connection, d: Delivery,
                counts: dict[str, int]) -> tuple[datetime | None, list[tuple[str, int]]]:
    """When the delivery goes on, and why readers wait: a deferred delivery's resume time
    (the daily cap defers past the next retry) wins over the next retry's."""
    next_retry, reasons = retry_summary(conn, d.id) if counts[RowState.RETRY] else (None, [])
    if d.state == DeliveryState.DEFERRED and d.resume_at is not None:
        next_retry = d.resume_at
    return next_retry, reasons


class DeliveryReport(NamedTuple):
    """What a delivery stands at, and what the last run did. Counts are the ledger's totals;
    ``*_this_run`` / ``*_resent`` / ``uncertain_reported`` are this run's."""

    delivery_id: int
    slug: str
    state: str
    total: int = 0
    sent: int = 0
    failed_permanent: int = 0
    failed_temporary: int = 0
    skipped: int = 0
    pending: int = 0              # every reader not final: pending, deferred (retry) or in flight
    deferred: int = 0             # of those, waiting for a retry
    uncertain: int = 0            # final: may or may not have been delivered, reported
    next_retry: datetime | None = None
    reasons: tuple[tuple[str, int], ...] = ()
    interrupted_resent: int = 0   # left mid-send by an earlier crash or kill, sent again this run
    uncertain_resent: int = 0     # answered "uncertain" this run, sent once more
    uncertain_reported: int = 0   # set 'uncertain' this run (not sent again)
    sent_this_run: int = 0
    elapsed: float = 0.0
    rate: float = 0.0
    note: str = ""

    @property
    def failed(self) -> int:
        return self.failed_permanent + self.failed_temporary


def make_report(conn: sqlite3.Connection, delivery_id: int, note: str = "", **run: object) -> DeliveryReport:
    """The one place a report is built: the ledger as it stands, plus what a run counted."""
    d = get_delivery(conn, delivery_id)
    c = ledger_counts(conn, d.id)
    next_retry, reasons = _next_retry(conn, d, c)
    return DeliveryReport(d.id, d.slug, d.state, total=sum(c.values()), sent=c[RowState.SENT],
                          failed_permanent=c[RowState.FAILED_PERMANENT], failed_temporary=c[RowState.GAVE_UP],
                          skipped=c[RowState.SKIPPED], pending=open_rows(c), deferred=c[RowState.RETRY],
                          uncertain=c[RowState.UNCERTAIN],
                          next_retry=next_retry, reasons=tuple(reasons), note=note or d.reason or "",
                          **run)  # type: ignore[arg-type]


def edition_counts(conn: sqlite3.Connection, delivery_id: int) -> dict[str, dict[str, int]]:
    """Readers per edition ("" the main one) and state, for ``status``: the other editions' rows
    through their partial index, the main edition's as the delivery's counts less theirs, so the
    main edition's readers (often all of them) are never scanned."""
    others: dict[str, dict[str, int]] = {}
    for edition, state, n in conn.execute("SELECT edition, state, COUNT(*) FROM ledger WHERE delivery_id=? "
                                          "AND edition<>'' GROUP BY edition, state ORDER BY edition",
                                          (int(delivery_id),)):
        others.setdefault(edition, dict.fromkeys(LEDGER_STATES, 0))[state] = n
    main = ledger_counts(conn, delivery_id)
    for counts in others.values():
        for state, n in counts.items():
            main[state] -= n
    return {"": main, **others} if any(main.values()) else others


class DeliveryStatus(NamedTuple):
    """A delivery with its counts, rate and ETA, for ``status``."""

    delivery: Delivery
    counts: dict[str, int]
    total: int
    sent: int
    failed: int
    remaining: int
    rate: float | None            # messages finished per second while it ran, None before any
    eta_seconds: float | None     # at that rate, for a running delivery
    sender: str | None            # "pid N on HOST" while a live process holds the lock
    next_retry: datetime | None = None              # when deferred readers are next tried
    reasons: tuple[tuple[str, int], ...] = ()       # commonest reasons readers are deferred

    @property
    def id(self) -> int:
        return self.delivery.id

    @property
    def skipped(self) -> int:
        return self.counts[RowState.SKIPPED]

    @property
    def deferred(self) -> int:
        return self.counts[RowState.RETRY]

    def as_row(self) -> tuple[str, ...]:
        """id, issue, state, total, sent, pending, failed, skipped, rate, ETA: for a table."""
        state = self.delivery.state + (f" ({self.sender})" if self.sender else "")
        rate = f"{self.rate:.1f}/s" if self.rate else "-"
        eta = "-"
        if self.eta_seconds is not None:
            minutes, seconds = divmod(int(self.eta_seconds), 60)
            eta = f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{seconds:02d}s"
        return (str(self.id), self.delivery.slug, state, str(self.total), str(self.sent), str(self.remaining),
                str(self.failed), str(self.skipped), rate, eta)


def delivery_status(conn: sqlite3.Connection, slug: str | None = None, *, limit: int = 20) -> list[DeliveryStatus]:
    """The most recent deliveries (of ``slug``, or all), newest first, with per-state counts."""
    sql, params = "SELECT * FROM deliveries", ()
    if slug is not None:
        sql, params = sql + " WHERE slug=?", (slug,)
    out = []
    for row in conn.execute(sql + " ORDER BY id DESC LIMIT ?", (*params, limit)).fetchall():
        d = Delivery.from_row(row)
        c, last = _ledger_summary(conn, d.id)
        remaining = open_rows(c)
        finished = sum(c.values()) - remaining
        rate = eta = None
        last_at = parse_timestamp(last)
        if d.started_at and last_at and finished:
            span = (last_at - d.started_at).total_seconds()
            rate = finished / span if span > 0 else None
        if d.state == DeliveryState.RUNNING and rate:
            eta = remaining / rate
        sender = f"pid {d.lock_pid} on {d.lock_host}" if lock_is_live(d) else None
        next_retry, reasons = _next_retry(conn, d, c)
        failed = c[RowState.FAILED_PERMANENT] + c[RowState.GAVE_UP]
        out.append(DeliveryStatus(d, c, sum(c.values()), c[RowState.SENT], failed, remaining, rate, eta, sender,
                                  next_retry, tuple(reasons)))
    return out


def failed_recipients(conn: sqlite3.Connection, delivery_id: int) -> list[tuple[str, str, str | None]]:
    """(email, state, last error) of everyone who needs attention: failed-* and uncertain."""
    return [(r[0], r[1], scrub(r[2]) if r[2] is not None else None) for r in conn.execute(
        f"SELECT email, state, last_error FROM ledger WHERE delivery_id=? AND state IN "
        f"{sql_list(FAILED_ROW_STATES)} ORDER BY subscriber_id", (int(delivery_id),))]


def last_error(conn: sqlite3.Connection, delivery_id: int) -> str | None:
    """The most recent error recorded on any reader of a delivery (scrubbed), for `status`."""
    row = conn.execute("SELECT last_error FROM ledger WHERE delivery_id=? AND last_error IS NOT NULL "
                       "ORDER BY updated_at DESC LIMIT 1", (int(delivery_id),)).fetchone()
    return scrub(row[0]) if row else None
