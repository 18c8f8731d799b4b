"""Outbound fetches a webhook may cause (SNS certificates and subscription confirmations):
HTTPS only, no redirects, bounded in size, in total time and in number per minute.

Anyone who knows a listed topic ARN can post a message naming a certificate URL; the URL
rule (:func:`newsletter.webhooks.ses.is_sns_url`) fixes the host, the cache keeps a known
certificate from being fetched again, and :class:`FetchBudget` keeps a flood of made-up
certificate paths from turning this server into a stream of requests to AWS.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from newsletter.webhooks.errors import Refused

if TYPE_CHECKING:
    from newsletter.clock import Clock

MAX_BYTES = 64 * 1024
#: Seconds a whole fetch may take: connect, headers and body together.
DEADLINE = 15.0
#: Fetches in any 60 seconds; SNS signs with one certificate per region for months.
PER_MINUTE = 10


def fetch_https(url: str, *, deadline: float = DEADLINE) -> bytes:
    """The production fetcher: HTTPS only, no redirects, at most :data:`MAX_BYTES`, and at
    most ``deadline`` seconds in all (a server trickling bytes is cut off). Callers check the host."""
    import requests

    if not url.startswith("https://"):
        raise ValueError("only https URLs are fetched")
    started = time.monotonic()
    chunks: list[bytes] = []
    with requests.get(url, timeout=(5, 5), stream=True, allow_redirects=False) as response:
        response.raise_for_status()
        for chunk in response.iter_content(8192):
            chunks.append(chunk)
            if sum(map(len, chunks)) > MAX_BYTES:
                raise ValueError("response too large")
            if time.monotonic() - started > deadline:
                raise TimeoutError("fetch took too long")
    return b"".join(chunks)


class FetchBudget:
    """At most ``per_minute`` fetches in any 60 seconds of ``clock``; beyond, a 503 with
    Retry-After, so SNS retries later instead of us fetching now."""

    def __init__(self, per_minute: int = PER_MINUTE):
        self.per_minute = per_minute
        self._times: deque = deque()
        self._lock = threading.Lock()

    def spend(self, clock: "Clock") -> None:
        now = clock.monotonic()
        with self._lock:
            while self._times and now - self._times[0] >= 60:
                self._times.popleft()
            if len(self._times) >= self.per_minute:
                raise Refused(503, "too many certificate fetches; try again later", retry_after=60)
            self._times.append(now)
