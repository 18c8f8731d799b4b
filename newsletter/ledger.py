"""The delivery ledger: deliveries, one row per recipient, locks and status.

This module owns the ``delivery`` tables and every SQL statement on them; the send
loop that moves rows through their states is :mod:`newsletter.delivery`, and what
each answer does to a row is :mod:`newsletter.outcome`. Recipients are frozen into
the ledger in one ``INSERT … SELECT`` when a delivery starts, so the list never
changes under a running send.

No ``from __future__ import annotations`` here: the records below are NamedTuples (a frozen
dataclass costs a millisecond or two at import, and ``status`` imports this module), and
NamedTuple compiles every string annotation it is given; real ones cost nothing.
"""

import os
import sqlite3
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, NamedTuple, Sequence

from newsletter.db import backend, connect, migrate, write_transaction
from newsletter.patterns import compiled
from newsletter.errors import ContentChangedError, DeliveryLockedError, InputError, scrub
from newsletter.message_ids import issue_slug
from newsletter.processes import pid_alive
from newsletter.states import OPEN_DELIVERY_STATES, OPEN_ROW_STATES, FAILED_ROW_STATES, RowState, sql_list
from newsletter.timestamps import TIMESTAMP, from_epoch, parse_timestamp, timestamp, utc_day, utcnow  # noqa: F401 (re-exported)

if TYPE_CHECKING:  # only for types: `status` and the scheduler load neither the builder nor transports
    from newsletter.message import PreparedIssue
    from newsletter.outcome import Transition
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


def _v2_deferred(conn: sqlite3.Connection) -> None:
    """v2: deliveries may be ``deferred``; rows keep their first failure time and uncertain
    resends; each delivery gets a random nonce for its idempotency keys; retry times are
    wall-clock seconds (they were the old process's monotonic clock: due now)."""
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='deliveries'").fetchone()[0]
    old = "'done','cancelled','held')"
    if old in sql:  # a CHECK cannot be altered; the documented writable_schema edit keeps the rows in place
        version = conn.execute("PRAGMA schema_version").fetchone()[0]
        conn.execute("PRAGMA writable_schema=ON")
        conn.execute("UPDATE sqlite_master SET sql=? WHERE type='table' AND name='deliveries'",
                     (sql.replace(old, "'done','cancelled','held','deferred')"),))
        conn.execute(f"PRAGMA schema_version={int(version) + 1}")
        conn.execute("PRAGMA writable_schema=OFF")
    for statement in (
        "DROP INDEX deliveries_one_open",
        "CREATE UNIQUE INDEX deliveries_one_open ON deliveries(slug) "
        "WHERE test = 0 AND state IN ('scheduled','running','paused','held','deferred')",
        "ALTER TABLE deliveries ADD COLUMN nonce TEXT",
        "UPDATE deliveries SET nonce=lower(hex(randomblob(8)))",
        "ALTER TABLE ledger ADD COLUMN first_failure_at REAL",
        "ALTER TABLE ledger ADD COLUMN uncertain_resends INTEGER NOT NULL DEFAULT 0",
        "UPDATE ledger SET next_attempt_at=0 WHERE state='retry'",
    ):
        conn.execute(statement)


MIGRATIONS.append(_v2_deferred)
# v3: the edition (language tag, "" for the main one) each reader is sent, fixed when the list is frozen.
MIGRATIONS.append("ALTER TABLE ledger ADD COLUMN edition TEXT NOT NULL DEFAULT ''")


def _state_list(states: Sequence[str]) -> str:
    return "(" + ",".join(f"'{s}'" for s in states) + ")"


def _state_rows(states: Sequence[str]) -> str:
    return "(VALUES " + ",".join(f"('{s}')" for s in states) + ")"


#: The row states when v4 was written (a migration is history: later states are added by later ones).
_V4_ROW_STATES = ("pending", "sending", "sent", "retry", "failed-temporary", "failed-permanent", "skipped",
                  "uncertain")
_LATEST = (f"CASE WHEN new.state NOT IN {_state_list(OPEN_ROW_STATES)} AND typeof(new.updated_at)='text' "
           "AND new.updated_at > coalesce(latest, '') THEN new.updated_at ELSE latest END")


def _new_delivery_trigger(states: Sequence[str]) -> str:
    """Each new delivery starts with a zero count for every row state."""
    return ("CREATE TRIGGER delivery_counts_new AFTER INSERT ON deliveries BEGIN INSERT OR IGNORE INTO "
            f"delivery_counts(delivery_id, state) SELECT new.id, column1 FROM {_state_rows(states)}; END")


