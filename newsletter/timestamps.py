"""Times as the database stores them: one module for every component and backend.

A stored time is text in :data:`TIMESTAMP` (ISO 8601 UTC with microseconds), which sorts as
text and means the same on SQLite and PostgreSQL. :func:`utcnow` is the current time as an
aware datetime, :func:`utcnow_text` the same in the stored form (the two were once both
called ``utcnow``, one in the store and one in the ledger).

Wall time for what is stored; intervals and waits go through :mod:`newsletter.clock`.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

from newsletter.errors import InputError

TIMESTAMP = "%Y-%m-%dT%H:%M:%S.%fZ"  # ISO 8601 UTC with microseconds: sorts as text
#: Times the ledger stores: four-digit years only, so stored text always sorts and parses.
_MIN_YEAR, _MAX_YEAR = 2000, 9000


def stamp(dt: datetime) -> str:
    """``dt`` in the stored format (:data:`TIMESTAMP`), e.g. ``2025-03-01T09:30:00.123456Z``."""
    return dt.astimezone(timezone.utc).strftime(TIMESTAMP)


def utcnow_text() -> str:
    """The current time in the stored format, e.g. ``2025-03-01T09:30:00.123456Z``."""
    return stamp(datetime.now(timezone.utc))


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(timezone.utc)


def timestamp(dt: datetime) -> str:
    """The stored form of a time; refuses times without a zone or outside 2000–9000."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise InputError(f"time {dt.isoformat()} has no time zone; give one (e.g. +00:00)")
    try:
        utc = dt.astimezone(timezone.utc)
    except OverflowError:
        utc = None
    if utc is None or not _MIN_YEAR <= utc.year <= _MAX_YEAR:
        raise InputError(f"time {dt.isoformat()} is out of range (years {_MIN_YEAR}–{_MAX_YEAR})")
    return utc.strftime(TIMESTAMP)


def parse_timestamp(text: str | None) -> datetime | None:
    """A stored time, or None when missing *or unreadable*: one bad row must not break every command."""
    if not text:
        return None
    # Exactly timestamp()'s shape, read by fromisoformat: _strptime (and its regexes) cost start-up time.
    if not isinstance(text, str) or len(text) != 27 or text[10] != "T" or text[-1] != "Z":
        return None
    try:
        return datetime.fromisoformat(text[:-1]).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def from_epoch(seconds: float | None) -> datetime | None:
    """A wall-clock retry time (seconds since the epoch) as an aware UTC datetime."""
    if seconds is None or not math.isfinite(seconds):
        return None
    try:
        return datetime.fromtimestamp(seconds, timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def utc_day(dt: datetime) -> str:
    """The UTC calendar day, the unit of the daily cap."""
    return dt.astimezone(timezone.utc).date().isoformat()
