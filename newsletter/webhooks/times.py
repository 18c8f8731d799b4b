"""Times in webhook requests: parsed, bounded, and checked against our clock.

Every time a provider sends (a signature timestamp, an event's time) is outside input: a
year 33658 or a ``9999-12-31T23:59:59-23:59`` must be a 400, never an overflow deep in
datetime arithmetic. A field that is absent is ``None``; one that is present but is not
a time between :data:`EARLIEST` and :data:`LATEST` is refused.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from newsletter.webhooks.errors import Refused

if TYPE_CHECKING:
    from newsletter.clock import Clock

EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2100, 1, 1, tzinfo=timezone.utc)
#: How far ahead of our clock an event's time may be (a provider's clock runs fast, time zones go wrong).
FUTURE_SLACK = timedelta(days=1)
#: How far a signed timestamp may be from our clock, by default (Standard Webhooks' and Svix's five minutes).
TOLERANCE = timedelta(minutes=5)


def _bounded(dt: datetime) -> datetime:
    try:
        dt = (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    except (OverflowError, ValueError):
        raise Refused(400, "a time in the request is out of range") from None
    if not EARLIEST <= dt < LATEST:
        raise Refused(400, "a time in the request is out of range")
    return dt


def _absent(value: Any) -> bool:
    return value is None or value == ""


def unix_time(value: Any, *, scale: float = 1.0) -> datetime | None:
    """Seconds since the epoch (``scale=1000`` for milliseconds): None when absent, 400 when not a sane time."""
    if _absent(value):
        return None
    try:
        seconds = float(value) / scale if not isinstance(value, bool) else math.nan
        if not math.isfinite(seconds) or not EARLIEST.timestamp() <= seconds < LATEST.timestamp():
            raise ValueError
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        raise Refused(400, "a time in the request is malformed or out of range") from None


def iso_time(value: Any) -> datetime | None:
    """An ISO 8601 time (``Z`` or an offset; no offset is UTC): None when absent, 400 when not a sane time."""
    if _absent(value):
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise Refused(400, "a time in the request is malformed")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise Refused(400, "a time in the request is malformed") from None
    return _bounded(parsed)


def check_event_time(when: datetime | None, now: datetime) -> None:
    """An event's time may be in the past (a late report) but not far in our future."""
    if when is not None and when > now + FUTURE_SLACK:
        raise Refused(400, "an event time is in the future")


def signed_time(value: Any) -> datetime:
    """A signature timestamp (unix seconds): 401 when missing, 400 when not a sane time."""
    if _absent(value):
        raise Refused(401, "missing signature timestamp")
    when = unix_time(value)
    assert when is not None
    return when


def is_fresh(when: datetime, clock: "Clock", *, past: timedelta = TOLERANCE) -> bool:
    """Whether a signed time is no older than ``past`` and no more than :data:`TOLERANCE` ahead."""
    now = clock.now()
    return now - past <= when <= now + TOLERANCE


def check_fresh(value: Any, clock: "Clock", *, past: timedelta = TOLERANCE) -> datetime:
    """Refuse a signed timestamp that is malformed (400), or stale or from the future (403: a replay)."""
    when = signed_time(value)
    if not is_fresh(when, clock, past=past):
        raise Refused(403, "stale signature timestamp")
    return when