#: v4: readers per (delivery, state), kept current by triggers in the same transaction as the row,
#: so `status` and a send's report read eight rows instead of a delivery's whole ledger (a million
#: rows at a million readers). ``latest`` is the newest time a reader reached a finished state there
#: (text only: a row with an unreadable time counts as no time). A rebuild of ``ledger`` or
#: ``deliveries`` must recreate these triggers. (Statements end in ";\n", so trigger bodies keep
#: theirs on one line: see newsletter.db.migrate.) PostgreSQL's are in newsletter.pg_schema.
_DELIVERY_COUNTS = f"""CREATE TABLE delivery_counts (
  delivery_id INTEGER NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
  state TEXT NOT NULL,
  n INTEGER NOT NULL DEFAULT 0,
  latest TEXT,
  PRIMARY KEY (delivery_id, state)
) WITHOUT ROWID;
{_new_delivery_trigger(_V4_ROW_STATES)};
CREATE TRIGGER delivery_counts_add AFTER INSERT ON ledger BEGIN
  UPDATE delivery_counts SET n=n+1, latest={_LATEST} WHERE delivery_id=new.delivery_id AND state=new.state; END;
CREATE TRIGGER delivery_counts_drop AFTER DELETE ON ledger BEGIN
  UPDATE delivery_counts SET n=n-1 WHERE delivery_id=old.delivery_id AND state=old.state; END;
CREATE TRIGGER delivery_counts_move AFTER UPDATE OF state, updated_at, delivery_id ON ledger BEGIN
  UPDATE delivery_counts SET n=n-1 WHERE delivery_id=old.delivery_id AND state=old.state; """ \
  f"""UPDATE delivery_counts SET n=n+1, latest={_LATEST} WHERE delivery_id=new.delivery_id AND state=new.state; END;
INSERT INTO delivery_counts(delivery_id, state) SELECT d.id, s.column1 FROM deliveries d, {_state_rows(_V4_ROW_STATES)} s;
UPDATE delivery_counts SET n=g.n, latest=g.latest FROM (SELECT delivery_id, state, COUNT(*) AS n,
  MAX(CASE WHEN typeof(updated_at)='text' AND state NOT IN {_state_list(OPEN_ROW_STATES)} THEN updated_at END)
  AS latest FROM ledger GROUP BY delivery_id, state) AS g
  WHERE delivery_counts.delivery_id=g.delivery_id AND delivery_counts.state=g.state"""
MIGRATIONS.append(_DELIVERY_COUNTS)


def _v5_gave_up(conn: sqlite3.Connection) -> None:
    """v5: the final row state after the retry window is ``gave-up`` (it was ``failed-temporary``,
    which now means only a transport's "try again later"). The CHECK is edited in place as in v2;
    the counts move with the rows (v4's trigger), into a ``gave-up`` count every delivery gets."""
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='ledger'").fetchone()[0]
    if "'failed-temporary'" in sql:
        version = conn.execute("PRAGMA schema_version").fetchone()[0]
        conn.execute("PRAGMA writable_schema=ON")
        conn.execute("UPDATE sqlite_master SET sql=? WHERE type='table' AND name='ledger'",
                     (sql.replace("'failed-temporary'", "'gave-up'"),))
        conn.execute(f"PRAGMA schema_version={int(version) + 1}")
        conn.execute("PRAGMA writable_schema=OFF")
    conn.execute("DROP TRIGGER delivery_counts_new")
    conn.execute(_new_delivery_trigger(tuple(RowState)))
    conn.execute("INSERT OR IGNORE INTO delivery_counts(delivery_id, state) SELECT id, 'gave-up' FROM deliveries")
    conn.execute("UPDATE ledger SET state='gave-up' WHERE state='failed-temporary'")
    conn.execute("DELETE FROM delivery_counts WHERE state='failed-temporary'")


MIGRATIONS.append(_v5_gave_up)
# v6: which run claimed a row 'sending' (claim_batch), so a takeover settles only the dead holder's
# readers and never those a live helper has in flight (see begin_run).
MIGRATIONS.append("ALTER TABLE ledger ADD COLUMN claimed_by TEXT")

OPEN_STATES = OPEN_DELIVERY_STATES
_OPEN_SQL = sql_list(OPEN_STATES)
LEDGER_STATES: tuple[RowState, ...] = tuple(RowState)
#: A sender's lease on its delivery (NEWSLETTER_LEASE_SECONDS): a lock whose heartbeat is older
#: than this is another host's to take over. Every host must use the same value.
DEFAULT_LEASE = timedelta(seconds=60)
LOCK_STALE_AFTER = DEFAULT_LEASE  # the name before leases were configurable


def heartbeat_every(lease: timedelta) -> timedelta:
    """How often a holder renews its lease: three chances before it runs out."""
    return lease / 3


HEARTBEAT_EVERY = heartbeat_every(DEFAULT_LEASE)

TransportFactory = Callable[[], "Transport"]
Progress = Callable[[int, int, int, int], None]


_VALUES_CHUNK = 300  # rows per UPDATE … FROM (VALUES …); far below SQLite's parameter limit


def update_each(conn: sqlite3.Connection, delivery_id: int, sets: str, rows: Sequence[tuple],
                 *set_args: object) -> None:
    """Update many ledger rows, each with its own values, in one statement per chunk.

    ``rows`` are tuples (subscriber_id, value2, value3, …), visible in ``sets`` as
    ``v.column2``, ``v.column3``, …; ``set_args`` bind the ``?`` in ``sets``. Three times
    cheaper than executemany, which pays a statement reset per row.
    """
    if backend(conn) != "sqlite":
        _update_each_row(conn, delivery_id, sets, rows, set_args)
        return
    for start in range(0, len(rows), _VALUES_CHUNK):
        chunk = rows[start:start + _VALUES_CHUNK]
        width = len(chunk[0])
        marks = ",".join(["(" + ",".join("?" * width) + ")"] * len(chunk))
        conn.execute(f"UPDATE ledger SET {sets} FROM (VALUES {marks}) AS v "
                     "WHERE ledger.delivery_id=? AND ledger.subscriber_id=v.column1",
                     (*set_args, *(x for row in chunk for x in row), delivery_id))


def _update_each_row(conn: sqlite3.Connection, delivery_id: int, sets: str, rows: Sequence[tuple],
                     set_args: tuple) -> None:
    """:func:`update_each` on PostgreSQL: one prepared UPDATE per row, sent in one pipeline
    (a VALUES list there would need a type for every column whose first value is NULL)."""
    if not rows:
        return
    args = iter(range(len(set_args)))
    named = compiled(r"\?").sub(lambda _: f":a{next(args)}", sets)
    named = compiled(r"\bv\.column(\d+)\b").sub(r":c\1", named)
    fixed = {f"a{i}": value for i, value in enumerate(set_args)}
    conn.executemany(f"UPDATE ledger SET {named} WHERE delivery_id=:did AND subscriber_id=:c1",
                     [{**fixed, "did": delivery_id, **{f"c{k}": v for k, v in enumerate(row, 1)}} for row in rows])


