"""Warnings a client can make the server repeat, counted and summarised.

Each request from a flood of clients would otherwise write its own line: waitress's
"Task queue depth is N" for every queued request, a signup refused by a rate limit, a
webhook refused for a bad signature. :class:`Summarise` is a :class:`logging.Filter` for
such loggers: the first record of a kind in an interval passes (so the operator sees it at
once), the others are counted, and the next record after the interval, or :meth:`flush`,
writes one line with the count and the peak of the record's number (the queue depth).
Errors always pass: a 500 is never folded away.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

#: Loggers whose repeated records a client can cause (waitress's queue, the app's own).
LOGGERS = ("waitress.queue", "newsletter.web", "newsletter.web.server", "newsletter.webhooks.base",
           "newsletter.signup", "newsletter.spool")


@dataclass
class _Count:
    logger: logging.Logger
    template: str
    level: int
    since: float
    count: int = 0
    peak: float | None = None
    last: str = ""


class Summarise(logging.Filter):
    """Pass the first record of each (logger, message template) per ``interval`` seconds; count the rest."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.interval, self.clock = interval, clock
        self._counts: dict[tuple[str, str], _Count] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR or getattr(record, "summary", False):
            return True
        now, key = self.clock(), (record.name, str(record.msg))
        with self._lock:
            due = [c for c in self._counts.values() if now - c.since >= self.interval]
            for c in due:
                del self._counts[(c.logger.name, c.template)]
            seen = self._counts.get(key)
            if seen is None:
                self._counts[key] = _Count(logging.getLogger(record.name), str(record.msg), record.levelno, now)
            else:
                seen.count += 1
                seen.last = record.getMessage()[:200]
                number = next((a for a in (record.args or ()) if isinstance(a, (int, float))), None) \
                    if isinstance(record.args, tuple) else None
                if number is not None:
                    seen.peak = number if seen.peak is None else max(seen.peak, number)
        for c in due:
            self._emit(c, now)
        return seen is None

    def flush(self) -> None:
        """Write what is counted now (at shutdown)."""
        now = self.clock()
        with self._lock:
            counts, self._counts = list(self._counts.values()), {}
        for c in counts:
            self._emit(c, now)

    @staticmethod
    def _emit(c: _Count, now: float) -> None:
        if not c.count:
            return
        peak = f", peak {c.peak:g}" if c.peak is not None else ""
        c.logger.log(c.level, "%d more like %r in %.0f s%s (last: %s)", c.count, c.template, now - c.since, peak,
                     c.last, extra={"summary": True})


def install(interval: float = 60.0) -> Summarise:
    """Summarise the repeatable records of :data:`LOGGERS`; returns the filter (call ``flush`` at exit)."""
    summary = Summarise(interval)
    for name in LOGGERS:
        logging.getLogger(name).addFilter(summary)
    return summary


def uninstall(summary: Summarise) -> None:
    summary.flush()
    for name in LOGGERS:
        logging.getLogger(name).removeFilter(summary)
