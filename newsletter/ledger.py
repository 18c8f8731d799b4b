"""The delivery ledger: deliveries, one row per recipient, locks and status.

This module owns the ``delivery`` tables and every query about them; the send
loop that moves rows through their states is :mod:`newsletter.delivery`.
Recipients are frozen into the ledger in one ``INSERT … SELECT`` when a
delivery starts, so the list never changes under a running send.
"""


from __future__ import annotations

import os
import socket
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator, Sequence

from newsletter.db import connect, migrate
from newsletter.errors import ContentChangedError, InputError
from newsletter.message import PreparedIssue
from newsletter.transports.base import Transport

COMPONENT = "delivery"

MIGRATIONS: list[str] = [
    # v1 — statements are separated by ";\n" (see newsletter.db.migrate)
    """CREATE TABLE deliveries (
  id INTEGER PRIMARY KEY,
  slug TEXT NOT NULL,
  issue_number INTEGER,
  content_hash TEXT NOT NULL,
  subject TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL CHECK (state IN ('scheduled','running','paused','done','cancelled','held')),
  created_at TEXT NOT NULL,
  send_at TEXT,
  started_at TEXT,
  finished_at TEXT,
  frozen_at TEXT,
  resume_at TEXT,
  reason TEXT,
  total INTEGER NOT NULL DEFAULT 0,
  last_batch_no INTEGER NOT NULL DEFAULT 0,
  lock_owner TEXT,
  lock_pid INTEGER,
  lock_host TEXT,
  lock_heartbeat TEXT,
  test INTEGER NOT NULL DEFAULT 0,
  transport TEXT
);
CREATE UNIQUE INDEX deliveries_one_open ON deliveries(slug)
  WHERE test = 0 AND state IN ('scheduled','running','paused','held');
CREATE INDEX deliveries_state ON deliveries(state, send_at);
CREATE TABLE ledger (
  delivery_id INTEGER NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
  subscriber_id INTEGER NOT NULL REFERENCES subscribers(id),
  email TEXT NOT NULL,
  name TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending','sending','sent','retry',
    'failed-temporary','failed-permanent','skipped','uncertain')),
  attempts INTEGER NOT NULL DEFAULT 0,
  last_error TEXT,
  provider_id TEXT,
  batch_no INTEGER,
  retry_batch INTEGER,
  next_attempt_at REAL,
  updated_at TEXT,
  PRIMARY KEY (delivery_id, subscriber_id)
) WITHOUT ROWID;
CREATE INDEX ledger_retry ON ledger(delivery_id, next_attempt_at) WHERE state = 'retry';
CREATE TABLE daily_counts (
  day TEXT NOT NULL,
  transport TEXT NOT NULL,
  count INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (day, transport)
) WITHOUT ROWID""",
]

OPEN_STATES = ("scheduled", "running", "paused", "held")
LEDGER_STATES = ("pending", "sending", "sent", "retry", "failed-temporary", "failed-permanent", "skipped",
                 "uncertain")
LOCK_STALE_AFTER = timedelta(minutes=10)
HEARTBEAT_EVERY = timedelta(seconds=30)
DEV_KEY_PREFIX = "insecure-development-key:"
_TS = "%Y-%m-%dT%H:%M:%S.%fZ"  # same format as the subscriber store; sorts as text

TransportFactory = Callable[[], Transport]
Progress = Callable[[int, int, int, int], None]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def timestamp(dt: datetime) -> str:
    if dt.tzinfo is None:
        raise InputError(f"time {dt.isoformat()} has no time zone; give one (e.g. +00:00)")
    return dt.astimezone(timezone.utc).strftime(_TS)


def parse_timestamp(text: str | None) -> datetime | None:
    return datetime.strptime(text, _TS).replace(tzinfo=timezone.utc) if text else None


def utc_day(dt: datetime) -> str:
    """The UTC calendar day, the unit of the daily cap."""
    return dt.astimezone(timezone.utc).date().isoformat()


def one_line(text: str | None, limit: int = 500) -> str:
    return " ".join((text or "").split())[:limit]


_VALUES_CHUNK = 300  # rows per UPDATE … FROM (VALUES …); far below SQLite's parameter limit