def _retry_index(conn: sqlite3.Connection) -> str:
    """SQLite's hint to read retry rows through the small partial index (PostgreSQL's planner needs none)."""
    return "INDEXED BY ledger_retry " if backend(conn) == "sqlite" else ""


_LEDGER_LOCK = "SELECT pg_advisory_xact_lock(7364928, 2)"  # pg_schema holds (7364928, 1) for migrations


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any exception (KeyboardInterrupt included), queued
    behind this process's other writers (see :func:`newsletter.db.write_transaction`).

    On PostgreSQL a plain BEGIN takes no lock, so the ledger's read-then-write steps (take the
    delivery's lock, freeze the list, claim a batch) take one advisory lock for the transaction:
    senders on every host serialise there as SQLite's writers do, while the web host's store
    writes (unsubscribes, signups, webhooks) never take it and never wait for a sender."""
    with write_transaction(conn):
        if backend(conn) != "sqlite":
            conn.execute(_LEDGER_LOCK)
        yield conn


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


class Delivery(NamedTuple):
    """One row of ``deliveries``, times parsed."""

    id: int
    slug: str
    issue_number: int | None
    content_hash: str
    subject: str
    state: str
    created_at: datetime | None
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
    nonce: str = ""
    send_at_text: str | None = None  # as stored, to show a row whose time cannot be read

    @classmethod
    def from_row(cls, r: sqlite3.Row) -> "Delivery":
        t = parse_timestamp
        return cls(r["id"], r["slug"], r["issue_number"], r["content_hash"], r["subject"], r["state"],
                   t(r["created_at"]), t(r["send_at"]), t(r["started_at"]), t(r["finished_at"]), t(r["frozen_at"]),
                   t(r["resume_at"]), r["reason"], r["total"], bool(r["test"]), r["transport"], r["lock_pid"],
                   r["lock_host"], t(r["lock_heartbeat"]), r["nonce"] or "", r["send_at"])

    def idempotency_key(self, batch_no: int) -> str:
        """``nl-<nonce>-<delivery>-<batch>``: stable across retries of one batch, and unique
        across databases sharing one provider account (the random nonce)."""
        return f"nl-{self.nonce}-{self.id}-{batch_no}" if self.nonce else f"nl-{self.id}-{batch_no}"


def get_delivery(conn: sqlite3.Connection, delivery_id: int) -> Delivery:
    row = conn.execute("SELECT * FROM deliveries WHERE id=?", (int(delivery_id),)).fetchone()
    if row is None:
        raise InputError(f"no delivery #{delivery_id}")
    return Delivery.from_row(row)


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


def _next_due(conn: sqlite3.Connection, delivery_id: int) -> float | None:
    """Wall seconds the next deferred reader is due (through the small partial index)."""
    return conn.execute(f"SELECT MIN(next_attempt_at) FROM ledger {_retry_index(conn)}WHERE delivery_id=? "
                        "AND state='retry'", (delivery_id,)).fetchone()[0]


def retry_summary(conn: sqlite3.Connection, delivery_id: int, top: int = 3) -> tuple[datetime | None,
                                                                                   list[tuple[str, int]]]:
    """When the next deferred reader is due, and the commonest reasons readers are waiting: replies
    grouped by what they share once the reader's address and ids are taken out (each server reply
    names its reader, so the exact texts never group), each shown that way."""
    from newsletter.smtp_status import reply_gist

    head = _next_due(conn, delivery_id)
    groups: dict[str, list] = {}
    for text, n in conn.execute("SELECT COALESCE(last_error, 'waiting'), COUNT(*) FROM ledger WHERE delivery_id=? "
                                "AND state='retry' GROUP BY 1 ORDER BY 1", (delivery_id,)):
        gist = reply_gist(text)
        group = groups.setdefault(gist, [gist, 0])
        group[1] += n
    reasons = sorted(groups.values(), key=lambda g: (-g[1], g[0]))[:top]
    return from_epoch(head), [(scrub(text, 120), n) for text, n in reasons]


def _next_retry(conn: sqlite3.Connection, d: Delivery,
                counts: dict[str, int]) -> tuple[datetime | None, list[tuple[str, int]]]:
    """When the delivery goes on, and why readers wait: a deferred delivery's resume time
    (the daily cap defers past the next retry) wins over the next retry's."""
    next_retry, reasons = retry_summary(conn, d.id) if counts["retry"] else (None, [])
    if d.state == "deferred" and d.resume_at is not None:
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
    return DeliveryReport(d.id, d.slug, d.state, total=sum(c.values()), sent=c["sent"],
                          failed_permanent=c["failed-permanent"], failed_temporary=c[RowState.GAVE_UP],
                          skipped=c["skipped"], pending=open_rows(c), deferred=c["retry"], uncertain=c["uncertain"],
                          next_retry=next_retry, reasons=tuple(reasons), note=note or d.reason or "",
                          **run)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# Creating and resuming
# ---------------------------------------------------------------------------------------
def _changed(d: sqlite3.Row, new_hash: str) -> ContentChangedError:
    verb = "was sent" if d["state"] == "done" else "started sending"
    return ContentChangedError(
        f"issue {d['slug']} changed since delivery #{d['id']} {verb} (content {d['content_hash'][:12]}, "
        f"now {new_hash[:12]}); continuing would mail some readers one version and the rest another. "
        "Revert the change, or pass --force-new-content to send the new version to those not yet sent")


