"""Scheduled sends: a delivery waits in state ``scheduled`` until a worker finds it due.

``newsletter schedule`` builds and checks the issue, then :func:`schedule` records
the delivery with its send time and the content hash as it was reviewed. The
worker (``newsletter worker``, :func:`run_worker`) polls :func:`dispatch_once`,
which sends every due delivery and resumes interrupted ones. It refuses to
surprise anyone:

* a delivery whose slot passed more than ``max_lateness`` ago (the machine was
  off, the worker was not running) is set ``held`` and reported, not sent late;
* an issue edited after it was scheduled (its content hash changed) is ``held``
  too: what goes out is what was reviewed, or nothing until it is rescheduled.

Held deliveries are sent by an explicit ``newsletter send`` or by scheduling again.
Deferred deliveries (readers waiting for a retry) are picked up when their next retry
is due. A row the worker cannot read (an unreadable stored time) is held with a reason,
never allowed to crash every command.
"""

from __future__ import annotations

import logging
import dataclasses
import math
import sqlite3
import threading
from datetime import datetime, timedelta, timezone
from typing import Callable

from newsletter.ledger import deliveries
from newsletter.clock import SYSTEM, Clock, ShiftedClock
from newsletter.db import backend
from newsletter.delivery import DeliveryOptions, Waiting, run_delivery
from newsletter.ledger.engine import start_or_resume
from newsletter.ledger.records import DEFAULT_LEASE, OPEN_STATES, Delivery, TransportFactory, get_delivery, lock_is_live
from newsletter.ledger.reports import DeliveryReport, make_report
from newsletter.ledger.schema import transaction
from newsletter.states import DeliveryState
from newsletter.timestamps import utcnow
from newsletter.errors import DeliveryLockedError, InputError, NewsletterError
from newsletter.message import PreparedIssue

log = logging.getLogger(__name__)

DEFAULT_MAX_LATENESS = timedelta(hours=6)
#: How far from now a send may be scheduled: further is almost always a typo in the year.
MAX_AHEAD, MAX_BEHIND = timedelta(days=3660), timedelta(days=366)


def _aware(when: datetime, what: str) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise InputError(f"{what} {when.isoformat()} has no time zone; give one, e.g. 2025-03-01T09:00+01:00")
    return when.astimezone(timezone.utc)


def check_send_time(send_at: datetime, now: datetime) -> datetime:
    """A send time the ledger can store and a worker can act on: with a zone, a four-digit
    year, at most a year ago and ten years ahead. Returns it in UTC."""
    try:
        when = _aware(send_at, "send time")
    except OverflowError:
        raise InputError(f"send time {send_at.isoformat()} is out of range") from None
    if not (-MAX_BEHIND <= when - _aware(now, "now") <= MAX_AHEAD):
        raise InputError(f"send time {send_at.isoformat()} is out of range: give a time from a year ago "
                         "to ten years ahead (is the year right?)")
    return when


def schedule(conn: sqlite3.Connection, prepared: PreparedIssue, send_at: datetime, *,
             now: Callable[[], datetime] = utcnow) -> int:
    """Schedule the issue for ``send_at`` (tz-aware, within the next year); returns the delivery id.

    The content hash is frozen now; the recipient list is frozen when sending starts.
    Scheduling an issue again before it started moves it (and takes the current content).
    """
    return start_or_resume(conn, prepared, scheduled_for=check_send_time(send_at, now()), now=now)


def list_scheduled(conn: sqlite3.Connection) -> list[Delivery]:
    """Every delivery not finished: scheduled, held, paused, deferred, running; soonest first."""
    return deliveries.list_open(conn)


def cancel(conn: sqlite3.Connection, slug_or_id: str | int, *, now: Callable[[], datetime] = utcnow) -> Delivery:
    """Cancel a delivery that is not being sent right now. Whoever already got it keeps it,
    and a later delivery of the same issue leaves them out."""
    d = deliveries.find_delivery(conn, slug_or_id)
    with transaction(conn):
        d = get_delivery(conn, d.id)
        if d.state not in OPEN_STATES:
            raise InputError(f"delivery #{d.id} of {d.slug} is {d.state}; only scheduled, held, paused, deferred "
                             "or interrupted deliveries can be cancelled")
        if lock_is_live(d, now()):
            raise InputError(f"delivery #{d.id} of {d.slug} is being sent by pid {d.lock_pid} on {d.lock_host}; "
                             "stop that process first (Ctrl-C or SIGTERM finishes the current batch)")
        deliveries.set_state(conn, d, DeliveryState.CANCELLED, f"cancelled (was {d.state})", now=now())
    return get_delivery(conn, d.id)


def due(conn: sqlite3.Connection, now: datetime, lease: timedelta = DEFAULT_LEASE) -> list[Delivery]:
    """What a worker should act on at ``now``: scheduled ones whose time has come, paused and
    deferred ones whose resume time has come (daily cap, a stop, the next retry), and running
    ones nobody is sending (the sender died). In order of their send time."""
    now = _aware(now, "now")
    joinable = backend(conn) != "sqlite"  # on PostgreSQL a worker helps the one sending (see _help)
    return [d for d in deliveries.due_deliveries(conn, now)
            if not (d.state == DeliveryState.RUNNING and lock_is_live(d, now, lease)
                    and not (joinable and d.frozen_at))]