def update_each(conn: sqlite3.Connection, delivery_id: int, sets: str, rows: Sequence[tuple],
                 *set_args: object) -> None:
    """Update many ledger rows, each with its own values, in one statement per chunk.

    ``rows`` are tuples (subscriber_id, value2, value3, …), visible in ``sets`` as
    ``v.column2``, ``v.column3``, …; ``set_args`` bind the ``?`` in ``sets``. Three times
    cheaper than executemany, which pays a statement reset per row.
    """
    for start in range(0, len(rows), _VALUES_CHUNK):
        chunk = rows[start:start + _VALUES_CHUNK]
        width = len(chunk[0])
        marks = ",".join(["(" + ",".join("?" * width) + ")"] * len(chunk))
        conn.execute(f"UPDATE ledger SET {sets} FROM (VALUES {marks}) AS v "
                     "WHERE ledger.delivery_id=? AND ledger.subscriber_id=v.column1",
                     (*set_args, *(x for row in chunk for x in row), delivery_id))


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any exception (KeyboardInterrupt included)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# ---------------------------------------------------------------------------------------
# Schema, records
# ---------------------------------------------------------------------------------------
def ensure_schema(conn: sqlite3.Connection) -> None:
    """Migrate the subscriber store's tables and then the delivery tables."""
    from newsletter.store import SubscriberStore

    SubscriberStore(conn)
    migrate(conn, COMPONENT, MIGRATIONS)


def open_ledger(path: Path | str) -> sqlite3.Connection:
    """Open (creating if needed) the database with the subscriber and delivery tables."""
    conn = connect(path)
    ensure_schema(conn)
    return conn


@dataclass(frozen=True)
class Delivery:
    id: int
    slug: str
    issue_number: int | None
    content_hash: str
    subject: str
    state: str
    created_at: datetime
    send_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    frozen_at: datetime | None
    resume_at: datetime | None
    reason: str | None
    total: int
    test: bool
    transport: str | None
    lock_pid: int | None
    lock_host: str | None
    lock_heartbeat: datetime | None

    @classmethod
    def from_row(cls, r: sqlite3.Row) -> "Delivery":
        return cls(r["id"], r["slug"], r["issue_number"], r["content_hash"], r["subject"], r["state"],
                   parse_timestamp(r["created_at"]), parse_timestamp(r["send_at"]), parse_timestamp(r["started_at"]), parse_timestamp(r["finished_at"]),
                   parse_timestamp(r["frozen_at"]), parse_timestamp(r["resume_at"]), r["reason"], r["total"], bool(r["test"]),
                   r["transport"], r["lock_pid"], r["lock_host"], parse_timestamp(r["lock_heartbeat"]))


def get_delivery(conn: sqlite3.Connection, delivery_id: int) -> Delivery:
    row = conn.execute("SELECT * FROM deliveries WHERE id=?", (int(delivery_id),)).fetchone()
    if row is None:
        raise InputError(f"no delivery #{delivery_id}")
    return Delivery.from_row(row)


@dataclass(frozen=True)
class DeliveryReport:
    """What a run did. Counts are the delivery's totals in the ledger; ``sent_this_run`` is this run's."""

    delivery_id: int
    slug: str
    state: str
    total: int = 0
    sent: int = 0
    failed_permanent: int = 0
    failed_temporary: int = 0
    skipped: int = 0
    pending: int = 0
    uncertain_resent: int = 0
    uncertain_reported: int = 0
    sent_this_run: int = 0
    elapsed: float = 0.0
    rate: float = 0.0
    note: str = ""

    @property
    def failed(self) -> int:
        return self.failed_permanent + self.failed_temporary


def ledger_counts(conn: sqlite3.Connection, delivery_id: int) -> dict[str, int]:
    counts = dict.fromkeys(LEDGER_STATES, 0)
    for state, n in conn.execute("SELECT state, COUNT(*) FROM ledger WHERE delivery_id=? GROUP BY state",
                                 (delivery_id,)):
        counts[state] = n
    return counts


