"""The delivery engine: a durable, resumable, exactly-once-where-possible send.

A *delivery* is one issue going to the subscriber list. Its recipients are frozen
into the ``ledger`` table in one ``INSERT … SELECT`` when sending first starts,
one row per recipient. The send loop then streams ledger rows in batches (keyset
order by subscriber id, never the whole list in memory) and moves every row
through these states::

    pending ──claim──▶ sending ──transport answered──▶ sent
                                                     ├─▶ retry ──(backoff)──▶ sending …
                                                     ├─▶ failed-temporary   (gave up after max_attempts)
                                                     └─▶ failed-permanent   (5xx, rejected; bounce → subscriber 'bounced')
    pending ──no longer active at send time──▶ skipped
    sending ──found after a crash, resend_uncertain=False──▶ uncertain

Crash safety rests on two commits per batch: the batch is marked ``sending`` and
committed *before* it is handed to the transport, and the results are committed
in one transaction after the transport answered. A row is never marked sent
before the transport said so, and a crash can only leave the one batch that was
in flight in ``sending``: those are the only recipients that may or may not have
received the message. On resume they are either sent again under the same
idempotency key (``resend_uncertain=True``, the default: providers that honour
keys drop the duplicate; SMTP cannot, so a reader may get a second copy) or set
to ``uncertain`` and reported, never sent again (``resend_uncertain=False``).

One process sends a delivery at a time (a lock row in ``deliveries`` with a
heartbeat); a second one gets :class:`DeliveryLockedError`. The lock of a dead
process, or one whose heartbeat is older than ten minutes, is taken over.

Other rules worth knowing:

* Idempotency keys are ``nl-<delivery>-<batch>``. A batch that comes back whole (every
  message failed temporarily, the connection dropped, or it was in flight at a crash) is
  retried as the same rows under the same key; a partial retry gets a new batch and key.
* A transport that raises :class:`TransportError` ("cannot be used at all") has its batch
  put back untouched and the run ends; an ``OSError`` from it fails the batch temporarily.
  Any other exception ends the run with the batch left in ``sending``, like a crash.
* ``rate`` is paced *before* a batch is claimed, so waiting never widens the uncertain window.
* ``daily_cap`` counts every message handed to the transport (as providers count them),
  per UTC day and transport name, in ``daily_counts``; reaching it pauses the delivery
  with ``resume_at`` set to the next UTC midnight.
* Exhausting ``max_attempts`` leaves a row ``failed-temporary`` (final); ``retry_failed``
  gives such rows a fresh set of attempts on the next run.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Sequence

from newsletter.errors import ConfigError, ContentChangedError, DeliveryLockedError, InputError, TransportError
from newsletter.message import OutgoingMessage, PreparedIssue
from newsletter.pacing import Pacer, backoff_delay, interruptible_sleep
from newsletter.transports.base import SendResult, Status, Transport
from newsletter.ledger import (DEV_KEY_PREFIX, HEARTBEAT_EVERY, Delivery, DeliveryReport, Progress, TransportFactory,
                               get_delivery, ledger_counts, lock_is_live, one_line, timestamp, transaction,
                               update_each, utc_day, utcnow)

if TYPE_CHECKING:
    from newsletter.config import Settings


@dataclass(frozen=True)
class DeliveryOptions:
    """How to send. (Unsubscribe tokens are signed with the prepared issue's secret key.)"""

    batch_size: int = 100
    rate: float | None = None          # messages per second over all workers; None = unpaced
    concurrency: int = 1               # worker threads, each with its own transport instance
    daily_cap: int | None = None       # messages per UTC day per transport, counted in the database
    max_attempts: int = 5              # tries per recipient for temporary failures
    resend_uncertain: bool = True      # after a crash: resend the in-flight batch (True) or report it
    retry_failed: bool = False         # give recipients that ran out of attempts a fresh set

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.concurrency < 1 or self.max_attempts < 1:
            raise ConfigError("batch size, concurrency and max attempts must be at least 1")
        if self.rate is not None and self.rate <= 0:
            raise ConfigError("the send rate must be positive (or unset for no limit)")
        if self.daily_cap is not None and self.daily_cap < 1:
            raise ConfigError("the daily cap must be at least 1 (or unset for no cap)")

    @classmethod
    def from_settings(cls, settings: "Settings", **overrides: Any) -> "DeliveryOptions":
        """The options NEWSLETTER_BATCH_SIZE, _RATE, _CONCURRENCY, _DAILY_CAP and _MAX_ATTEMPTS set."""
        rate = settings.number("NEWSLETTER_RATE", None)
        cap = settings.number("NEWSLETTER_DAILY_CAP", None, minimum=1)
        return cls(
            batch_size=settings.integer("NEWSLETTER_BATCH_SIZE", 100, minimum=1),
            rate=rate or None,
            concurrency=settings.integer("NEWSLETTER_CONCURRENCY", 1, minimum=1),
            daily_cap=int(cap) if cap else None,
            max_attempts=settings.integer("NEWSLETTER_MAX_ATTEMPTS", 5, minimum=1),
            **overrides,
        )


# ---------------------------------------------------------------------------------------
# The send loop
# ---------------------------------------------------------------------------------------
@dataclass
class _Row:
    sid: int
    email: str
    name: str
    attempts: int      # after this claim
    prev_state: str    # 'pending' or 'retry', to undo a claim
    prev_next: float | None


@dataclass
class _Job:
    batch_no: int
    rows: list[_Row]
    fresh: bool
    messages: list[OutgoingMessage] = field(default_factory=list)


_DONE, _PAUSE, _IDLE = "done", "pause", "idle"  # claim outcomes besides a job or a wait


class _Run:
    def __init__(self, conn: sqlite3.Connection, delivery_id: int, prepared: PreparedIssue,
                 factory: TransportFactory, options: DeliveryOptions, stop: threading.Event | None,
                 progress: Progress | None, clock: Callable[[], float], sleep: Callable[[float], None],
                 now: Callable[[], datetime]):
        self.conn, self.id, self.prepared, self.factory = conn, int(delivery_id), prepared, factory
        self.o, self.stop, self.progress = options, stop, progress
        self.clock, self.sleep_fn, self.now = clock, sleep, now
        self.db = threading.RLock()
        self.idle = threading.Condition(self.db)
        self.halt = threading.Event()
        self.owner = uuid.uuid4().hex
        self.pacer = Pacer(options.rate, clock)
        self.cursor = 0
        self.inflight = 0
        self.counts: dict[str, int] = {}
        self.pause_note: str | None = None
        self.errors: list[BaseException] = []
        self.sent_this_run = 0
        self.uncertain_resent = self.uncertain_reported = 0
        self.last_heartbeat = now()
        self.transport_name = "transport"

    # ---- entry -------------------------------------------------------------------------
    def run(self) -> DeliveryReport:
        d = get_delivery(self.conn, self.id)
        if d.state == "cancelled":
            raise InputError(f"delivery #{d.id} of {d.slug} was cancelled; start a new one to send the issue")
        r = self.prepared.rendered
        if r.slug != d.slug:
            raise InputError(f"issue {r.slug} is not the issue of delivery #{d.id} ({d.slug})")
        if r.content_hash != d.content_hash:
            raise ContentChangedError(
                f"issue {d.slug} changed since delivery #{d.id} was created (content {d.content_hash[:12]}, now "
                f"{r.content_hash[:12]}); revert the change or pass --force-new-content")
        started = self.clock()
        transports: list[Transport] = []
        try:
            for _ in range(self.o.concurrency):
                transports.append(self.factory())
            t0 = transports[0]
            self.transport_name = t0.name
            key = self.prepared.secret_key
            if t0.real and (not key or key.startswith(DEV_KEY_PREFIX)):
                raise ConfigError("NEWSLETTER_SECRET_KEY is not set; a real send needs it, or the unsubscribe "
                                  "links would change (and stop working) when the key is set later")
            self._acquire(d)
            beat_done = threading.Event()
            beat = threading.Thread(target=self._heartbeat_thread, args=(beat_done,), daemon=True,
                                    name=f"delivery-{self.id}-heartbeat")
            try:
                self._prepare(d)
                beat.start()
                self._work(transports)
                if self.errors:
                    raise self.errors[0]
                return self._finish(self.clock() - started)
            except BaseException as exc:
                self._note_abort(exc)
                raise
            finally:
                beat_done.set()
                if beat.is_alive():
                    beat.join()
                self._release()
        finally:
            for t in transports:
                try:
                    t.close()
                except Exception:  # closing must not hide the real outcome
                    pass

    # ---- lock --------------------------------------------------------------------------
    def _acquire(self, d: Delivery) -> None:
        now = self.now()
        with transaction(self.conn):
            cur = Delivery.from_row(self.conn.execute("SELECT * FROM deliveries WHERE id=?", (self.id,)).fetchone())
            if lock_is_live(cur, now):
                age = (now - cur.lock_heartbeat).total_seconds() if cur.lock_heartbeat else 0
                raise DeliveryLockedError(
                    f"delivery #{cur.id} of {cur.slug} is already being sent by pid {cur.lock_pid} on "
                    f"{cur.lock_host} (last heartbeat {age:.0f}s ago); wait for it to finish or stop it. "
                    "The lock is taken over once that process is gone or silent for 10 minutes")
            self.conn.execute("UPDATE deliveries SET lock_owner=?, lock_pid=?, lock_host=?, lock_heartbeat=? "
                              "WHERE id=?", (self.owner, os.getpid(), socket.gethostname(), timestamp(now), self.id))

    def _release(self) -> None:
        with self.db:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            self.conn.execute("UPDATE deliveries SET lock_owner=NULL, lock_pid=NULL, lock_host=NULL, "
                              "lock_heartbeat=NULL WHERE id=? AND lock_owner=?", (self.id, self.owner))

    def _heartbeat(self, new_batch: bool = False) -> int:
        """Refresh the lock (inside a transaction); returns the batch number to use when asked."""
        now = self.now()
        row = self.conn.execute(
            "UPDATE deliveries SET lock_heartbeat=?, last_batch_no=last_batch_no+? WHERE id=? AND lock_owner=? "
            "RETURNING last_batch_no", (timestamp(now), 1 if new_batch else 0, self.id, self.owner)).fetchone()
        if row is None:
            raise DeliveryLockedError(f"delivery #{self.id}: another process took over the lock "
                                      "(this one was silent too long); stopping")
        self.last_heartbeat = now
        return row[0]

    def _tick(self) -> None:
        if self.now() - self.last_heartbeat >= HEARTBEAT_EVERY:
            with self.db, transaction(self.conn):
                self._heartbeat()

    # ---- before the loop -------------------------------------------------------------
    def _heartbeat_thread(self, done: threading.Event) -> None:
        """Keeps the lock fresh while a long transport call is under way."""
        while not done.wait(5.0):
            try:
                self._tick()
            except BaseException as exc:  # the lock was taken over: stop the workers
                self.errors.append(exc)
                self.halt.set()
                return

    def _prepare(self, d: Delivery) -> None:
        conn, stamp = self.conn, timestamp(self.now())
        with self.db, transaction(conn):
            frozen = conn.execute("SELECT frozen_at FROM deliveries WHERE id=?", (self.id,)).fetchone()[0]
            if frozen is None:  # read under the lock: another process may have started it meanwhile
                # The recipient list, frozen in one statement; readers who already got this issue
                # (or may have, 'sending'/'uncertain') from an earlier cancelled delivery are left out.
                conn.execute(
                    "INSERT INTO ledger(delivery_id, subscriber_id, email, name, state, updated_at) "
                    "SELECT ?, s.id, s.email, s.name, 'pending', ? FROM subscribers s WHERE s.status='active' "
                    "AND NOT EXISTS (SELECT 1 FROM ledger p WHERE p.subscriber_id=s.id "
                    "AND p.state IN ('sent','sending','uncertain') AND p.delivery_id IN "
                    "(SELECT id FROM deliveries WHERE slug=? AND test=0 AND id<>?)) ORDER BY s.id",
                    (self.id, stamp, d.slug, self.id))
                total = conn.execute("SELECT COUNT(*) FROM ledger WHERE delivery_id=?", (self.id,)).fetchone()[0]
                conn.execute("UPDATE deliveries SET frozen_at=?, total=? WHERE id=?", (stamp, total, self.id))
            counts = ledger_counts(conn, self.id)
            now_c = self.clock()
            if self.o.resend_uncertain:
                self.uncertain_resent = counts["sending"] + counts["uncertain"]
                conn.execute(
                    "UPDATE ledger SET state='retry', retry_batch=batch_no, next_attempt_at=?, updated_at=?, "
                    "last_error='interrupted while sending; sent again (a duplicate is possible)' "
                    "WHERE delivery_id=? AND state IN ('sending','uncertain')", (now_c, stamp, self.id))
            else:
                self.uncertain_reported = counts["sending"] + counts["uncertain"]
                conn.execute(
                    "UPDATE ledger SET state='uncertain', updated_at=?, last_error='interrupted while sending: "
                    "may or may not have been delivered; not sent again' WHERE delivery_id=? AND state='sending'",
                    (stamp, self.id))
            if self.o.retry_failed:
                conn.execute("UPDATE ledger SET state='pending', attempts=0, next_attempt_at=NULL, updated_at=? "
                             "WHERE delivery_id=? AND state='failed-temporary'", (stamp, self.id))
            # Retry times were on the previous run's clock; what was waiting is due now.
            conn.execute("UPDATE ledger SET next_attempt_at=? WHERE delivery_id=? AND state='retry'",
                         (now_c, self.id))
            conn.execute("UPDATE deliveries SET state='running', transport=?, reason=NULL, resume_at=NULL, "
                         "started_at=COALESCE(started_at, ?) WHERE id=?", (self.transport_name, stamp, self.id))
            self.counts = ledger_counts(conn, self.id)
            self.total = sum(self.counts.values())

    # ---- workers -----------------------------------------------------------------------
    def _stopped(self) -> bool:
        return self.halt.is_set() or (self.stop is not None and self.stop.is_set())

    def _work(self, transports: Sequence[Transport]) -> None:
        if len(transports) == 1:
            self._worker(transports[0])
            return
        threads = [threading.Thread(target=self._thread, args=(t,), name=f"delivery-{self.id}-{i}", daemon=True)
                   for i, t in enumerate(transports)]
        try:
            for th in threads:
                th.start()
            for th in threads:
                th.join()
        except BaseException:
            self.halt.set()  # e.g. KeyboardInterrupt in join: workers finish their batch and stop
            for th in threads:
                th.join()
            raise
        if self.errors:
            raise self.errors[0]

    def _thread(self, transport: Transport) -> None:
        try:
            self._worker(transport)
        except BaseException as exc:
            self.errors.append(exc)
            self.halt.set()
            with self.idle:
                self.idle.notify_all()

    def _worker(self, transport: Transport) -> None:
        size = self.o.batch_size
        while not self._stopped():
            # Pace *before* claiming, so a batch is 'sending' (uncertain after a crash) only
            # while the transport really has it, never while we wait for our turn.
            booked = size if self.pacer.rate is not None and self._claimable() else 0
            if booked:
                wait = self.pacer.reserve(booked)
                if wait > 0 and not self._wait(wait):
                    self.pacer.refund(booked)
                    return
            job = self._claim()
            if booked:
                self.pacer.refund(booked - (len(job.rows) if isinstance(job, _Job) else 0))
            if job == _DONE:
                return
            if job == _PAUSE:
                self.halt.set()
                return
            if job == _IDLE:  # others still have batches in flight that may come back as retries
                with self.idle:
                    if self.inflight and not self._stopped():
                        self.idle.wait(0.5)
                continue
            if isinstance(job, float):  # nothing due before the next retry
                self._wait(job)
                continue
            assert isinstance(job, _Job)
            if job.rows:
                self._record(job, self._send(transport, job))

    def _claimable(self) -> bool:
        """Is there a batch to claim right now? (A cheap look, so the end of a run costs no pacing wait.)"""
        with self.db:
            if self.conn.execute("SELECT 1 FROM ledger WHERE delivery_id=? AND subscriber_id>? AND state='pending' "
                                 "LIMIT 1", (self.id, self.cursor)).fetchone():
                return True
            head = self.conn.execute("SELECT next_attempt_at FROM ledger INDEXED BY ledger_retry WHERE delivery_id=? "
                                     "AND state='retry' ORDER BY next_attempt_at LIMIT 1", (self.id,)).fetchone()
            return head is not None and head[0] <= self.clock()

    def _wait(self, seconds: float) -> bool:
        """Sleep, refreshing the heartbeat; in 1 s steps when something may ask us to stop."""
        chunk = 1.0 if self.stop is not None or self.o.concurrency > 1 else HEARTBEAT_EVERY.total_seconds()
        return interruptible_sleep(seconds, self.sleep_fn, self._stopped, chunk=chunk, tick=self._tick)

    def _select(self, where: str, params: tuple, retry: bool = False) -> list[sqlite3.Row]:
        # Retry rows are found through the small partial index, never by scanning the delivery.
        hint = "INDEXED BY ledger_retry " if retry else ""
        return self.conn.execute(
            "SELECT l.subscriber_id, l.email, l.name, l.attempts, l.state, l.next_attempt_at, s.status "
            f"FROM ledger l {hint}LEFT JOIN subscribers s ON s.id = l.subscriber_id "
            f"WHERE l.delivery_id=? AND {where}", (self.id, *params)).fetchall()

    def _claim(self) -> "_Job | float | str":
        """Pick the next batch and mark it 'sending' (committed before the transport sees it)."""
        with self.db, transaction(self.conn) as conn:
            stamp = timestamp(self.now())
            limit = self.o.batch_size
            day = utc_day(self.now())
            if self.o.daily_cap is not None:
                row = conn.execute("SELECT count FROM daily_counts WHERE day=? AND transport=?",
                                   (day, self.transport_name)).fetchone()
                used = row[0] if row else 0
                if used >= self.o.daily_cap:
                    self.pause_note = (f"daily cap of {self.o.daily_cap} messages reached for {self.transport_name} "
                                       f"on {day} (UTC); the rest goes out after midnight UTC")
                    return _PAUSE
                limit = min(limit, self.o.daily_cap - used)
            now_c = self.clock()
            rows: list[sqlite3.Row] = []
            batch_no: int | None = None
            fresh = False
            head = conn.execute("SELECT retry_batch, next_attempt_at FROM ledger WHERE delivery_id=? AND "
                                "state='retry' ORDER BY next_attempt_at LIMIT 1", (self.id,)).fetchone()
            if head is not None and head[1] <= now_c:
                if head[0] is not None:  # a whole batch again: same rows, same idempotency key
                    rows = self._select("l.state='retry' AND l.retry_batch=? ORDER BY l.subscriber_id", (head[0],),
                                        retry=True)
                    if len(rows) <= limit:
                        batch_no = head[0]
                    else:  # split by the daily cap: the key no longer names one batch, so none reuses it
                        conn.execute("UPDATE ledger SET retry_batch=NULL WHERE delivery_id=? AND state='retry' "
                                     "AND retry_batch=?", (self.id, head[0]))
                        rows = rows[:limit]
                else:
                    rows = self._select("l.state='retry' AND l.retry_batch IS NULL AND l.next_attempt_at<=? "
                                        "ORDER BY l.next_attempt_at LIMIT ?", (now_c, limit), retry=True)
            if not rows:
                rows = self._select("l.subscriber_id>? AND l.state='pending' ORDER BY l.subscriber_id LIMIT ?",
                                    (self.cursor, limit))
                fresh = True
            if not rows:
                if head is not None:
                    return float(max(0.0, head[1] - now_c))
                return _IDLE if self.inflight else _DONE
            if fresh:
                self.cursor = rows[-1][0]
            gone = [r for r in rows if r["status"] != "active"]
            live = [r for r in rows if r["status"] == "active"]
            if gone:
                conn.executemany(
                    "UPDATE ledger SET state='skipped', last_error=?, updated_at=? WHERE delivery_id=? AND "
                    "subscriber_id=?", [(f"no longer active ({r['status'] or 'removed'})", stamp, self.id, r[0])
                                        for r in gone])
                for r in gone:
                    self._move(r["state"], "skipped")
                batch_no = None
            if not live:
                self._heartbeat()
                return _Job(0, [], fresh)
            if batch_no is None:
                batch_no = self._heartbeat(new_batch=True)
            else:
                self._heartbeat()
            if fresh and not gone:  # a contiguous keyset range of pending rows: one statement
                conn.execute("UPDATE ledger SET state='sending', batch_no=?, attempts=attempts+1, updated_at=? "
                             "WHERE delivery_id=? AND subscriber_id BETWEEN ? AND ? AND state='pending'",
                             (batch_no, stamp, self.id, live[0][0], live[-1][0]))
            else:
                update_each(conn, self.id, "state='sending', batch_no=?, attempts=attempts+1, updated_at=?",
                             [(r[0],) for r in live], batch_no, stamp)
            conn.execute("INSERT INTO daily_counts(day, transport, count) VALUES(?, ?, ?) ON CONFLICT(day, transport) "
                         "DO UPDATE SET count=count+excluded.count", (day, self.transport_name, len(live)))
            job = _Job(batch_no, [_Row(r[0], r[1], r[2], r[3] + 1, r[4], r[5]) for r in live], fresh)
            for r in live:
                self._move(r["state"], "sending")
            self.inflight += 1
        job.messages = [self.prepared.for_subscriber(r.sid, r.email, r.name) for r in job.rows]
        return job

    def _unclaim(self, job: _Job) -> None:
        """Undo a claim whose batch never reached the transport."""
        with self.db, transaction(self.conn) as conn:
            conn.executemany("UPDATE ledger SET state=?, next_attempt_at=?, attempts=attempts-1 "
                             "WHERE delivery_id=? AND subscriber_id=? AND state='sending'",
                             [(r.prev_state, r.prev_next, self.id, r.sid) for r in job.rows])
            conn.execute("UPDATE daily_counts SET count=MAX(0, count-?) WHERE day=? AND transport=?",
                         (len(job.rows), utc_day(self.now()), self.transport_name))
            for r in job.rows:
                self._move("sending", r.prev_state)
            if job.fresh:
                self.cursor = min(self.cursor, job.rows[0].sid - 1)
            self.inflight -= 1
            self.idle.notify_all()

    def _send(self, transport: Transport, job: _Job) -> list[SendResult]:
        try:
            results = list(transport.send(job.messages, idempotency_key=f"nl-{self.id}-{job.batch_no}"))
        except TransportError:
            self._unclaim(job)  # the transport could not be used at all: nothing of this batch left us
            raise
        except OSError as exc:  # a connection dropped under the transport: the whole batch is retried
            error = one_line(f"{type(exc).__name__}: {exc}")
            return [SendResult(m.to_email, Status.FAILED_TEMPORARY, error=error) for m in job.messages]
        if len(results) != len(job.messages):
            error = f"transport returned {len(results)} results for {len(job.messages)} messages"
            results = (results + [SendResult(m.to_email, Status.FAILED_TEMPORARY, error=error)
                                  for m in job.messages])[:len(job.messages)]
        return results

    def _record(self, job: _Job, results: list[SendResult]) -> None:
        """Store every recipient's result in one transaction, after the transport answered."""
        o, now_c = self.o, self.clock()
        sent, perm, final, retry, bounced, uncertain = [], [], [], [], [], []
        for row, res in zip(job.rows, results):
            status = Status(res.status)
            if status is Status.UNCERTAIN and not o.resend_uncertain:
                uncertain.append((one_line(f"may or may not have been delivered: {res.error}"), row.sid))
                continue
            if status is Status.UNCERTAIN:
                self.uncertain_resent += 1  # resent under the same policy as after a crash
            if status.delivered:
                sent.append((res.provider_id, row.sid))
            elif status in (Status.FAILED_TEMPORARY, Status.UNCERTAIN):
                target = final if row.attempts >= o.max_attempts else retry
                target.append((row, res))
            else:
                perm.append((one_line(res.error or status.value), row.sid))
                if res.bounce:
                    bounced.append((one_line(res.error or "bounced"), row.sid))
        whole = len(retry) == len(job.rows)
        if whole:  # the whole batch comes back together, under its idempotency key
            at = now_c + max(backoff_delay(r.attempts, res.retry_after) for r, res in retry)
            retry_rows = [(at, job.batch_no, one_line(res.error), r.sid) for r, res in retry]
        else:
            retry_rows = [(now_c + backoff_delay(r.attempts, res.retry_after), None, one_line(res.error), r.sid)
                          for r, res in retry]
        with self.db, transaction(self.conn) as conn:
            stamp = timestamp(self.now())
            if sent:
                update_each(conn, self.id, "state='sent', provider_id=v.column2, last_error=NULL, updated_at=?",
                             [(s, p) for p, s in sent], stamp)
            if perm:
                update_each(conn, self.id, "state='failed-permanent', last_error=v.column2, updated_at=?",
                             [(s, e) for e, s in perm], stamp)
            if uncertain:
                self.uncertain_reported += len(uncertain)
                update_each(conn, self.id, "state='uncertain', last_error=v.column2, updated_at=?",
                             [(s, e) for e, s in uncertain], stamp)
            if final:
                update_each(conn, self.id, "state='failed-temporary', last_error=v.column2, updated_at=?",
                             [(r.sid, one_line(f"gave up after {r.attempts} attempts: {res.error}"))
                              for r, res in final], stamp)
            if retry_rows:
                update_each(conn, self.id, "state='retry', next_attempt_at=v.column2, retry_batch=v.column3, "
                             "last_error=v.column4, updated_at=?",
                             [(sid, at, rb, e) for at, rb, e, sid in retry_rows], stamp)
            if bounced:
                conn.executemany("UPDATE subscribers SET status='bounced', status_reason=?, changed_at=? "
                                 "WHERE id=? AND status IN ('active','unsubscribed')",
                                 [(f"bounced: {e}", stamp, s) for e, s in bounced])
            self._heartbeat()
            self._move("sending", "sent", len(sent))
            self._move("sending", "failed-permanent", len(perm))
            self._move("sending", "failed-temporary", len(final))
            self._move("sending", "retry", len(retry))
            self.sent_this_run += len(sent)
            self.inflight -= 1
            self.idle.notify_all()
            snapshot = self._progress_values()
        if self.progress is not None:
            self.progress(*snapshot)

    # ---- bookkeeping ---------------------------------------------------------------------
    def _move(self, src: str, dst: str, n: int = 1) -> None:
        self.counts[src] -= n
        self.counts[dst] += n

    def _progress_values(self) -> tuple[int, int, int, int]:
        c = self.counts
        open_ = c["pending"] + c["retry"] + c["sending"]
        return self.total - open_, self.total, c["sent"], c["failed-permanent"] + c["failed-temporary"]

    def _finish(self, elapsed: float) -> DeliveryReport:
        with self.db, transaction(self.conn) as conn:
            c = ledger_counts(conn, self.id)
            left = c["pending"] + c["retry"] + c["sending"]
            now = self.now()
            stamp = timestamp(now)
            if left == 0:
                state, note = "done", (f"{c['uncertain']} recipients are uncertain (interrupted mid-send, not sent "
                                       "again); see the failed list" if c["uncertain"] else "")
                conn.execute("UPDATE deliveries SET state='done', finished_at=?, reason=? WHERE id=?",
                             (stamp, note or None, self.id))
            elif self.pause_note is not None:
                state, note = "paused", self.pause_note
                midnight = datetime.combine(now.astimezone(timezone.utc).date() + timedelta(days=1),
                                            datetime.min.time(), timezone.utc)
                conn.execute("UPDATE deliveries SET state='paused', resume_at=?, reason=? WHERE id=?",
                             (timestamp(midnight), note, self.id))
            else:
                state, note = "paused", f"stopped with {left} recipients left; run the send again to continue"
                conn.execute("UPDATE deliveries SET state='paused', resume_at=?, reason=? WHERE id=?",
                             (stamp, note, self.id))
        return DeliveryReport(
            self.id, self.prepared.rendered.slug, state, total=sum(c.values()), sent=c["sent"],
            failed_permanent=c["failed-permanent"], failed_temporary=c["failed-temporary"], skipped=c["skipped"],
            pending=left, uncertain_resent=self.uncertain_resent,
            uncertain_reported=self.uncertain_reported if not self.o.resend_uncertain else 0,
            sent_this_run=self.sent_this_run, elapsed=elapsed,
            rate=self.sent_this_run / elapsed if elapsed > 0 else 0.0, note=note)

    def _note_abort(self, exc: BaseException) -> None:
        """Leave a reason on the delivery when a run ends with an exception (state stays resumable)."""
        if isinstance(exc, DeliveryLockedError):
            return
        try:
            with self.db:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                self.conn.execute("UPDATE deliveries SET reason=? WHERE id=? AND lock_owner=?",
                                  (one_line(f"interrupted: {exc or type(exc).__name__}"), self.id, self.owner))
        except sqlite3.Error:
            pass


def run_delivery(conn: sqlite3.Connection, delivery_id: int, prepared: PreparedIssue,
                 transport_factory: TransportFactory, *, options: DeliveryOptions,
                 stop: threading.Event | None = None, progress: Progress | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 now: Callable[[], datetime] = utcnow) -> DeliveryReport:
    """Send (or continue sending) a delivery until it is done, paused by the daily cap, or stopped.

    ``stop`` (set by a SIGTERM/SIGINT handler) finishes the batch in flight, records it and
    returns with the delivery ``paused`` and resumable. ``clock``/``sleep`` drive pacing and
    retry waits; ``now`` gives wall time (timestamps, the UTC day for ``daily_cap``, the lock).
    Raises :class:`DeliveryLockedError` when another live process is sending it,
    :class:`ContentChangedError` when ``prepared`` is not the content the delivery was made with.
    """
    return _Run(conn, delivery_id, prepared, transport_factory, options, stop, progress, clock, sleep, now).run()