def start_or_resume(conn: sqlite3.Connection, prepared: "PreparedIssue", *, scheduled_for: datetime | None = None,
                    force_new_content: bool = False, now: Callable[[], datetime] = utcnow) -> int:
    """The delivery for this issue: the open (or finished) one, else a new one.

    * An open delivery (scheduled, running, paused, deferred, held) is continued; if the
      issue's content hash differs, :class:`ContentChangedError` unless ``force_new_content``
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
        d = conn.execute(f"SELECT * FROM deliveries WHERE slug=? AND test=0 AND state IN {_OPEN_SQL} "
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
        return int(conn.execute(
            "INSERT INTO deliveries(slug, issue_number, content_hash, subject, state, created_at, send_at, test, "
            "nonce) VALUES(?, ?, ?, ?, ?, ?, ?, 0, ?) RETURNING id",
            (r.slug, r.number, r.content_hash, r.subject, "scheduled" if send_at else "running", stamp, send_at,
             os.urandom(8).hex())).fetchone()[0])  # secrets.token_hex, without importing random & co at start-up


# ---------------------------------------------------------------------------------------
# The lock
# ---------------------------------------------------------------------------------------
def lock_is_live(d: Delivery, now: datetime | None = None, lease: timedelta = DEFAULT_LEASE) -> bool:
    """True if the delivery's lock belongs to a process that still looks alive: its lease is
    fresh, and (on this host, where we can look) its pid still runs."""
    if d.lock_pid is None and d.lock_heartbeat is None:
        return False
    now = now or utcnow()
    if d.lock_heartbeat is None or now - d.lock_heartbeat > lease:
        return False
    if d.lock_host == _hostname() and not pid_alive(d.lock_pid):
        return False
    return True


def _hostname() -> str:
    import socket  # here, not at the top: `status` should not load the network stack

    return socket.gethostname()


def acquire_lock(conn: sqlite3.Connection, delivery_id: int, owner: str, now: datetime,
                 lease: timedelta = DEFAULT_LEASE) -> str | None:
    """Take the delivery's lock, or raise :class:`DeliveryLockedError` naming the live holder.
    Returns the owner whose lock was taken over (a dead or silent holder), None when it was free."""
    with transaction(conn):
        cur = get_delivery(conn, delivery_id)
        previous = conn.execute("SELECT lock_owner FROM deliveries WHERE id=?", (delivery_id,)).fetchone()[0]
        if lock_is_live(cur, now, lease):
            age = (now - cur.lock_heartbeat).total_seconds() if cur.lock_heartbeat else 0
            raise DeliveryLockedError(
                f"delivery #{cur.id} of {cur.slug} is already being sent by pid {cur.lock_pid} on "
                f"{cur.lock_host} (last heartbeat {age:.0f}s ago); wait for it to finish or stop it. "
                f"The lock is taken over once that process is gone or silent for {lease.total_seconds():.0f} s "
                "(NEWSLETTER_LEASE_SECONDS)")
        conn.execute("UPDATE deliveries SET lock_owner=?, lock_pid=?, lock_host=?, lock_heartbeat=? WHERE id=?",
                     (owner, os.getpid(), _hostname(), timestamp(now), delivery_id))
        return previous


def release_lock(conn: sqlite3.Connection, delivery_id: int, owner: str) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")
    orphan_claims(conn, delivery_id, owner)
    conn.execute("UPDATE deliveries SET lock_owner=NULL, lock_pid=NULL, lock_host=NULL, lock_heartbeat=NULL "
                 "WHERE id=? AND lock_owner=?", (delivery_id, owner))


def orphan_claims(conn: sqlite3.Connection, delivery_id: int, owner: str) -> None:
    """A run that ends (its threads joined) sends nothing more: the readers it left 'sending' (an
    exception mid-batch) are nobody's now, for the next holder to settle at once (:func:`begin_run`)."""
    conn.execute("UPDATE ledger SET claimed_by=NULL WHERE delivery_id=? AND state='sending' AND claimed_by=?",
                 (delivery_id, owner))


def refresh_lock(conn: sqlite3.Connection, delivery_id: int, owner: str, now: datetime,
                 new_batch: bool = False) -> int:
    """Refresh the heartbeat (inside a transaction); returns the batch number to use when asked.
    Raises :class:`DeliveryLockedError` when another process took the lock over."""
    row = conn.execute(
        "UPDATE deliveries SET lock_heartbeat=?, last_batch_no=last_batch_no+? WHERE id=? AND lock_owner=? "
        "RETURNING last_batch_no", (timestamp(now), 1 if new_batch else 0, delivery_id, owner)).fetchone()
    if row is None:
        raise DeliveryLockedError(f"delivery #{delivery_id}: another process took over the lock "
                                  "(this one was silent too long); stopping")
    return int(row[0])


