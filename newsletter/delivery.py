"""The delivery engine: a durable, resumable send, in three steps per batch: claim → send → record.

A *delivery* is one issue going to the subscriber list. Its recipients are frozen
into the ledger when sending first starts, one row per reader. Each worker then
loops:

1. **claim** (:func:`newsletter.ledger.engine.claim_batch`): the next due batch, marked
   ``sending`` and committed *before* the transport sees it;
2. **send**: the transport answers one :class:`SendResult` per message;
3. **record**: :func:`newsletter.outcome.decide` turns each answer into the row's
   next state (a pure function), and all of them are committed in one transaction.

Row states::

    pending ──claim──▶ sending ──answer──▶ sent | failed-permanent (bounce → store) | uncertain
                                      └──▶ retry ──(backoff, or Retry-After)──▶ sending …
                                               └──▶ gave-up  (only after the retry window)
    pending ──no longer active──▶ skipped
    sending ──found after a crash──▶ retry (same batch, same key) | uncertain (--no-resend-uncertain)

Rules worth knowing:

* Deferred, never dropped: a delivery is ``done`` only when every row is final. When
  only retries are left and the next one is further off than ``max_wait`` (measured
  from the last reader finished), the run ends ``deferred`` with ``resume_at`` = the
  next retry; ``newsletter worker``/``dispatch`` pick it up then, or ``resume``.
* An attempt is counted only when the transport answered about that reader. A
  rate-limit answer, a dropped connection and a resend after a crash count none.
* A refusal of the *sender* (the transport marks it ``about_sender``: our HELO name, login,
  relay permission) is charged to nobody: the run stops and the delivery is ``held`` with the
  reason (:func:`newsletter.ledger.deliveries.hold`) until the editor fixes the configuration and resumes.
* Losing the server mid-send (:class:`~newsletter.errors.TransportUnavailableError` once the
  transport has worked in this run) is a temporary failure: the batch is retried on the backoff
  schedule, in the foreground while the wait is short. Only a transport that never worked
  raises (exit 4).
* ``Transport.open()`` is called on every transport before the lock and the first
  claim: a configuration error leaves every reader untouched. A transport that raises
  (rather than answering) puts its batch back untouched; an ``OSError`` is "no answer".
  Only a crash (the process dies, or a BaseException) leaves a batch in ``sending``.
* Idempotency keys are ``nl-<nonce>-<delivery>-<batch>``; a batch that comes back
  whole is retried as the same rows under the same key.
* ``rate`` is paced *before* a batch is claimed, so waiting never widens the uncertain
  window; it is an upper bound (transports slow themselves down on rate limits).
* ``daily_cap`` counts every message handed to the transport per UTC day and transport;
  reaching it defers the delivery until the next UTC midnight.
* Unsubscribes the web app spooled while the database was locked are applied before
  the list is frozen, before every claim and at every resume (:mod:`newsletter.unsubscribe_spool`).
* A ``done`` delivery sends nobody again; ``retry_failed`` alone reopens the readers
  whose retry window ran out.
"""

from __future__ import annotations

import math
import random
import sqlite3
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from newsletter.ledger import deliveries, engine, reports
from newsletter.clock import SYSTEM, Clock
from newsletter.config import is_development_key
from newsletter.db import backend
from newsletter.errors import (ConfigError, ContentChangedError, DeliveryLockedError, InputError, NewsletterError,
                               TransportError, TransportUnavailableError, scrub)
from newsletter.ledger.engine import Claim
from newsletter.ledger.records import DEFAULT_LEASE, Delivery, Progress, TransportFactory, get_delivery, heartbeat_every
from newsletter.ledger.reports import DeliveryReport
from newsletter.ledger.schema import transaction
from newsletter.timestamps import utc_day
from newsletter.events import Event, Kind, apply_event
from newsletter.message import OutgoingMessage, PreparedIssue
from newsletter import retry
from newsletter.outcome import Answer, Policy, Row, Transition, classify, decide_batch
from newsletter.pacing import Pacer, interruptible_sleep
from newsletter.prepared_editions import PreparedEditions, as_editions
from newsletter.store import SubscriberStore, reader_status
from newsletter.transports.base import SendResult, Status, Transport
from newsletter.states import DeliveryState, RowState, SubscriberStatus
from newsletter.unsubscribe_spool import apply_spool

if TYPE_CHECKING:
    from newsletter.config import Settings
    from newsletter.guard import Guard, Tally

