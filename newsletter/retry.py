"""The retry policy, in one place: when a reader is tried again, for how long, and how a
"slow down" answer is waited out. Change a number here and every part of the send follows.

Who uses what:

* :func:`newsletter.outcome.decide` — per reader, after the transport answered: the backoff
  curve (:func:`backoff_delay`), the retry window, the rate-limit wait, uncertain resends;
* :class:`newsletter.delivery.DeliveryOptions` — the settings (:func:`settings`) and how long a
  run waits in the foreground before it defers (:data:`DEFAULT_MAX_WAIT`);
* :class:`newsletter.transports.ratelimit.RateLimiter` and the transports' send loops — how many
  rate-limit answers a send absorbs itself (:data:`IN_SEND_RETRIES`), and for how long
  (:data:`MAX_PAUSE`, :data:`DEFAULT_PAUSE`), before it hands the wait to the engine.

Settings (environment / .env): ``NEWSLETTER_RETRY_WINDOW`` (hours, default 24) and
``NEWSLETTER_FOREGROUND_WAIT`` (seconds, default 300).

Pure: no I/O, no clock. ``jitter`` (0..1) fixes the random draw for callers that must be pure.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from newsletter.config import Settings

# ---- the backoff curve (temporary failures) ------------------------------------------------
#: base * factor**(attempt-1), capped, with jitter.
BACKOFF_BASE = 1.0
BACKOFF_FACTOR = 2.0
BACKOFF_CAP = 300.0

# ---- per reader (newsletter.outcome) ----------------------------------------------------------
#: How long a reader's temporary failures are retried, from the first (MTAs use 1–5 days).
DEFAULT_RETRY_WINDOW = 24 * 3600.0
#: The wait after a rate-limit answer without a Retry-After, before jitter.
RATE_LIMIT_WAIT = 1.0
#: How many times an uncertain answer is sent again (with ``resend_uncertain``) before it is reported.
UNCERTAIN_RESENDS = 1

# ---- per run (newsletter.delivery) ------------------------------------------------------------
#: How long a run keeps waiting for due retries, from the last reader finished, before it defers.
DEFAULT_MAX_WAIT = 300.0

# ---- inside one send (newsletter.transports.ratelimit and the transports) ----------------------
#: The longest pause taken inside a send for one rate-limit answer; a longer ``Retry-After``
#: is handed to the delivery engine to defer the readers.
MAX_PAUSE = 30.0
#: The pause when a rate-limit answer gives no ``Retry-After``.
DEFAULT_PAUSE = 1.0
#: Rate-limit answers absorbed (wait, then the same request again) before one is reported.
IN_SEND_RETRIES = 4


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


def rate_limit_wait(retry_after: float | None, jitter: float) -> float:
    """The wait after a rate-limit answer: the server's Retry-After (capped), else a jittered second."""
    if retry_after and retry_after > 0:
        return min(BACKOFF_CAP, retry_after)
    return RATE_LIMIT_WAIT * (1 + jitter)


@dataclass(frozen=True)
class RetryPolicy:
    """What :func:`newsletter.outcome.decide` needs to know about the editor's settings."""

    retry_window: float = DEFAULT_RETRY_WINDOW  # seconds
    resend_uncertain: bool = True


def settings(values: "Settings") -> dict[str, Any]:
    """``retry_window`` and ``max_wait`` (seconds) from NEWSLETTER_RETRY_WINDOW (hours) and
    NEWSLETTER_FOREGROUND_WAIT (seconds), for :class:`newsletter.delivery.DeliveryOptions`."""
    return dict(
        retry_window=(values.number("NEWSLETTER_RETRY_WINDOW", DEFAULT_RETRY_WINDOW / 3600) or 0.0) * 3600,
        max_wait=values.number("NEWSLETTER_FOREGROUND_WAIT", DEFAULT_MAX_WAIT) or 0.0,
    )
