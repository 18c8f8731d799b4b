"""The one clock seam: everything that waits or measures time takes a :class:`Clock`.

Production code uses :data:`SYSTEM`; tests pass a :class:`FakeClock`, whose
``sleep`` advances time instantly, so no test passes or fails on wall time.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    """Monotonic seconds for intervals, wall time for what is stored, and a sleep."""

    def monotonic(self) -> float: ...

    def now(self) -> datetime: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


SYSTEM = SystemClock()


class ShiftedClock:
    """``base`` with its wall time moved so that it reads ``start`` now, and runs on from there:
    a scheduler judging by an injected time hands the engine a clock that agrees with it."""

    def __init__(self, base: Clock, start: datetime) -> None:
        self.base = base
        self.offset = start - base.now()

    def monotonic(self) -> float:
        return self.base.monotonic()

    def now(self) -> datetime:
        return self.base.now() + self.offset

    def sleep(self, seconds: float) -> None:
        self.base.sleep(seconds)


class FakeClock:
    """A clock that moves only when slept on or advanced: for tests. Thread-safe."""

    def __init__(self, start: datetime | None = None) -> None:
        self._start = start or datetime(2026, 1, 1, tzinfo=timezone.utc)
        self._t = 0.0
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        with self._lock:
            return self._t

    def now(self) -> datetime:
        with self._lock:
            return self._start + timedelta(seconds=self._t)

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self._t += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._t += seconds