def report_for(conn: sqlite3.Connection, delivery: Delivery, note: str = "", **extra: object) -> DeliveryReport:
    """A report from the ledger as it stands (for deliveries held or skipped without a run)."""
    c = ledger_counts(conn, delivery.id)
    return DeliveryReport(delivery.id, delivery.slug, delivery.state, total=sum(c.values()), sent=c["sent"],
                          failed_permanent=c["failed-permanent"], failed_temporary=c["failed-temporary"],
                          skipped=c["skipped"], pending=c["pending"] + c["retry"] + c["sending"],
                          note=note or delivery.reason or "", **extra)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# Creating and resuming
# ---------------------------------------------------------------------------------------
def _changed(d: sqlite3.Row, new_hash: str) -> ContentChangedError:
    verb = "was sent" if d["state"] == "done" else "started sending"
    return ContentChangedError(
        f"issue {d['slug']} changed since delivery #{d['id']} {verb} (content {d['content_hash'][:12]}, "
        f"now {new_hash[:12]}); continuing would mail some readers one version and the rest another. "
        "Revert the change, or pass --force-new-content to send the new version to those not yet sent")


def start_or_resume(conn: sqlite3.Connection, prepared: PreparedIssue, *, scheduled_for: datetime | None = None,
                    force_new_content: bool = False, now: Callable[[], datetime] = utcnow) -> int:
    """The delivery for this issue: the open (or finished) one, else a new one.

    * An open delivery (scheduled, running, paused, held) is continued; if the issue's
      content hash differs, :class:`ContentChangedError` unless ``force_new_content``
      (then the new content is recorded and used for everyone not yet sent).
    * A finished (``done``) delivery is returned as is: running it sends nobody again.
    * Otherwise a new delivery is created; recipients are frozen when it starts sending.
      Readers who already got this issue from an earlier, cancelled delivery are left out.

    With ``scheduled_for`` (tz-aware) the delivery is created in state ``scheduled``, or an
    existing not-yet-started one is moved to that time with the current content.
    """
    r = prepared.rendered
    if prepared.test:
        raise InputError("a test send ([TEST] subject) does not go through the delivery ledger; "
                         "send it to the test addresses directly")
    send_at = timestamp(scheduled_for) if scheduled_for is not None else None
    stamp = timestamp(now())
    with transaction(conn):
        d = conn.execute(f"SELECT * FROM deliveries WHERE slug=? AND test=0 AND state IN {OPEN_STATES} "
                         "ORDER BY id DESC LIMIT 1", (r.slug,)).fetchone()
        if d is None:
            d = conn.execute("SELECT * FROM deliveries WHERE slug=? AND test=0 AND state='done' "
                             "ORDER BY id DESC LIMIT 1", (r.slug,)).fetchone()
            if d is not None and scheduled_for is not None:
                raise InputError(f"issue {r.slug} was already sent (delivery #{d['id']}, finished "
                                 f"{d['finished_at']}); it is not scheduled again")
        if d is not None and scheduled_for is not None:
            if d["frozen_at"] is not None or d["state"] not in ("scheduled", "held"):
                raise InputError(f"issue {r.slug} is already being sent (delivery #{d['id']}, {d['state']}); "
                                 "it cannot be scheduled again")
            conn.execute("UPDATE deliveries SET send_at=?, content_hash=?, subject=?, issue_number=?, "
                         "state='scheduled', reason=NULL WHERE id=?", (send_at, r.content_hash, r.subject,
                                                                       r.number, d["id"]))
            return d["id"]
        if d is not None:
            if d["content_hash"] != r.content_hash:
                if not force_new_content:
                    raise _changed(d, r.content_hash)
                conn.execute("UPDATE deliveries SET content_hash=?, subject=? WHERE id=?",
                             (r.content_hash, r.subject, d["id"]))
            return d["id"]
        cur = conn.execute(
            "INSERT INTO deliveries(slug, issue_number, content_hash, subject, state, created_at, send_at, test) "
            "VALUES(?, ?, ?, ?, ?, ?, ?, 0)",
            (r.slug, r.number, r.content_hash, r.subject, "scheduled" if send_at else "running", stamp, send_at))
        return int(cur.lastrowid)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# The lock
