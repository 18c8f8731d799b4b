"""An adaptive request rate (AIMD, after TCP) shared by the HTTP transports and SMTP.

A provider's rate limit is a pacing signal, not a failure: on a 429 (or an SMTP
421/4.7.x "too many") the limiter pauses everyone for ``Retry-After`` (bounded),
cuts the rate, and lets it grow back while answers are clean. The rate where the
last limit hit is remembered, so recovery to just under it is quick and only the
probe above it is slow: against a provider that allows N requests/s the send
settles near N with a 429 now and then, not a sawtooth between N/2 and N.

All waiting goes through one gate, one thread at a time, so concurrent senders
(Brevo's thread pool) share one rate, and a :class:`~newsletter.clock.FakeClock`
advances exactly as far as the waits need: tests and the benchmark run on virtual
time. ``max_rate`` stays an upper bound whatever the provider allows.
"""

from __future__ import annotations

import math
import threading
from collections import deque

from newsletter.clock import SYSTEM, Clock
from newsletter.retry import DEFAULT_PAUSE, MAX_PAUSE
from newsletter.retry import IN_SEND_RETRIES as RETRIES  # noqa: F401 (the transports' name for it)
#: Window over which the accepted request rate is measured, in seconds.
WINDOW = 5.0


class RateLimiter:
    """Requests per second, adapted to the server's answers. Thread-safe."""

    def __init__(self, clock: Clock = SYSTEM, *, max_rate: float | None = None, min_rate: float = 0.2,
                 decrease: float = 0.5, recover_to: float = 0.9, probe: float = 0.02,
                 max_pause: float = MAX_PAUSE, default_pause: float = DEFAULT_PAUSE):
        if max_rate is not None and not (math.isfinite(max_rate) and max_rate > 0):
            raise ValueError("max_rate must be a positive number")
        self.clock = clock
        self.max_rate = max_rate if max_rate is not None else math.inf
        self.min_rate = min_rate
        self.decrease, self.recover_to, self.probe = decrease, recover_to, probe
        self.max_pause, self.default_pause = max_pause, default_pause
        self._rate = self.max_rate          # unknown limit: as fast as allowed until told otherwise
        self._ceiling: float | None = None  # the rate at which the last limit hit
        self._next = -math.inf              # earliest start of the next request
        self._paused_until = -math.inf
        self._last_cut = -math.inf          # requests granted before this say nothing new
        self._accepted: deque[float] = deque()
        self._lock = threading.Lock()
        self._gate = threading.Lock()
        #: Answers seen, for summaries and the benchmark.
        self.granted = self.limited_count = 0

    @property
    def rate(self) -> float:
        """Current requests per second (``inf`` until a limit has been met)."""
        return self._rate

    def acquire(self) -> float:
        """Wait until the next request may start; returns the time it was granted (pass it back)."""
        with self._gate:
            while True:
                with self._lock:
                    now = self.clock.monotonic()
                    wait = max(self._next, self._paused_until) - now
                    if wait <= 1e-9:
                        self._next = now + (1.0 / self._rate if math.isfinite(self._rate) else 0.0)
                        self.granted += 1
                        return now
                self.clock.sleep(wait)

    def pause_for(self, retry_after: float | None) -> float:
        """The pause a rate-limit answer asks for, bounded to ``[0, max_pause]``."""
        pause = self.default_pause if retry_after is None else retry_after
        return min(max(0.0, pause), self.max_pause)

    def accepted(self, granted_at: float) -> None:
        """A clean answer: grow the rate (quickly back towards the last limit, slowly past it)."""
        with self._lock:
            now = self.clock.monotonic()
            self._accepted.append(now)
            while self._accepted and self._accepted[0] < now - WINDOW:
                self._accepted.popleft()
            if not math.isfinite(self._rate) or granted_at < self._last_cut:
                return
            rate = self._rate
            if self._ceiling is not None and rate < self.recover_to * self._ceiling:
                rate = min(self.recover_to * self._ceiling, rate * (1.0 + 1.0 / max(rate, 1.0)))
            else:
                rate += max(self.probe * (self._ceiling or rate), 0.05) / max(rate, 1.0)
            self._rate = min(rate, self.max_rate)

    def limited(self, retry_after: float | None, granted_at: float) -> float:
        """A rate-limit answer: pause everyone, and cut the rate once per round. Returns the pause."""
        pause = self.pause_for(retry_after)
        with self._lock:
            now = self.clock.monotonic()
            self.limited_count += 1
            self._paused_until = max(self._paused_until, now + pause)
            if granted_at < self._last_cut:  # sent before the last cut: already accounted for
                return pause
            # The first limit met: the rate that was accepted is the best guess of the allowance.
            rate = self._rate if math.isfinite(self._rate) else self._measured(now)
            self._ceiling = max(rate, self.min_rate)
            self._rate = max(self.min_rate, self._ceiling * self.decrease)
            self._last_cut = now
            return pause

    def _measured(self, now: float) -> float:
        """Accepted requests per second over the last :data:`WINDOW` (at least one second's worth)."""
        recent = [t for t in self._accepted if t >= now - WINDOW]
        if not recent:
            return self.min_rate
        span = max(1.0, now - recent[0])
        return max(self.min_rate, len(recent) / span)


_SHARED: dict[str, RateLimiter] = {}
_SHARED_LOCK = threading.Lock()


def shared_limiter(key: str) -> RateLimiter:
    """The one real-clock limiter of a provider account in this process, shared by the
    transports the engine opens for its worker threads."""
    with _SHARED_LOCK:
        limiter = _SHARED.get(key)
        if limiter is None:
            limiter = _SHARED[key] = RateLimiter(SYSTEM)
        return limiter