#: Bounds of NEWSLETTER_LEASE_SECONDS: a heartbeat every third of it must fit between two database
#: waits, and a dead sender's readers should not wait for hours.
MIN_LEASE_SECONDS, MAX_LEASE_SECONDS = 15, 3600
#: How often (seconds) a worker on PostgreSQL looks for readers another worker claimed longer than
#: the lease ago (a worker killed mid-batch) and puts them back to be sent: the takeover's delay
#: is at most the lease plus this.
RECLAIM_EVERY = 5.0
#: A per-message fence (PostgreSQL) is held while the server answers that one message; should a
#: worker hang there, the database ends its session after this, so no unsubscribe waits longer.
FENCE_IDLE_TIMEOUT = "120s"
#: How long a run keeps waiting for due retries (newsletter.retry's, named here too).
DEFAULT_MAX_WAIT = retry.DEFAULT_MAX_WAIT
#: Called while a run waits for a retry: (seconds left, why).
Waiting = Callable[[float, str], None]


@dataclass(frozen=True)
class DeliveryOptions:
    """How to send. (Unsubscribe tokens are signed with the prepared issue's secret key.)"""

    batch_size: int = 100
    rate: float | None = None          # messages per second over all workers: an upper bound; None = unpaced
    concurrency: int = 1               # worker threads, each with its own transport instance
    daily_cap: int | None = None       # messages per UTC day per transport, counted in the database
    retry_window: float = retry.DEFAULT_RETRY_WINDOW  # seconds a reader's temporary failures are retried
    max_wait: float = DEFAULT_MAX_WAIT  # seconds a run waits in the foreground for retries before deferring
    resend_uncertain: bool = True      # resend (once) readers that may or may not have got it, or report them
    retry_failed: bool = False         # give readers whose retry window ran out a fresh one
    retry_now: bool = False            # the editor's `resume`: deferred readers are due at once
    guard: Guard | None = None         # hold the send when complaints or hard bounces pass a threshold
    despite_guard: bool = False        # the editor resumes a guard hold deliberately: count from now on
    lease_seconds: float = DEFAULT_LEASE.total_seconds()  # a silent sender's delivery is taken over after this
    join_running: bool = False         # PostgreSQL workers: help the lock holder send a running delivery

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.concurrency < 1:
            raise ConfigError("batch size and concurrency must be at least 1")
        if self.rate is not None and not (self.rate > 0 and math.isfinite(self.rate)):
            raise ConfigError("the send rate must be positive (or unset for no limit)")
        if self.daily_cap is not None and self.daily_cap < 1:
            raise ConfigError("the daily cap must be at least 1 (or unset for no cap)")
        if not (self.retry_window >= 0 and math.isfinite(self.retry_window)):
            raise ConfigError("the retry window must be a finite number of hours, 0 or more")
        if not (self.max_wait >= 0 and math.isfinite(self.max_wait)):
            raise ConfigError("the foreground wait must be a finite number of seconds, 0 or more")
        if not (MIN_LEASE_SECONDS <= self.lease_seconds <= MAX_LEASE_SECONDS):
            raise ConfigError(f"NEWSLETTER_LEASE_SECONDS must be {MIN_LEASE_SECONDS}–{MAX_LEASE_SECONDS} seconds")

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.lease_seconds)

    @property
    def claim_size(self) -> int:
        """Readers per batch. With a rate, a batch is at most one second's worth: a batch goes
        out in one burst, so a larger one would exceed ``rate`` within that second."""
        if self.rate is None:
            return self.batch_size
        return max(1, min(self.batch_size, math.floor(self.rate)))

    @property
    def policy(self) -> Policy:
        return Policy(retry_window=self.retry_window, resend_uncertain=self.resend_uncertain)

    @classmethod
    def from_settings(cls, settings: "Settings", **overrides: Any) -> "DeliveryOptions":
        """The options NEWSLETTER_BATCH_SIZE, _RATE, _CONCURRENCY, _DAILY_CAP, _RETRY_WINDOW (hours)
        and _FOREGROUND_WAIT (seconds) set. (NEWSLETTER_MAX_ATTEMPTS is retired: see retired_settings.)"""
        rate = settings.number("NEWSLETTER_RATE", None)
        cap = settings.number("NEWSLETTER_DAILY_CAP", None, minimum=1)
        return cls(
            batch_size=settings.integer("NEWSLETTER_BATCH_SIZE", 100, minimum=1),
            rate=rate or None,
            concurrency=settings.integer("NEWSLETTER_CONCURRENCY", 1, minimum=1),
            daily_cap=int(cap) if cap else None,
            lease_seconds=settings.number("NEWSLETTER_LEASE_SECONDS", DEFAULT_LEASE.total_seconds(),
                                          minimum=MIN_LEASE_SECONDS) or DEFAULT_LEASE.total_seconds(),
            **{"guard": _guard(settings), **retry.settings(settings), **overrides},
        )


def _guard(settings: "Settings") -> Guard:
    from newsletter.guard import Guard

    return Guard.from_settings(settings)