# ---------------------------------------------------------------------------------------
def _pid_alive(pid: int | None) -> bool:
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed but not yet reaped child still answers kill(0): a zombie is dead
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def lock_is_live(d: Delivery, now: datetime | None = None) -> bool:
    """True if the delivery's lock belongs to a process that still looks alive."""
    if d.lock_pid is None and d.lock_heartbeat is None:
        return False
    now = now or utcnow()
    if d.lock_heartbeat is None or now - d.lock_heartbeat > LOCK_STALE_AFTER:
        return False
    if d.lock_host == socket.gethostname() and not _pid_alive(d.lock_pid):
        return False
    return True


def open_delivery_id(conn: sqlite3.Connection, slug: str) -> int | None:
    """The unfinished (scheduled, running, paused or held) delivery of an issue, if any."""
    marks = ",".join("?" * len(OPEN_STATES))
    row = conn.execute(f"SELECT id FROM deliveries WHERE slug=? AND test=0 AND state IN ({marks})",
                       (slug, *OPEN_STATES)).fetchone()
    return row[0] if row else None


def wait_for_editor(conn: sqlite3.Connection, delivery_id: int) -> None:
    """A send the editor stopped by hand stays stopped: no worker or cron dispatch picks
    it up again; only `newsletter send` or `resume` continues it."""
    with transaction(conn):
        conn.execute("UPDATE deliveries SET resume_at=NULL WHERE id=? AND state='paused'", (delivery_id,))


def forget_subscriber(conn: sqlite3.Connection, subscriber_id: int) -> int:
    """Delete a subscriber's ledger rows (erasure requests), so the store can remove them.
    Returns how many rows went. Their deliveries' totals keep counting them."""
    with transaction(conn):
        return conn.execute("DELETE FROM ledger WHERE subscriber_id=?", (int(subscriber_id),)).rowcount


# ---------------------------------------------------------------------------------------
# Status
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeliveryStatus:
    delivery: Delivery
    counts: dict[str, int]
    total: int
    sent: int
    failed: int
    remaining: int
    rate: float | None            # messages finished per second while it ran, None before any
    eta_seconds: float | None     # at that rate, for a running delivery
    sender: str | None            # "pid N on HOST" while a live process holds the lock

    @property
    def id(self) -> int:
        return self.delivery.id

    @property
    def skipped(self) -> int:
        return self.counts["skipped"]

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
        c = ledger_counts(conn, d.id)
        last = conn.execute("SELECT MAX(updated_at) FROM ledger WHERE delivery_id=? AND state NOT IN "
                            "('pending','retry','sending')", (d.id,)).fetchone()[0]
        remaining = c["pending"] + c["retry"] + c["sending"]
        finished = sum(c.values()) - remaining
        rate = eta = None
        if d.started_at and last and finished:
            span = (parse_timestamp(last) - d.started_at).total_seconds()  # type: ignore[operator]
            rate = finished / span if span > 0 else None
        if d.state == "running" and rate:
            eta = remaining / rate
        sender = f"pid {d.lock_pid} on {d.lock_host}" if lock_is_live(d) else None
        out.append(DeliveryStatus(d, c, sum(c.values()), c["sent"], c["failed-permanent"] + c["failed-temporary"],
                                  remaining, rate, eta, sender))
    return out


def failed_recipients(conn: sqlite3.Connection, delivery_id: int) -> list[tuple[str, str, str | None]]:
    """(email, state, last error) of everyone who needs attention: failed-* and uncertain."""
    return [tuple(r) for r in conn.execute(  # type: ignore[misc]
        "SELECT email, state, last_error FROM ledger WHERE delivery_id=? AND state IN "
        "('failed-permanent','failed-temporary','uncertain') ORDER BY subscriber_id", (int(delivery_id),))]


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
    slug = (message_id or "").strip().lstrip("<").partition("@")[0].rpartition(".")[0]
    if slug:
        row = conn.execute("SELECT l.delivery_id FROM ledger l JOIN deliveries d ON d.id = l.delivery_id "
                           "WHERE l.subscriber_id=? AND d.slug=? ORDER BY l.delivery_id DESC LIMIT 1",
                           (subscriber_id, slug)).fetchone()
        if row:
            return row[0]
    return None
