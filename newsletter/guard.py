"""The reputation guard: hold a send whose readers complain or bounce too much, before it
reaches everyone.

Complaints and hard bounces come back (by webhook and inbox) while a delivery runs. Once
``NEWSLETTER_PAUSE_MIN_DELIVERED`` messages (default 1,000) have had an answer, the delivery is
held when complaints exceed ``NEWSLETTER_COMPLAINT_PAUSE`` percent of the messages sent
(default 0.3, Gmail's and Yahoo's ceiling for bulk senders) or hard bounces (the server's
permanent refusals plus hard-bounce reports) exceed ``NEWSLETTER_BOUNCE_PAUSE`` percent of the
messages handed over (default 5). ``off`` switches either check off.

A held delivery stays held until the editor resumes it deliberately (``resume
--despite-complaints``); the guard then measures only what comes back after that resume, so it
still stops a send that keeps getting worse.
"""

from typing import TYPE_CHECKING, NamedTuple

from newsletter.errors import ConfigError
from newsletter.states import DeliveryState

if TYPE_CHECKING:
    from newsletter.config import Settings

#: Every reason the guard holds with starts with this: `resume` asks for the deliberate flag.
HOLD_PREFIX = "held to protect the sending domain: "
RESUME_FLAG = "--despite-complaints"
DEFAULT_COMPLAINT_PAUSE, DEFAULT_BOUNCE_PAUSE, DEFAULT_MIN_DELIVERED = 0.3, 5.0, 1000


class Tally(NamedTuple):
    """What a delivery has had back so far."""

    sent: int = 0              # messages the server accepted
    refused: int = 0           # permanent refusals while sending (failed-permanent)
    complaints: int = 0        # readers who reported it as spam
    bounce_reports: int = 0    # readers whose hard bounce came back later (webhook, inbox)

    @property
    def handed_over(self) -> int:
        return self.sent + self.refused

    @property
    def bounces(self) -> int:
        return self.refused + self.bounce_reports

    def since(self, base: "Tally") -> "Tally":
        return Tally(*(max(0, a - b) for a, b in zip(self, base)))


def _percent(settings: "Settings", key: str, default: float) -> float | None:
    raw = settings.get(key).strip().rstrip("%").strip()
    if raw.lower() == "off":
        return None
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw[:20]!r} is not a percentage (0.3 means 0.3%) or off") from None
    if not 0 < value <= 100:
        raise ConfigError(f"{key}={raw[:20]!r} must be above 0 and at most 100 (percent), or off")
    return value


class Guard(NamedTuple):
    """Thresholds in percent (None: that check is off) and the sample they wait for."""

    complaint_pause: float | None = DEFAULT_COMPLAINT_PAUSE
    bounce_pause: float | None = DEFAULT_BOUNCE_PAUSE
    min_delivered: int = DEFAULT_MIN_DELIVERED

    @classmethod
    def from_settings(cls, settings: "Settings") -> "Guard":
        return cls(_percent(settings, "NEWSLETTER_COMPLAINT_PAUSE", DEFAULT_COMPLAINT_PAUSE),
                   _percent(settings, "NEWSLETTER_BOUNCE_PAUSE", DEFAULT_BOUNCE_PAUSE),
                   settings.integer("NEWSLETTER_PAUSE_MIN_DELIVERED", DEFAULT_MIN_DELIVERED, minimum=1))

    def verdict(self, t: Tally) -> str | None:
        """Why to hold now, or None. ``t`` is what came back since the last deliberate resume."""
        if t.handed_over < self.min_delivered:
            return None
        if self.complaint_pause is not None and t.complaints * 100 > self.complaint_pause * max(t.sent, 1):
            return (f"{HOLD_PREFIX}{t.complaints} complaint(s) in {t.sent:,} messages delivered "
                    f"({rate(t.complaints, t.sent)}) exceed NEWSLETTER_COMPLAINT_PAUSE={self.complaint_pause:g}%")
        if self.bounce_pause is not None and t.bounces * 100 > self.bounce_pause * t.handed_over:
            return (f"{HOLD_PREFIX}{t.bounces} hard bounce(s) in {t.handed_over:,} messages sent "
                    f"({rate(t.bounces, t.handed_over)}) exceed NEWSLETTER_BOUNCE_PAUSE={self.bounce_pause:g}%")
        return None

    def describe(self, t: Tally) -> str:
        """Rates beside thresholds, for ``status``."""
        def limit(value: float | None) -> str:
            return "guard off" if value is None else f"pause above {value:g}%"

        wait = (f"; the guard waits for {self.min_delivered:,} messages" if t.handed_over < self.min_delivered
                else "")
        return (f"complaints {t.complaints} of {t.sent:,} delivered ({rate(t.complaints, t.sent)}; "
                f"{limit(self.complaint_pause)}), hard bounces {t.bounces} of {t.handed_over:,} "
                f"({rate(t.bounces, t.handed_over)}; {limit(self.bounce_pause)}){wait}")


def rate(part: int, whole: int) -> str:
    return f"{part * 100 / whole:.2f}%" if whole else "-"


def is_guard_hold(state: str, reason: str | None) -> bool:
    return state == DeliveryState.HELD and bool(reason) and str(reason).startswith(HOLD_PREFIX)
