"""The SQL behind a send (:mod:`newsletter.delivery` decides; the statements live here):
create or resume a delivery, take and renew its lock (the lease), freeze its readers, claim a
batch, record each reader's outcome, and finish the run.

Recipients are frozen into the ledger in one ``INSERT … SELECT`` when a delivery starts, so
the list never changes under a running send. What each answer does to a row is
:mod:`newsletter.outcome`.
"""

import os
import sqlite3
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Callable, NamedTuple, Sequence

from newsletter.db import backend
from newsletter.errors import ContentChangedError, DeliveryLockedError, InputError, scrub
from newsletter.ledger.records import DEFAULT_LEASE, OPEN_SQL, Delivery, get_delivery, hostname, lock_is_live
from newsletter.ledger.reports import ledger_counts, next_due, open_rows
from newsletter.ledger.schema import retry_index, transaction
from newsletter.patterns import compiled
from newsletter.states import REACHED_ROW_STATES, DeliveryState, RowState, SubscriberStatus, sql_list
from newsletter.timestamps import timestamp, utcnow

if TYPE_CHECKING:  # only for types: the scheduler loads neither the builder nor transports
    from newsletter.message import PreparedIssue
    from newsletter.outcome import Transition


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


def _changed(d: sqlite3.Row, new_hash: str) -> ContentChangedError:
    verb = "was sent" if d["state"] == DeliveryState.DONE else "started sending"
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
        d = conn.execute(f"SELECT * FROM deliveries WHERE slug=? AND test=0 AND state IN {OPEN_SQL} "
                         "ORDER BY id DESC LIMIT 1", (r.slug,)).fetchone()
        if d is None:
            d = conn.execute(f"SELECT * FROM deliveries WHERE slug=? AND test=0 AND state='{DeliveryState.DONE}' "
                             "ORDER BY id DESC LIMIT 1", (r.slug,)).fetchone()
            if d is not None and scheduled_for is not None:
                raise InputError(f"issue {r.slug} was already sent (delivery #{d['id']}, finished "
                                 f"{d['finished_at']}); it is not scheduled again")
        if d is not None and scheduled_for is not None:
            if d["frozen_at"] is not None or d["state"] not in (DeliveryState.SCHEDULED, DeliveryState.HELD):
                raise InputError(f"issue {r.slug} is already being sent (delivery #{d['id']}, {d['state']}); "
                                 "it cannot be scheduled again")
            conn.execute("UPDATE deliveries SET send_at=?, content_hash=?, subject=?, issue_number=?, "
                         f"state='{DeliveryState.SCHEDULED}', reason=NULL WHERE "
                         "id=?", (send_at, r.content_hash, r.subject,
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
            (r.slug, r.number, r.content_hash, r.subject, DeliveryState.SCHEDULED if send_at else DeliveryState.RUNNING,
             stamp, send_at,
             os.urandom(8).hex())).fetchone()[0])  # secrets.token_hex, without importing random & co at start-up


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
                     (owner, os.getpid(), hostname(), timestamp(now), delivery_id))
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
    conn.execute(f"UPDATE ledger SET claimed_by=NULL WHERE delivery_id=? AND state='{RowState.SENDING}' "
                 "AND claimed_by=?", (delivery_id, owner))


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
            f"SELECT ?, s.id, s.email, s.name, '{RowState.PENDING}', ?, {edition} FROM subscribers s WHERE "
            f"s.status='{SubscriberStatus.ACTIVE}' "
            "AND NOT EXISTS (SELECT 1 FROM ledger p WHERE p.subscriber_id=s.id "
            f"AND p.state IN {sql_list(REACHED_ROW_STATES)} AND p.delivery_id IN "
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
    orphaned = (f"state='{RowState.SENDING}' AND (claimed_by IS NULL OR claimed_by=? OR updated_at IS NULL "
                "OR updated_at<?)", (taken_from or "", timestamp(now - lease)))
    interrupted = conn.execute(f"SELECT COUNT(*) FROM ledger WHERE delivery_id=? AND {orphaned[0]}",
                               (d.id, *orphaned[1])).fetchone()[0]
    if resend_interrupted:
        conn.execute(f"UPDATE ledger SET state='{RowState.RETRY}', retry_batch=batch_no, next_attempt_at=0, "
                     "updated_at=?, last_error='interrupted while sending (a crash or kill); sent again, a "
                     f"duplicate is possible' WHERE delivery_id=? AND {orphaned[0]}", (stamp, d.id, *orphaned[1]))
    else:
        conn.execute(f"UPDATE ledger SET state='{RowState.UNCERTAIN}', updated_at=?, last_error='interrupted while "
                     "sending (a crash or kill): may or may not have been delivered; not sent again' "
                     f"WHERE delivery_id=? AND {orphaned[0]}", (stamp, d.id, *orphaned[1]))
    if retry_now:
        conn.execute(f"UPDATE ledger SET next_attempt_at=0 WHERE delivery_id=? AND state='{RowState.RETRY}'", (d.id,))
    if retry_failed:
        conn.execute(f"UPDATE ledger SET state='{RowState.PENDING}', attempts=0, first_failure_at=NULL, "
                     "next_attempt_at=NULL, "
                     f"updated_at=? WHERE delivery_id=? AND state='{RowState.GAVE_UP}'", (stamp, d.id))
    counts = ledger_counts(conn, d.id)
    if open_rows(counts) or d.state != DeliveryState.DONE:
        conn.execute(f"UPDATE deliveries SET state='{DeliveryState.RUNNING}', transport=?, reason=NULL, "
                     "resume_at=NULL, "
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
    langs = conn.execute(f"SELECT DISTINCT lang FROM subscribers WHERE status='{SubscriberStatus.ACTIVE}' AND "
                         "lang<>''").fetchall()
    return [(lang, tag) for (lang,) in langs if (tag := edition_for(lang))]


def edition_case(pairs: Sequence[tuple[str, str]]) -> tuple[str, list[str]]:
    """The SQL giving a reader (``s``) their edition: ``CASE s.lang WHEN 'zh' THEN 'zh-Hans' … ELSE '' END``
    (``''``: the main one), and its parameters."""
    if not pairs:
        return "''", []
    return "CASE s.lang " + "WHEN ? THEN ? " * len(pairs) + "ELSE '' END", [x for pair in pairs for x in pair]


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
    hint = retry_index(conn) if retry else ""
    return conn.execute(f"SELECT {_ROW_COLUMNS} FROM ledger l {hint}LEFT JOIN subscribers s ON s.id = l.subscriber_id "
                        f"WHERE l.delivery_id=? AND {where}", (delivery_id, *params)).fetchall()


def claimable(conn: sqlite3.Connection, delivery_id: int, cursor: int, now_ts: float) -> bool:
    """Is a batch due right now? (A cheap look, so the end of a run costs no pacing wait.)"""
    if conn.execute(f"SELECT 1 FROM ledger WHERE delivery_id=? AND subscriber_id>? AND state='{RowState.PENDING}' "
                    "LIMIT 1",
                    (delivery_id, cursor)).fetchone():
        return True
    head = next_due(conn, delivery_id)
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
    head = conn.execute(f"SELECT retry_batch, next_attempt_at FROM ledger {retry_index(conn)}WHERE "
                        f"delivery_id=? AND state='{RowState.RETRY}' ORDER BY next_attempt_at LIMIT "
                        "1", (d.id,)).fetchone()
    if head is not None and head[1] <= now_ts:
        if head[0] is not None:
            rows = _select(conn, d.id, f"l.state='{RowState.RETRY}' AND l.retry_batch=? ORDER BY "
                                       "l.subscriber_id", (head[0],),
                           retry=True)
            if len(rows) <= limit:
                batch_no = head[0]
            else:  # split by the daily cap: the key no longer names one batch, so none reuses it
                conn.execute(f"UPDATE ledger SET retry_batch=NULL WHERE delivery_id=? AND state='{RowState.RETRY}' "
                             "AND retry_batch=?", (d.id, head[0]))
                rows = rows[:limit]
        else:
            rows = _select(conn, d.id, f"l.state='{RowState.RETRY}' AND l.retry_batch IS NULL AND l.next_attempt_at<=? "
                           "ORDER BY l.next_attempt_at LIMIT ?", (now_ts, limit), retry=True)
    fresh = not rows
    if fresh:
        rows = _select(conn, d.id, f"l.subscriber_id>? AND l.state='{RowState.PENDING}' ORDER BY l.subscriber_id "
                                   "LIMIT ?"
                       + _SKIP_LOCKED[backend(conn)], (cursor, limit))
    if not rows:
        return None if head is None else max(0.0, head[1] - now_ts)
    gone = [r for r in rows if r["status"] != SubscriberStatus.ACTIVE]
    live = [r for r in rows if r["status"] == SubscriberStatus.ACTIVE]
    if gone:
        update_each(conn, d.id, f"state='{RowState.SKIPPED}', last_error=v.column2, updated_at=?",
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
        conn.execute(f"UPDATE ledger SET state='{RowState.SENDING}', batch_no=?, updated_at=?, claimed_by=? "
                     f"WHERE delivery_id=? AND subscriber_id BETWEEN ? AND ? AND state='{RowState.PENDING}'",
                     (claim.batch_no, stamp, owner, d.id, live[0][0], live[-1][0]))
    else:
        update_each(conn, d.id, f"state='{RowState.SENDING}', batch_no=?, updated_at=?, claimed_by=?",
                    [(r[0],) for r in live], claim.batch_no, stamp, owner)
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
    conn.execute(f"UPDATE ledger SET state='{RowState.RETRY}', retry_batch=NULL, next_attempt_at=0, updated_at=?, "
                 "last_error='interrupted while sending (a worker went silent past its lease); sent again, "
                 f"a duplicate is possible' WHERE delivery_id=? AND state='{RowState.SENDING}' AND updated_at<?",
                 (timestamp(stale_before), delivery_id, timestamp(stale_before)))
    return conn.execute(f"SELECT COUNT(*) FROM ledger WHERE delivery_id=? AND state='{RowState.SENDING}'",
                        (delivery_id,)).fetchone()[0]


def skip_claimed(conn: sqlite3.Connection, delivery_id: int, subscriber_id: int, status: str, *, now: datetime,
                 day: str, transport: str) -> None:
    """A claimed reader found no longer active right before their message would go out: skipped, as
    at the claim, and taken off the day's count (nothing was handed to the transport)."""
    conn.execute(f"UPDATE ledger SET state='{RowState.SKIPPED}', last_error=?, updated_at=? WHERE delivery_id=? AND "
                 f"subscriber_id=? AND state='{RowState.SENDING}'",
                 (f"no longer active ({status or 'removed'})", timestamp(now), delivery_id, subscriber_id))
    conn.execute("UPDATE daily_counts SET count=CASE WHEN count > 0 THEN count - 1 ELSE 0 END "
                 "WHERE day=? AND transport=?", (day, transport))


def unclaim(conn: sqlite3.Connection, delivery_id: int, rows: Sequence[ClaimedRow], *, day: str,
            transport: str) -> None:
    """Undo a claim whose batch never reached anyone: rows back as they were, the daily count refunded."""
    conn.executemany("UPDATE ledger SET state=?, next_attempt_at=? WHERE delivery_id=? AND subscriber_id=? "
                     f"AND state='{RowState.SENDING}'",
                     [(r.state, r.next_attempt_at, delivery_id, r.sid) for r in rows])
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
                  timestamp(now) if state == DeliveryState.DONE else None, delivery_id))
