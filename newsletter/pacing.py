"""Pacing for the delivery engine (a token bucket, interruptible sleeps), free of I/O so it is
easy to test. When a reader is retried is :mod:`newsletter.retry`'s.

Everything takes the clock and sleep as arguments: the tests drive a fake clock
and assert on the sleeps asked for, never on wall time.
"""

from __future__ import annotations

import threading
from typing import Callable

# The backoff curve is the retry policy's (newsletter.retry); these names stay importable here.
from newsletter.retry import BACKOFF_BASE, BACKOFF_CAP, BACKOFF_FACTOR, backoff_delay  # noqa: E402,F401

class Pacer:
    """A token bucket one batch deep: batch k may start no earlier than
    ``start + (messages before it) / rate``.

    ``rate`` is messages per second; ``None`` means no pacing. The bucket never
    banks more than one batch of credit, so a pause (a retry wait, a slow
    server) is not followed by a burst. Thread-safe: concurrent workers share
    one pacer, so ``rate`` is the total over all of them.
    """

    def __init__(self, rate: float | None, clock: Callable[[], float]):
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.clock = clock
        self._next: float | None = None
        self._lock = threading.Lock()

    def reserve(self, n: int) -> float:
        """Book ``n`` messages; returns how long the caller must wait before sending them."""
        if self.rate is None or n <= 0:
            return 0.0
        with self._lock:
            now = self.clock()
            start = now if self._next is None or self._next < now else self._next
            self._next = start + n / self.rate
            return start - now

    def refund(self, n: int) -> None:
        """Give back a booking that was not used (the batch was abandoned before sending)."""
        if self.rate is None or n <= 0 or self._next is None:
            return
        with self._lock:
            self._next -= n / self.rate


def interruptible_sleep(seconds: float, sleep: Callable[[float], None],
                        stopped: Callable[[], bool] | None = None, *, chunk: float = 1.0,
                        tick: Callable[[], None] | None = None) -> bool:
    """Sleep ``seconds`` in chunks of at most ``chunk``, checking ``stopped()`` between them.

    Returns False if a stop was requested before the time was up. ``tick`` runs
    between chunks (the engine refreshes its lock heartbeat there).
    """
    remaining = seconds
    while remaining > 1e-9:
        if stopped is not None and stopped():
            return False
        step = min(remaining, chunk)
        sleep(step)
        remaining -= step
        if tick is not None:
            tick()
    return not (stopped is not None and stopped())