def note_reason(conn: sqlite3.Connection, delivery_id: int, owner: str, reason: str) -> None:
    """Leave a (scrubbed) reason on a delivery this process still holds."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")
    conn.execute("UPDATE deliveries SET reason=? WHERE id=? AND lock_owner=?", (scrub(reason), delivery_id, owner))


# ---------------------------------------------------------------------------------------
# A run: begin, claim, record, finish (the SQL behind newsletter.delivery)
# ---------------------------------------------------------------------------------------
class RunStart(NamedTuple):
    """What :func:`begin_run` found."""

    counts: dict[str, int]
    interrupted: int          # rows found in flight from an earlier run (a crash or kill)


def begin_run(conn: sqlite3.Connection, d: Delivery, *, transport: str, resend_interrupted: bool,
              retry_failed: bool, now: datetime, retry_now: bool = False,
              edition_for: Callable[[str], str] | None = None, taken_from: str | None = None,
              lease: timedelta = DEFAULT_LEASE) -> RunStart:
    """Freeze the list (first run only), settle rows a crash left in flight, and mark it running.

    Rows left ``sending`` were handed to the transport and never recorded: a crash or a kill.
    They are sent again under the same batch and key (no attempt counted: nobody answered),
    or with ``resend_interrupted=False`` set ``uncertain`` and reported. A ``done`` delivery
    is never reopened here, except ``retry_failed`` for those whose retry window ran out.
    Only rows nobody can still be sending are settled: those the holder whose lock was taken over
    (``taken_from``) claimed, those a run that ended left (no claimer), and those claimed longer than
    the ``lease`` ago. A live helper's readers in flight (PostgreSQL) are its own to record.
    ``retry_now`` (the editor's `resume`) makes every deferred reader due at once.
    ``edition_for`` gives the edition (tag, "" for the main one) a reader of a language gets; it is
    recorded in each row at the freeze. Runs inside the caller's transaction.
    """
    stamp = timestamp(now)
    if d.frozen_at is None and get_delivery(conn, d.id).frozen_at is None:  # re-read under the lock
        # Readers who already got this issue (or may have: 'sending'/'uncertain') from an
        # earlier, cancelled delivery are left out.
        pairs = edition_pairs(conn, edition_for)
        edition, edition_params = edition_case(pairs[:_CASE_LIMIT])
        conn.execute(
            "INSERT INTO ledger(delivery_id, subscriber_id, email, name, state, updated_at, edition) "
            f"SELECT ?, s.id, s.email, s.name, 'pending', ?, {edition} FROM subscribers s WHERE s.status='active' "
            "AND NOT EXISTS (SELECT 1 FROM ledger p WHERE p.subscriber_id=s.id "
            "AND p.state IN ('sent','sending','uncertain') AND p.delivery_id IN "
            "(SELECT id FROM deliveries WHERE slug=? AND test=0 AND id<>?)) ORDER BY s.id",
            (d.id, stamp, *edition_params, d.slug, d.id))
        total = conn.execute("SELECT COUNT(*) FROM ledger WHERE delivery_id=?", (d.id,)).fetchone()[0]
        conn.execute("UPDATE deliveries SET frozen_at=?, total=? WHERE id=?", (stamp, total, d.id))
        for start in range(_CASE_LIMIT, len(pairs), _CASE_LIMIT):  # a list of very many languages
            case, params = edition_case(pairs[start:start + _CASE_LIMIT])
            conn.execute(f"UPDATE ledger SET edition={case.replace('s.lang', 'v.lang')} FROM (SELECT id, lang FROM "
                         "subscribers) AS v WHERE ledger.delivery_id=? AND ledger.subscriber_id=v.id AND "
                         f"v.lang IN ({','.join('?' * (len(params) // 2))})",
                         (*params, d.id, *params[0::2]))
    orphaned = ("state='sending' AND (claimed_by IS NULL OR claimed_by=? OR updated_at IS NULL OR updated_at<?)",
                (taken_from or "", timestamp(now - lease)))
    interrupted = conn.execute(f"SELECT COUNT(*) FROM ledger WHERE delivery_id=? AND {orphaned[0]}",
                               (d.id, *orphaned[1])).fetchone()[0]
    if resend_interrupted:
        conn.execute("UPDATE ledger SET state='retry', retry_batch=batch_no, next_attempt_at=0, updated_at=?, "
                     "last_error='interrupted while sending (a crash or kill); sent again, a duplicate is possible' "
                     f"WHERE delivery_id=? AND {orphaned[0]}", (stamp, d.id, *orphaned[1]))
    else:
        conn.execute("UPDATE ledger SET state='uncertain', updated_at=?, last_error='interrupted while sending "
                     "(a crash or kill): may or may not have been delivered; not sent again' "
                     f"WHERE delivery_id=? AND {orphaned[0]}", (stamp, d.id, *orphaned[1]))
    if retry_now:
        conn.execute("UPDATE ledger SET next_attempt_at=0 WHERE delivery_id=? AND state='retry'", (d.id,))
    if retry_failed:
        conn.execute("UPDATE ledger SET state='pending', attempts=0, first_failure_at=NULL, next_attempt_at=NULL, "
                     "updated_at=? WHERE delivery_id=? AND state='gave-up'", (stamp, d.id))
    counts = ledger_counts(conn, d.id)
    if open_rows(counts) or d.state != "done":
        conn.execute("UPDATE deliveries SET state='running', transport=?, reason=NULL, resume_at=NULL, "
                     "finished_at=NULL, started_at=COALESCE(started_at, ?) WHERE id=?", (transport, stamp, d.id))
    return RunStart(counts, interrupted)


#: Languages matched to an edition in one freeze's SQL; past this (a list of many languages) the
#: CASE would pass SQLite's parameter limit, and the rows are given their edition in chunks after.
_CASE_LIMIT = 200


def edition_pairs(conn: sqlite3.Connection, edition_for: Callable[[str], str] | None) -> list[tuple[str, str]]:
    """(language, edition) for each distinct language of the active readers that gets another
    edition than the main one: one match per language, not per reader."""
    if edition_for is None:
        return []
    langs = conn.execute("SELECT DISTINCT lang FROM subscribers WHERE status='active' AND lang<>''").fetchall()
    return [(lang, tag) for (lang,) in langs if (tag := edition_for(lang))]


def edition_case(pairs: Sequence[tuple[str, str]]) -> tuple[str, list[str]]:
    """The SQL giving a reader (``s``) their edition: ``CASE s.lang WHEN 'zh' THEN 'zh-Hans' … ELSE '' END``
    (``''``: the main one), and its parameters."""
    if not pairs:
        return "''", []
    return "CASE s.lang " + "WHEN ? THEN ? " * len(pairs) + "ELSE '' END", [x for pair in pairs for x in pair]


def edition_counts(conn: sqlite3.Connection, delivery_id: int) -> dict[str, dict[str, int]]:
    """Readers per edition ("" the main one) and state, for ``status``."""
    out: dict[str, dict[str, int]] = {}
    for edition, state, n in conn.execute("SELECT edition, state, COUNT(*) FROM ledger WHERE delivery_id=? "
                                          "GROUP BY edition, state ORDER BY edition", (int(delivery_id),)):
        out.setdefault(edition, dict.fromkeys(LEDGER_STATES, 0))[state] = n
    return out


class ClaimedRow(NamedTuple):
    """One reader of a claimed batch, as it stood before the claim."""

    sid: int
    email: str
    name: str
    state: str                 # before the claim: 'pending' or 'retry' (to undo it)
    next_attempt_at: float | None
    attempts: int
    first_failure_at: float | None
    uncertain_resends: int
    edition: str = ""          # the edition this reader is sent ("" the main one)


class Claim(NamedTuple):
    """A batch marked 'sending' (or only skips, with no ``rows``)."""

    batch_no: int
    rows: list[ClaimedRow]
    fresh: bool                # pending rows in keyset order (the cursor moved past them)
    skipped: list[str]         # previous states of rows skipped as no longer active
    last_id: int = 0           # the highest subscriber id looked at (for the keyset cursor)


_ROW_COLUMNS = ("l.subscriber_id, l.email, l.name, l.state, l.next_attempt_at, l.attempts, l.first_failure_at, "
                "l.uncertain_resends, s.status, l.edition")


def _select(conn: sqlite3.Connection, delivery_id: int, where: str, params: tuple, retry: bool = False) -> list:
    hint = _retry_index(conn) if retry else ""
    return conn.execute(f"SELECT {_ROW_COLUMNS} FROM ledger l {hint}LEFT JOIN subscribers s ON s.id = l.subscriber_id "
                        f"WHERE l.delivery_id=? AND {where}", (delivery_id, *params)).fetchall()


def claimable(conn: sqlite3.Connection, delivery_id: int, cursor: int, now_ts: float) -> bool:
    """Is a batch due right now? (A cheap look, so the end of a run costs no pacing wait.)"""
    if conn.execute("SELECT 1 FROM ledger WHERE delivery_id=? AND subscriber_id>? AND state='pending' LIMIT 1",
                    (delivery_id, cursor)).fetchone():
        return True
    head = _next_due(conn, delivery_id)
    return head is not None and head <= now_ts


def daily_used(conn: sqlite3.Connection, day: str, transport: str) -> int:
    row = conn.execute("SELECT count FROM daily_counts WHERE day=? AND transport=?", (day, transport)).fetchone()
    return row[0] if row else 0


def claim_batch(conn: sqlite3.Connection, d: Delivery, owner: str, *, limit: int, cursor: int, now: datetime,
                now_ts: float, day: str, transport: str, helper: bool = False) -> "Claim | float | None":
    """Pick the next batch and mark it 'sending' (the caller commits before the transport sees it).

    Due retries come first: a batch that came back whole is claimed again as the same rows
    under the same batch number (so the same idempotency key). Then pending rows in
    subscriber order after ``cursor``. Returns seconds until the next retry when nothing is
    due, None when nothing is left. Runs inside the caller's transaction.
    """
    stamp = timestamp(now)
    rows: list = []
    batch_no: int | None = None
    head = conn.execute(f"SELECT retry_batch, next_attempt_at FROM ledger {_retry_index(conn)}WHERE "
                        "delivery_id=? AND state='retry' ORDER BY next_attempt_at LIMIT 1", (d.id,)).fetchone()
    if head is not None and head[1] <= now_ts:
        if head[0] is not None:
            rows = _select(conn, d.id, "l.state='retry' AND l.retry_batch=? ORDER BY l.subscriber_id", (head[0],),
                           retry=True)
            if len(rows) <= limit:
                batch_no = head[0]
            else:  # split by the daily cap: the key no longer names one batch, so none reuses it
                conn.execute("UPDATE ledger SET retry_batch=NULL WHERE delivery_id=? AND state='retry' "
                             "AND retry_batch=?", (d.id, head[0]))
                rows = rows[:limit]
        else:
            rows = _select(conn, d.id, "l.state='retry' AND l.retry_batch IS NULL AND l.next_attempt_at<=? "
                           "ORDER BY l.next_attempt_at LIMIT ?", (now_ts, limit), retry=True)
    fresh = not rows
    if fresh:
        rows = _select(conn, d.id, "l.subscriber_id>? AND l.state='pending' ORDER BY l.subscriber_id LIMIT ?"
                       + _SKIP_LOCKED[backend(conn)], (cursor, limit))
    if not rows:
        return None if head is None else max(0.0, head[1] - now_ts)
    gone = [r for r in rows if r["status"] != "active"]
    live = [r for r in rows if r["status"] == "active"]
    if gone:
        update_each(conn, d.id, "state='skipped', last_error=v.column2, updated_at=?",
                    [(r[0], f"no longer active ({r['status'] or 'removed'})") for r in gone], stamp)
        batch_no = None  # the batch is not the one the key named any more
    skipped = [r["state"] for r in gone]
    if not live:  # only skips: the caller counts them and claims again
        if not helper:
            refresh_lock(conn, d.id, owner, now)
        return Claim(0, [], fresh, skipped, last_id=rows[-1][0])
    if batch_no is None:
        batch_no = next_batch_no(conn, d.id) if helper else refresh_lock(conn, d.id, owner, now, new_batch=True)
    elif not helper:
        refresh_lock(conn, d.id, owner, now)
    claim = Claim(batch_no, [ClaimedRow(*tuple(r)[:8], r["edition"]) for r in live], fresh, skipped,
                  last_id=rows[-1][0])
    if fresh and not gone:  # a contiguous keyset range of pending rows: one statement
        conn.execute("UPDATE ledger SET state='sending', batch_no=?, updated_at=?, claimed_by=? WHERE delivery_id=? "
                     "AND subscriber_id BETWEEN ? AND ? AND state='pending'",
                     (claim.batch_no, stamp, owner, d.id, live[0][0], live[-1][0]))
    else:
        update_each(conn, d.id, "state='sending', batch_no=?, updated_at=?, claimed_by=?", [(r[0],) for r in live],
                    claim.batch_no, stamp, owner)
    conn.execute("INSERT INTO daily_counts(day, transport, count) VALUES(?, ?, ?) ON CONFLICT(day, transport) "
                 "DO UPDATE SET count=daily_counts.count+excluded.count", (day, transport, len(live)))
    return claim


#: PostgreSQL: rows another worker is claiming right now are passed over, not waited for.
_SKIP_LOCKED = {"sqlite": "", "postgresql": " FOR UPDATE OF l SKIP LOCKED"}


def next_batch_no(conn: sqlite3.Connection, delivery_id: int) -> int:
    """A batch number for a worker helping the lock holder (each batch its own idempotency key)."""
    return int(conn.execute("UPDATE deliveries SET last_batch_no=last_batch_no+1 WHERE id=? RETURNING last_batch_no",
                            (delivery_id,)).fetchone()[0])


def in_flight_elsewhere(conn: sqlite3.Connection, delivery_id: int, stale_before: datetime) -> int:
    """Readers other workers hold 'sending' (the lock holder waits for them before it finishes).
    Rows claimed before ``stale_before`` belong to a worker silent past its lease: they go back to
    be sent again (a duplicate is possible), as after any crash. Runs inside a transaction."""
    conn.execute("UPDATE ledger SET state='retry', retry_batch=NULL, next_attempt_at=0, updated_at=?, "
                 "last_error='interrupted while sending (a worker went silent past its lease); sent again, "
                 "a duplicate is possible' WHERE delivery_id=? AND state='sending' AND updated_at<?",
                 (timestamp(stale_before), delivery_id, timestamp(stale_before)))
    return conn.execute("SELECT COUNT(*) FROM ledger WHERE delivery_id=? AND state='sending'",
                        (delivery_id,)).fetchone()[0]


def skip_claimed(conn: sqlite3.Connection, delivery_id: int, subscriber_id: int, status: str, *, now: datetime,
                 day: str, transport: str) -> None:
    """A claimed reader found no longer active right before their message would go out: skipped, as
    at the claim, and taken off the day's count (nothing was handed to the transport)."""
    conn.execute("UPDATE ledger SET state='skipped', last_error=?, updated_at=? WHERE delivery_id=? AND "
                 "subscriber_id=? AND state='sending'",
                 (f"no longer active ({status or 'removed'})", timestamp(now), delivery_id, subscriber_id))
    conn.execute("UPDATE daily_counts SET count=CASE WHEN count > 0 THEN count - 1 ELSE 0 END "
                 "WHERE day=? AND transport=?", (day, transport))


def unclaim(conn: sqlite3.Connection, delivery_id: int, rows: Sequence[ClaimedRow], *, day: str,
            transport: str) -> None:
    """Undo a claim whose batch never reached anyone: rows back as they were, the daily count refunded."""
    conn.executemany("UPDATE ledger SET state=?, next_attempt_at=? WHERE delivery_id=? AND subscriber_id=? "
                     "AND state='sending'", [(r.state, r.next_attempt_at, delivery_id, r.sid) for r in rows])
    conn.execute("UPDATE daily_counts SET count=CASE WHEN count > ? THEN count - ? ELSE 0 END "
                 "WHERE day=? AND transport=?", (len(rows), len(rows), day, transport))


def record_transitions(conn: sqlite3.Connection, delivery_id: int, batch_no: int,
                       changes: Sequence[tuple[ClaimedRow, "Transition", str | None]], *, whole_batch: bool,
                       now: datetime) -> None:
    """Store every reader's :class:`~newsletter.outcome.Transition` (with the provider's
    message id when sent) in one statement per chunk. A batch retried whole keeps its
    number, so its retry goes out under the same idempotency key."""
    values = [(row.sid, t.state, t.attempts, t.first_failure_at, t.next_attempt_at,
               batch_no if whole_batch else None, t.uncertain_resends, scrub(t.error) if t.error else None,
               provider_id) for row, t, provider_id in changes]
    update_each(conn, delivery_id, "state=v.column2, attempts=v.column3, first_failure_at=v.column4, "
                "next_attempt_at=v.column5, retry_batch=v.column6, uncertain_resends=v.column7, "
                "last_error=v.column8, provider_id=COALESCE(v.column9, provider_id), updated_at=?", values,
                timestamp(now))


def finish_run(conn: sqlite3.Connection, delivery_id: int, *, state: str, reason: str | None,
               resume_at: datetime | None, now: datetime) -> None:
    """Set the delivery's state at the end of a run: done, paused or deferred (with its next time)."""
    conn.execute("UPDATE deliveries SET state=?, reason=?, resume_at=?, finished_at=? WHERE id=?",
                 (state, scrub(reason) if reason else None, timestamp(resume_at) if resume_at else None,
                  timestamp(now) if state == "done" else None, delivery_id))


def readers_to_send(conn: sqlite3.Connection, slug: str, *, retry_failed: bool = False) -> int | None:
    """How many readers the open delivery of ``slug`` still has to send (those whose retry window
    ran out too, with ``retry_failed``); None when there is none whose list is frozen yet."""
    row = conn.execute(f"SELECT id FROM deliveries WHERE slug=? AND test=0 AND state IN {_OPEN_SQL} "
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
    conn.execute("UPDATE deliveries SET state='held', reason=?, resume_at=NULL, finished_at=NULL WHERE id=?",
                 (scrub(reason), delivery_id))


def open_delivery_id(conn: sqlite3.Connection, slug: str) -> int | None:
    """The unfinished (scheduled, running, paused, deferred or held) delivery of an issue, if any."""
    row = conn.execute(f"SELECT id FROM deliveries WHERE slug=? AND test=0 AND state IN {_OPEN_SQL}",
                       (slug,)).fetchone()
    return row[0] if row else None


def wait_for_editor(conn: sqlite3.Connection, delivery_id: int) -> None:
    """A send the editor stopped by hand stays stopped: no worker or cron dispatch picks
    it up again; only `newsletter send` or `resume` continues it."""
    with transaction(conn):
        conn.execute("UPDATE deliveries SET resume_at=NULL WHERE id=? AND state='paused'", (delivery_id,))


def hold_for_editor(conn: sqlite3.Connection, delivery_id: int, reason: str) -> None:
    """An editor's send that could not start (the transport or a setting refused, nobody was
    contacted) leaves its delivery paused, not ``running``: a worker or cron dispatch would
    otherwise send the whole issue on its own. `newsletter send` or `resume` continues it.
    A delivery another live process is sending is left alone."""
    with transaction(conn):
        if lock_is_live(get_delivery(conn, delivery_id)):  # another process is sending it right now
            return
        conn.execute("UPDATE deliveries SET state='paused', resume_at=NULL, reason=? WHERE id=? AND state='running'",
                     (scrub(reason), delivery_id))


def recent_deliveries(conn: sqlite3.Connection, since: datetime) -> list[tuple[int, int]]:
    """(id, readers sent) of every real delivery started since ``since``: what a complaint rate
    over recent sends is measured against."""
    return [(row[0], row[1]) for row in conn.execute(
        "SELECT d.id, (SELECT COUNT(*) FROM ledger l WHERE l.delivery_id=d.id AND l.state='sent') FROM deliveries d "
        "WHERE d.test=0 AND d.started_at>=?", (timestamp(since),))]


def forget_subscriber(conn: sqlite3.Connection, subscriber_id: int) -> int:
    """Delete a subscriber's ledger rows (erasure requests), so the store can remove them.
    Returns how many rows went. Their deliveries' totals keep counting them."""
    with transaction(conn):
        return conn.execute("DELETE FROM ledger WHERE subscriber_id=?", (int(subscriber_id),)).rowcount


# ---------------------------------------------------------------------------------------
# Scheduling queries (newsletter.schedule decides; the SQL lives here)
# ---------------------------------------------------------------------------------------
def list_open(conn: sqlite3.Connection) -> list[Delivery]:
    """Every delivery not finished; soonest send time first."""
    rows = conn.execute(f"SELECT * FROM deliveries WHERE state IN {_OPEN_SQL} "
                        "ORDER BY send_at IS NULL, send_at, id").fetchall()
    return [Delivery.from_row(r) for r in rows]


def find_delivery(conn: sqlite3.Connection, slug_or_id: str | int) -> Delivery:
    """A delivery by id (``12`` or ``#12``), or the open (else latest) delivery of a slug."""
    text = str(slug_or_id).strip()
    if text.lstrip("#").isdigit() and len(text) < 19:
        return get_delivery(conn, int(text.lstrip("#")))
    row = conn.execute(f"SELECT * FROM deliveries WHERE slug=? ORDER BY state IN {_OPEN_SQL} DESC, id DESC "
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
        "SELECT * FROM deliveries WHERE test=0 AND ((state='scheduled' AND (send_at<=? OR length(send_at)<>27)) OR "
        "(state IN ('paused','deferred') AND resume_at IS NOT NULL AND resume_at<=?) OR state='running') "
        "ORDER BY COALESCE(send_at, created_at), id", (stamp, stamp)).fetchall()
    return [Delivery.from_row(r) for r in rows]


# ---------------------------------------------------------------------------------------
# Status
# ---------------------------------------------------------------------------------------
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
        return self.counts["skipped"]

    @property
    def deferred(self) -> int:
        return self.counts["retry"]

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
        if d.state == "running" and rate:
            eta = remaining / rate
        sender = f"pid {d.lock_pid} on {d.lock_host}" if lock_is_live(d) else None
        next_retry, reasons = _next_retry(conn, d, c)
        out.append(DeliveryStatus(d, c, sum(c.values()), c["sent"], c[RowState.FAILED_PERMANENT] + c[RowState.GAVE_UP],
                                  remaining, rate, eta, sender, next_retry, tuple(reasons)))
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
                       "AND l.state='sent' AND d.test=0 ORDER BY l.delivery_id DESC LIMIT 1",
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
                        " AND l.state IN ('sent', 'sending', 'uncertain'))").fetchall()
    return {row[0] for row in rows}
