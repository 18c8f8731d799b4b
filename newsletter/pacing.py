"""Pacing and retry timing for the delivery engine, kept free of I/O so it is easy to test.

Everything takes the clock and sleep as arguments: the tests drive a fake clock
and assert on the sleeps asked for, never on wall time.
"""

from __future__ import annotations

import random
import threading
from typing import Callable

#: Backoff for temporary failures: base * factor**(attempt-1), capped, with jitter.
BACKOFF_BASE = 1.0
BACKOFF_FACTOR = 2.0
BACKOFF_CAP = 300.0


def backoff_delay(attempt: int, retry_after: float | None = None, *,
                  rng: random.Random | None = None, jitter: float | None = None,
                  since_first_failure: float = 0.0) -> float:
    """Seconds to wait before retry number ``attempt`` (1 = the first retry).

    Exponential (1 s, 2 s, 4 s, ... capped at 5 minutes) with "equal jitter": the
    delay is drawn uniformly from [d/2, d], so retries from many rows spread out
    but never come sooner than half the nominal delay. ``jitter`` (0..1) fixes the
    draw, for pure callers. The nominal delay is also at least the time since the
    reader's first failure, so a failure that counts no attempt (a dropped
    connection) still backs off. A server's ``retry_after`` is a floor: we never come
    back sooner than it asked (but cap it too, so a hostile or broken header cannot
    park the delivery for a day).
    """
    nominal = min(BACKOFF_CAP, max(BACKOFF_BASE * BACKOFF_FACTOR ** max(0, attempt - 1), since_first_failure))
    draw = (rng or random).random() if jitter is None else min(1.0, max(0.0, jitter))
    delay = nominal / 2 + draw * nominal / 2
    if retry_after is not None and retry_after > 0:
        delay = max(delay, min(float(retry_after), BACKOFF_CAP))
    return delay


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