def _hold(conn: sqlite3.Connection, d: Delivery, reason: str) -> DeliveryReport:
    with transaction(conn):
        deliveries.set_state(conn, d, DeliveryState.HELD, reason)
    log.warning("delivery #%s of %s held: %s", d.id, d.slug, reason)
    return make_report(conn, d.id, reason)


def dispatch_once(conn: sqlite3.Connection, now: datetime, prepare: Callable[[str], PreparedIssue],
                  transport_factory: TransportFactory, options: DeliveryOptions, *,
                  max_lateness: timedelta = DEFAULT_MAX_LATENESS, stop: threading.Event | None = None,
                  progress: Callable[[int, int, int, int], None] | None = None,
                  waiting: Waiting | None = None,
                  on_start: Callable[[Delivery], None] | None = None,
                  clock: Clock = SYSTEM) -> list[DeliveryReport]:
    """Send every due delivery (one after the other); returns a report for each one acted on.
    ``on_start`` hears of each delivery as its sending begins (the worker's log line).

    ``now`` is the wall time to judge by (tests inject it); during a send the engine runs
    on ``clock`` with its wall time moved to start from ``now``.
    """
    now = _aware(now, "now")
    engine_clock = ShiftedClock(clock, now)
    reports: list[DeliveryReport] = []
    if backend(conn) != "sqlite":
        options = dataclasses.replace(options, join_running=True)
    for d in due(conn, now, options.lease):
        if stop is not None and stop.is_set():
            break
        if d.state == DeliveryState.SCHEDULED and d.send_at is None:
            reports.append(_hold(conn, d, (
                f"its stored send time {d.send_at_text!r} cannot be read; schedule it again with "
                f"`newsletter schedule {d.slug} --at …`")))
            continue
        if d.state == DeliveryState.SCHEDULED and d.send_at is not None and now - d.send_at > max_lateness:
            reports.append(_hold(conn, d, (
                f"missed its send time {d.send_at:%Y-%m-%d %H:%M} UTC by {_human(now - d.send_at)} (more than "
                f"{_human(max_lateness)}); not sent late automatically. Send it with `newsletter send {d.slug}` "
                "or schedule it again")))
            continue
        try:
            prepared = prepare(d.slug)
        except NewsletterError as exc:
            reports.append(_hold(conn, d, f"could not be prepared: {exc.format_message()}"))
            continue
        if prepared.rendered.content_hash != d.content_hash:
            reports.append(_hold(conn, d, (
                f"the issue changed after it was scheduled (content {d.content_hash[:12]}, now "
                f"{prepared.rendered.content_hash[:12]}); review it and schedule it again")))
            continue
        if on_start is not None:
            on_start(d)
        try:
            reports.append(run_delivery(conn, d.id, prepared, transport_factory, options=options, stop=stop,
                                        progress=progress, waiting=waiting, clock=engine_clock))
        except DeliveryLockedError as exc:
            log.info("%s", exc)  # another process got there first: it is being sent
    return reports


def _human(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes / 60
    return f"{hours:.0f} h" if hours < 48 else f"{hours / 24:.0f} days"


def check_poll_interval(seconds: float) -> None:
    """A worker polls every so many seconds: 0, negative or nan would spin at 100 % CPU."""
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and 0.001 <= seconds <= 86400):
        raise InputError(f"--poll {seconds!r} must be a number of seconds from 0.001 to 86400")


def run_worker(conn: sqlite3.Connection, prepare: Callable[[str], PreparedIssue],
               transport_factory: TransportFactory, options: DeliveryOptions, *, stop: threading.Event,
               poll_interval: float = 30, max_lateness: timedelta = DEFAULT_MAX_LATENESS,
               on_report: Callable[[DeliveryReport], None] | None = None,
               on_error: Callable[[NewsletterError], None] | None = None,
               on_start: Callable[[Delivery], None] | None = None,
               on_poll: Callable[[], None] | None = None,
               clock: Clock = SYSTEM) -> list[DeliveryReport]:
    """Call :func:`dispatch_once` every ``poll_interval`` seconds until ``stop`` is set,
    judging what is due by ``clock``'s wall time (``on_poll`` hears of each look).

    The CLI sets ``stop`` from SIGTERM/SIGINT handlers: the batch in flight is finished and
    recorded, the delivery is left paused (the next worker resumes it), and this returns.
    A failure the user must fix (a refused login, say) is reported through ``on_error``
    and tried again at the next poll; the delivery stays resumable meanwhile.
    """
    check_poll_interval(poll_interval)
    reports: list[DeliveryReport] = []
    while not stop.is_set():
        if on_poll is not None:
            on_poll()
        try:
            got = dispatch_once(conn, clock.now(), prepare, transport_factory, options, max_lateness=max_lateness,
                                stop=stop, on_start=on_start, clock=clock)
        except NewsletterError as exc:
            if on_error is None:
                log.error("%s", exc.format_message())
            else:
                on_error(exc)
            got = []
        for r in got:
            reports.append(r)
            if on_report is not None:
                on_report(r)
        if stop.wait(poll_interval):
            break
    return reports