def retired_settings(settings: "Settings") -> list[str]:
    """Notes for settings this version no longer reads, so nobody relies on one silently."""
    if settings.get("NEWSLETTER_MAX_ATTEMPTS"):
        return ["NEWSLETTER_MAX_ATTEMPTS is retired and ignored; NEWSLETTER_RETRY_WINDOW (hours) now decides "
                "when a reader's temporary failures become final"]
    return []


def _close_all(transports: Sequence[Transport]) -> None:
    """Close every transport; a failure to close must not hide the run's real outcome."""
    for t in transports:
        try:
            t.close()
        except Exception:
            pass


@dataclass
class _Job:
    claim: Claim
    messages: list[OutgoingMessage] = field(default_factory=list)
    recorded: set[int] = field(default_factory=set)  # readers whose answer is already in the ledger


_PAUSE = "pause"
_DUE_SLACK = 0.001  # a retry due within a millisecond is due: no sub-millisecond sleeps


class _Run:
    def __init__(self, conn: sqlite3.Connection, delivery_id: int, prepared: PreparedIssue | PreparedEditions,
                 factory: TransportFactory, options: DeliveryOptions, stop: threading.Event | None,
                 progress: Progress | None, waiting: Waiting | None, clock: Clock):
        self.conn, self.id, self.prepared, self.factory = conn, int(delivery_id), as_editions(prepared), factory
        self.o, self.stop, self.progress, self.waiting = options, stop, progress, waiting
        self.clock, self.sleep_fn = clock.monotonic, clock.sleep
        self.wall0, self.mono0 = clock.now(), clock.monotonic()
        self.db = threading.RLock()
        self.idle = threading.Condition(self.db)
        self.halt = threading.Event()
        self.owner = uuid.uuid4().hex
        self.pacer = Pacer(options.rate, clock.monotonic)
        self.rng = random.Random()
        self.cursor = 0
        self.inflight = 0
        self.counts: dict[str, int] = {}
        self.total = 0
        self.pause_note: str | None = None
        self.hold_note: str | None = None  # the server refused the sender: held for the editor
        self.worked = False                # some reader was answered in this run
        self.backoff_until: float | None = None  # a lost server's batch is due (wall seconds)
        self.deferred = False
        self.last_progress = self.clock()
        self.errors: list[BaseException] = []
        self.guard_base: Tally | None = None  # what had come back when the editor resumed a guard hold
        self.helper = False  # helping another worker's run: no lock, no freezing, no finishing
        self.stats = dict(interrupted_resent=0, uncertain_resent=0, uncertain_reported=0, sent_this_run=0)
        self.last_heartbeat = self.wall0
        self.transport_name = "transport"
        self.delivery: Delivery | None = None
        self.store: SubscriberStore | None = None
        self.taken_from: str | None = None  # the dead or silent holder whose lock this run took over
        self.last_reclaim = self.clock()
        self.fences: dict[int, Any] = {}    # PostgreSQL: a session per sending thread (see _fence)

    # ---- time: one wall clock that runs on the injected monotonic clock -------------------
    def now(self) -> datetime:
        return self.wall0 + timedelta(seconds=self.clock() - self.mono0)

    def now_ts(self) -> float:
        """Wall seconds, unrounded (a datetime would round to microseconds and leave a retry
        a hair short of due)."""
        return self.wall0.timestamp() + (self.clock() - self.mono0)

    # ---- entry -------------------------------------------------------------------------
    def run(self) -> DeliveryReport:
        d = self._check_delivery()
        if d.state == DeliveryState.DONE and not self.o.retry_failed:
            return reports.make_report(self.conn, d.id, "finished earlier; a done delivery sends nobody again")
        started = self.clock()
        transports: list[Transport] = []
        try:
            transports = self._open_transports()
            self.transport_name = transports[0].name
            try:
                self.taken_from = engine.acquire_lock(self.conn, self.id, self.owner, self.now(), self.o.lease)
            except DeliveryLockedError:
                if not self._may_help():
                    raise
                return self._help(transports, started)
            beat_done = threading.Event()
            beat = threading.Thread(target=self._heartbeat_thread, args=(beat_done,), daemon=True,
                                    name=f"delivery-{self.id}-heartbeat")
            try:
                self._begin(d)
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
                with self.db:
                    engine.release_lock(self.conn, self.id, self.owner)
        finally:
            _close_all(transports)
            _close_all(list(self.fences.values()))

    def _may_help(self) -> bool:
        """Join a running delivery another worker holds: on PostgreSQL (whose claims skip each
        other's rows), when asked, and once its list is frozen."""
        if not self.o.join_running or backend(self.conn) == "sqlite":
            return False
        d = get_delivery(self.conn, self.id)
        return d.state == DeliveryState.RUNNING and d.frozen_at is not None

    def _help(self, transports: Sequence[Transport], started: float) -> DeliveryReport:
        """Send readers of a delivery another worker holds, until none is left to claim. The holder
        freezes, finishes and settles crashes; a helper only claims, sends and records."""
        self.helper = True
        self.store = SubscriberStore(self.conn)
        with self.db:
            self.delivery = get_delivery(self.conn, self.id)
            self.counts = reports.ledger_counts(self.conn, self.id)
        self.total = sum(self.counts.values())
        try:
            self._work(transports)
        finally:  # what this helper left 'sending' (an exception mid-batch) is nobody's now
            with self.db:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                engine.orphan_claims(self.conn, self.id, self.owner)
        if self.errors:
            raise self.errors[0]
        elapsed = self.clock() - started
        with self.db:
            return reports.make_report(self.conn, self.id, "helped the worker sending it", elapsed=elapsed,
                                      rate=self.stats["sent_this_run"] / elapsed if elapsed > 0 else 0.0,
                                      **self.stats)

    def _others_in_flight(self) -> bool:
        """The lock holder, out of readers to claim: do helpers still have some in flight?"""
        if self.helper or backend(self.conn) == "sqlite":
            return False
        with self.db, transaction(self.conn) as conn:
            return engine.in_flight_elsewhere(conn, self.id, self.now() - self.o.lease) > 0

    def _check_delivery(self) -> Delivery:
        d = get_delivery(self.conn, self.id)
        if d.state == DeliveryState.CANCELLED:
            raise InputError(f"delivery #{d.id} of {d.slug} was cancelled; start a new one to send the issue")
        from newsletter.guard import RESUME_FLAG, is_guard_hold

        if is_guard_hold(d.state, d.reason) and not self.o.despite_guard:
            from newsletter.errors import SendHeldError

            raise SendHeldError(f"delivery #{d.id} of {d.slug} is {d.reason}; look at the complaints and bounces "
                                f"(`newsletter status {d.slug}`), then resume it deliberately: "
                                f"`newsletter resume {d.slug} {RESUME_FLAG}`")
        r = self.prepared.rendered
        if r.slug != d.slug:
            raise InputError(f"issue {r.slug} is not the issue of delivery #{d.id} ({d.slug})")
        if r.content_hash != d.content_hash:
            raise ContentChangedError(
                f"issue {d.slug} changed since delivery #{d.id} was created (content {d.content_hash[:12]}, now "
                f"{r.content_hash[:12]}); revert the change or pass --force-new-content")
        return d

    def _open_transports(self) -> list[Transport]:
        """Build and open every transport before any reader is touched: a bad CA file, DKIM key
        or API key fails here, with nobody claimed."""
        transports: list[Transport] = []
        try:
            for _ in range(self.o.concurrency):
                transports.append(self.factory())
                transports[-1].open()
            if transports[0].real and is_development_key(self.prepared.secret_key):
                raise ConfigError("NEWSLETTER_SECRET_KEY is not set; a real send needs it, or the unsubscribe "
                                  "links would change (and stop working) when the key is set later")
        except BaseException as exc:
            _close_all(transports)
            if isinstance(exc, Exception) and not isinstance(exc, NewsletterError):
                raise TransportError(f"the transport could not start: {scrub(f'{type(exc).__name__}: {exc}')}") \
                    from None
            raise
        return transports

    def _begin(self, d: Delivery) -> None:
        self.store = SubscriberStore(self.conn)
        with self.db:  # its own transaction: the spool file is gone once it commits
            apply_spool(self.store, self.prepared.secret_key, now=self.now())
        with self.db, transaction(self.conn):
            start = engine.begin_run(self.conn, d, transport=self.transport_name,
                                     resend_interrupted=self.o.resend_uncertain, retry_failed=self.o.retry_failed,
                                     now=self.now(), retry_now=self.o.retry_now,
                                     edition_for=self.prepared.edition_for, taken_from=self.taken_from,
                                     lease=self.o.lease)
            self.delivery = get_delivery(self.conn, self.id)
        if self.o.resend_uncertain:
            self.stats["interrupted_resent"] = start.interrupted
        else:
            self.stats["uncertain_reported"] = start.interrupted
        self.counts = start.counts
        self.total = sum(self.counts.values())
        if self.o.guard is not None and self.o.despite_guard:  # what came back before the resume no longer holds it
            self.guard_base = self._tally()

    # ---- the reputation guard ------------------------------------------------------------
    def _tally(self) -> Tally:
        from newsletter.events import guard_counts
        from newsletter.guard import Tally

        c = self.counts
        return Tally(c[RowState.SENT], c[RowState.FAILED_PERMANENT], *guard_counts(self.conn, self.id))

    def _guard_holds(self) -> bool:
        """Before each claim: hold the delivery (``hold_note``, as a refused sender does) when what
        came back so far crosses a threshold."""
        if self.o.guard is None:
            return False
        tally = self._tally()
        self.hold_note = self.hold_note or self.o.guard.verdict(tally.since(self.guard_base) if self.guard_base
                                                                else tally)
        return self.hold_note is not None

    # ---- lock heartbeat ------------------------------------------------------------------
    def _tick(self) -> None:
        if self.helper:  # the holder keeps the delivery's lease
            return
        if self.now() - self.last_heartbeat >= heartbeat_every(self.o.lease):
            with self.db, transaction(self.conn):
                engine.refresh_lock(self.conn, self.id, self.owner, self.now())
                self.last_heartbeat = self.now()

    def _heartbeat_thread(self, done: threading.Event) -> None:
        """Keeps the lock fresh while a long transport call is under way."""
        while not done.wait(5.0):
            try:
                self._tick()
            except BaseException as exc:  # the lock was taken over: stop the workers
                self.errors.append(exc)
                self.halt.set()
                return

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
        size = self.o.claim_size
        while not self._stopped():
            if self.backoff_until is not None:  # the server went away: wait for its batch's retry first
                wait, self.backoff_until = self.backoff_until - self.now_ts(), None
                if wait > 0 and not self._wait_for_retry(wait):
                    return
                continue
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
                self.pacer.refund(booked - (len(job.claim.rows) if isinstance(job, _Job) else 0))
            if job == _PAUSE:
                self.halt.set()
                return
            if job is None:
                with self.idle:  # others may still have batches in flight that come back as retries
                    if not self.inflight and not self._others_in_flight():
                        return
                    if not self._stopped():
                        self.idle.wait(0.5)
                continue
            if isinstance(job, float):
                if not self._wait_for_retry(job):
                    return
                continue
            assert isinstance(job, _Job)
            if job.claim.rows:
                answered = self._send(transport, job)
                if answered is not None:
                    self._record(job, *answered)

    def _claimable(self) -> bool:
        with self.db:
            return engine.claimable(self.conn, self.id, self.cursor, self.now_ts() + _DUE_SLACK)

    def _wait(self, seconds: float, why: str = "") -> bool:
        """Sleep, refreshing the heartbeat; in 1 s steps when something may ask us to stop."""
        chunk = 1.0 if self.stop is not None or self.o.concurrency > 1 or self.waiting else \
            heartbeat_every(self.o.lease).total_seconds()
        end = self.clock() + seconds

        def tick() -> None:
            self._tick()
            if self.waiting is not None and why:
                self.waiting(max(0.0, end - self.clock()), why)

        return interruptible_sleep(seconds, self.sleep_fn, self._stopped, chunk=chunk, tick=tick)

    def _wait_for_retry(self, seconds: float) -> bool:
        """Wait for the next due retry, unless that is further off than the foreground wait allows
        (counted from the last reader finished): then the run ends, deferred."""
        if self.clock() + seconds - self.last_progress > self.o.max_wait:
            self.deferred = True
            self.halt.set()
            with self.idle:
                self.idle.notify_all()
            return False
        with self.db:
            _, reasons = reports.retry_summary(self.conn, self.id, top=1)
        return self._wait(seconds, reasons[0][0] if reasons else "waiting for a retry")

    # ---- claim → send → record -----------------------------------------------------------
    def _claim(self) -> "_Job | float | str | None":
        """Claim the next batch (committed as 'sending' before the transport sees it). Unsubscribes
        spooled meanwhile are applied first: the web app spools while the database is locked, most
        often by this very send, and the claim skips readers who are no longer active."""
        with self.db:
            apply_spool(self.store, self.prepared.secret_key, now=self.now())
            if self._guard_holds():
                return _PAUSE
            while True:
                now = self.now()
                day, limit = utc_day(now), self.o.claim_size
                with transaction(self.conn) as conn:
                    self._reclaim(conn)
                    if self.o.daily_cap is not None:
                        used = engine.daily_used(conn, day, self.transport_name)
                        if used >= self.o.daily_cap:
                            self.pause_note = (f"daily cap of {self.o.daily_cap} messages reached for "
                                               f"{self.transport_name} on {day} UTC")
                            return _PAUSE
                        limit = min(limit, self.o.daily_cap - used)
                    assert self.delivery is not None
                    claim = engine.claim_batch(conn, self.delivery, self.owner, limit=limit, cursor=self.cursor,
                                               now=now, now_ts=self.now_ts() + _DUE_SLACK, day=day,
                                               transport=self.transport_name, helper=self.helper)
                if isinstance(claim, float):
                    return claim + _DUE_SLACK  # the wait from now, not from the slack
                if claim is None:
                    return None
                if claim.fresh:
                    self.cursor = max(self.cursor, claim.last_id)
                for state in claim.skipped:
                    self._move(state, RowState.SKIPPED)
                if claim.skipped:
                    self.last_progress = self.clock()
                if claim.rows:
                    for r in claim.rows:
                        self._move(r.state, RowState.SENDING)
                    self.inflight += 1
                    break
        job = _Job(claim)
        try:
            job.messages = [self.prepared.for_subscriber(r.sid, r.email, r.name, r.edition) for r in claim.rows]
        except BaseException:
            self._unclaim(job)
            raise
        return job

    def _reclaim(self, conn: sqlite3.Connection) -> None:
        """PostgreSQL, every :data:`RECLAIM_EVERY` s: readers claimed longer than the lease ago by a
        worker that died (or went silent) go back to be sent, without waiting for the run's end."""
        if backend(conn) == "sqlite" or self.clock() - self.last_reclaim < RECLAIM_EVERY:
            return
        self.last_reclaim = self.clock()
        engine.in_flight_elsewhere(conn, self.id, self.now() - self.o.lease)

    def _unclaim(self, job: _Job) -> None:
        """Undo a claim whose batch (the readers not answered for yet) never reached anyone."""
        rows = [r for i, r in enumerate(job.claim.rows) if i not in job.recorded]
        with self.db, transaction(self.conn) as conn:
            engine.unclaim(conn, self.id, rows, day=utc_day(self.now()), transport=self.transport_name)
            for r in rows:
                self._move(RowState.SENDING, r.state)
            if job.claim.fresh:
                self.cursor = min(self.cursor, job.claim.rows[0].sid - 1)
            self.inflight -= 1
            self.idle.notify_all()

    def _send(self, transport: Transport, job: _Job) -> tuple[list[SendResult | None], str | None] | None:
        """Hand the batch over. Returns one result per message (None: no answer about it) and,
        when the connection dropped under the transport, why; None when the batch was put back."""
        assert self.delivery is not None
        key = self.delivery.idempotency_key(job.claim.batch_no)
        if hasattr(transport, "fence"):  # one that can be stopped before each message (SMTP)
            transport.fence = lambda i: self._fence(job, i)  # type: ignore[attr-defined]
        if hasattr(transport, "on_result"):  # a transport that answers message by message (SMTP)
            n = len(job.messages)
            transport.on_result = lambda i, result: self._record(job, [None] * i + [result] + [None] * (n - i - 1),
                                                                 None, only=[i])  # type: ignore[attr-defined]
        try:
            results: list[SendResult | None] = list(transport.send(job.messages, idempotency_key=key))
        except OSError as exc:  # a connection dropped under the transport: no answer about anyone
            return [None] * len(job.messages), scrub(f"{type(exc).__name__}: {exc}")
        except TransportUnavailableError as exc:
            if not self.worked:  # never reached: a setting (host, port) more likely than an outage
                self._unclaim(job)
                raise
            return [None] * len(job.messages), exc.format_message()
        except TransportError as exc:
            self._unclaim(job)  # the transport could not be used at all: nothing of this batch left us
            if not self.worked:
                raise
            # It worked, and now refuses us (a rotated password, a new certificate): the sender's to fix.
            with self.db:
                self.hold_note = self.hold_note or exc.format_message()
                self.halt.set()
            return None
        except NewsletterError:
            self._unclaim(job)  # the transport could not be used at all: nothing of this batch left us
            raise
        except Exception as exc:  # it raised instead of answering: it refused before sending anything
            self._unclaim(job)
            raise TransportError(f"{transport.name} failed and sent nothing of the batch: "
                                 f"{scrub(f'{type(exc).__name__}: {exc}')}") from None
        if len(results) != len(job.messages):  # a broken transport: the missing ones may have gone out
            lost = SendResult("", Status.UNCERTAIN, error=f"transport returned {len(results)} results for "
                                                           f"{len(job.messages)} messages")
            results = (results + [lost] * len(job.messages))[:len(job.messages)]
        return results, None

    @contextmanager
    def _fence(self, job: _Job, i: int) -> Iterator[bool]:
        """Right before reader ``i``'s message goes out: is the reader still active? If not, their
        row is skipped and nothing is sent. On PostgreSQL the reader's row stays locked (FOR SHARE)
        in a session of this thread's own until the server has answered, so an unsubscribe
        committed meanwhile waits for that one message: once `serve` has answered an unsubscribe,
        no message to that reader starts. (SQLite: a look just before, without the lock.)"""
        row = job.claim.rows[i]
        if backend(self.conn) == "sqlite":
            with self.db:
                status = reader_status(self.conn, row.sid)
            if status != SubscriberStatus.ACTIVE:
                self._skip(job, i, status)
            yield status == SubscriberStatus.ACTIVE
            return
        fence = self._fence_session()
        try:
            fence.execute("BEGIN")
            status = reader_status(fence, row.sid, hold=True)
        except sqlite3.Error:
            self._drop_fence()  # the next message opens a fresh session
            raise
        if status != SubscriberStatus.ACTIVE:
            fence.execute("ROLLBACK")
            self._skip(job, i, status)
            yield False
            return
        try:
            yield True
        finally:
            try:
                fence.execute("COMMIT")  # after the server's answer: the unsubscribe may go on
            except sqlite3.Error:  # the session was ended (a hang past FENCE_IDLE_TIMEOUT): the answer stands
                self._drop_fence()

    def _fence_session(self) -> Any:
        """This thread's own session for :meth:`_fence` (opened on first use, closed with the run)."""
        key = threading.get_ident()
        if key not in self.fences:
            session = self.conn.sibling()
            session.execute(f"SET idle_in_transaction_session_timeout = '{FENCE_IDLE_TIMEOUT}'")
            self.fences[key] = session
        return self.fences[key]

    def _drop_fence(self) -> None:
        session = self.fences.pop(threading.get_ident(), None)
        if session is not None:
            _close_all([session])

    def _skip(self, job: _Job, i: int, status: str) -> None:
        """Record a claimed reader found no longer active right before their message: skipped."""
        row = job.claim.rows[i]
        with self.db, transaction(self.conn) as conn:
            now = self.now()
            engine.skip_claimed(conn, self.id, row.sid, status, now=now, day=utc_day(now),
                                transport=self.transport_name)
            job.recorded.add(i)
            self._move(RowState.SENDING, RowState.SKIPPED)
            self.last_progress = self.clock()

    def _record(self, job: _Job, results: Sequence[SendResult | None], dropped: str | None,
                only: Sequence[int] | None = None) -> None:
        """Store readers' transitions in one transaction, once the transport answered: at the end of
        the batch, every reader not recorded yet; or (``only``) the readers a streaming transport has
        just answered for, so `status` and a crash see each answer at once."""
        idx = [i for i in (range(len(results)) if only is None else only) if i not in job.recorded]
        if not idx and only is not None:  # a reader already recorded (skipped right before sending)
            return
        rows = [job.claim.rows[i] for i in idx]
        answers = [(classify(results[i]), scrub(results[i].error) if results[i] is not None and results[i].error
                    else dropped, results[i].retry_after if results[i] is not None else None) for i in idx]
        transitions, whole = decide_batch(
            [Row(r.attempts, r.first_failure_at, r.uncertain_resends) for r in rows], answers,
            now=self.now_ts(), policy=self.o.policy, jitters=[self.rng.random() for _ in idx])
        whole = whole and only is None and not job.recorded  # a batch partly answered is no longer one
        provider_ids = [results[i].provider_id if results[i] is not None and a is Answer.DELIVERED else None
                        for i, (a, _, _) in zip(idx, answers)]
        with self.db, transaction(self.conn) as conn:
            now = self.now()
            engine.record_transitions(conn, self.id, job.claim.batch_no, list(zip(rows, transitions, provider_ids)),
                                      whole_batch=whole, now=now)
            assert self.store is not None
            for row, t, i in zip(rows, transitions, idx):
                if t.bounce:  # the one event path, so `status` counts it with the webhooks' and inbox's
                    apply_event(self.store, Event(Kind.HARD_BOUNCE, self.transport_name,
                                                  f"delivery:{self.id}:{row.sid}", email=row.email,
                                                  subscriber_id=row.sid, message_id=job.messages[i].message_id,
                                                  detail=t.error or ""), now=now)
            if not self.helper:  # the holder's lease is the holder's to renew
                engine.refresh_lock(conn, self.id, self.owner, now)
            self.last_heartbeat = now
            job.recorded.update(idx)
            self._note_outcomes(transitions, [a for a, _, _ in answers], dropped)
            if only is None:
                self.inflight -= 1
                self.idle.notify_all()
            snapshot = self._progress_values()
        if self.progress is not None:
            self.progress(*snapshot)

    def _note_outcomes(self, transitions: Sequence[Transition], answers: Sequence[Answer],
                       dropped: str | None) -> None:
        """The run's counts after recorded transitions, and what they mean for the run: a refused
        sender holds it; a lost server makes it wait for the batch's retry before claiming more."""
        for t, answer in zip(transitions, answers):
            self._move(RowState.SENDING, t.state)
            if answer is Answer.UNCERTAIN:
                self.stats["uncertain_resent" if t.state == RowState.RETRY else "uncertain_reported"] += 1
        self.stats["sent_this_run"] += sum(t.state == RowState.SENT for t in transitions)
        self.worked = self.worked or any(a is not Answer.NO_ANSWER for a in answers)
        refused = next((t.error for t, a in zip(transitions, answers) if a is Answer.SENDER_REFUSED), None)
        if refused is not None and self.hold_note is None:
            self.hold_note = refused
            self.halt.set()  # nobody else is claimed: every reader would be refused alike
        elif dropped is not None and transitions and not any(t.final for t in transitions):
            self.backoff_until = max(t.next_attempt_at or 0.0 for t in transitions)
        if any(t.final for t in transitions):
            self.last_progress = self.clock()

    # ---- bookkeeping ---------------------------------------------------------------------
    def _move(self, src: str, dst: str, n: int = 1) -> None:
        self.counts[src] -= n
        self.counts[dst] += n

    def _progress_values(self) -> tuple[int, int, int, int]:
        c = self.counts
        failed = c[RowState.FAILED_PERMANENT] + c[RowState.GAVE_UP]
        return self.total - reports.open_rows(c), self.total, c[RowState.SENT], failed

    def _finish(self, elapsed: float) -> DeliveryReport:
        with self.db, transaction(self.conn) as conn:
            c = reports.ledger_counts(conn, self.id)
            left, now = reports.open_rows(c), self.now()
            resume_at: datetime | None = now
            if left == 0:
                state, resume_at = DeliveryState.DONE, None
                note = (f"{c['uncertain']} readers are uncertain: they may or may not have got it (the answer was "
                        "lost, or a crash interrupted them) and were not sent again; `newsletter status --failed` "
                        "lists them"
                        if c[RowState.UNCERTAIN] else "")
            elif self.hold_note is not None:  # the server refused the sender: the editor must act
                state, note, resume_at = DeliveryState.HELD, self.hold_note, None
            elif self.pause_note is not None:  # the daily cap: deferred to the next UTC day
                state, note = DeliveryState.DEFERRED, self.pause_note
                resume_at = datetime.combine(now.astimezone(timezone.utc).date() + timedelta(days=1),
                                             datetime.min.time(), timezone.utc)
            elif self.deferred and not (self.stop is not None and self.stop.is_set()):
                next_retry, reasons = reports.retry_summary(conn, self.id, top=1)
                state, resume_at = DeliveryState.DEFERRED, next_retry or now
                note = reasons[0][0] if reasons else "waiting for a retry"
            else:
                state = DeliveryState.PAUSED
                note = f"stopped with {left} readers left; run the send again to continue"
            if state == DeliveryState.HELD:
                deliveries.hold(conn, self.id, note)
            else:
                engine.finish_run(conn, self.id, state=state, reason=note, resume_at=resume_at, now=now)
            return reports.make_report(conn, self.id, note, elapsed=elapsed,
                                      rate=self.stats["sent_this_run"] / elapsed if elapsed > 0 else 0.0,
                                      **self.stats)

    def _note_abort(self, exc: BaseException) -> None:
        """Leave a reason on the delivery when a run ends with an exception (state stays resumable)."""
        if isinstance(exc, DeliveryLockedError):
            return
        try:
            with self.db:
                engine.note_reason(self.conn, self.id, self.owner, f"interrupted: {exc or type(exc).__name__}")
        except sqlite3.Error:
            pass


def run_delivery(conn: sqlite3.Connection, delivery_id: int, prepared: PreparedIssue | PreparedEditions,
                 transport_factory: TransportFactory, *, options: DeliveryOptions,
                 stop: threading.Event | None = None, progress: Progress | None = None,
                 waiting: Waiting | None = None, clock: Clock = SYSTEM) -> DeliveryReport:
    """Send (or continue sending) a delivery until it is done, deferred (retries, the daily cap), or stopped.

    ``stop`` (set by a SIGTERM/SIGINT handler) finishes the batch in flight, records it and
    returns with the delivery ``paused`` and resumable. ``clock`` (:mod:`newsletter.clock`)
    drives pacing and retry waits; its wall time at the start then runs on its monotonic
    time (timestamps, retry times, the UTC day for ``daily_cap``, the lock). ``waiting`` is told
    the seconds left while the run waits for a retry (a countdown for the progress bar).
    Raises :class:`DeliveryLockedError` when another live process is sending it,
    :class:`ContentChangedError` when ``prepared`` is not the content the delivery was made with.
    """
    return _Run(conn, delivery_id, prepared, transport_factory, options, stop, progress, waiting, clock).run()
