"""What one send does to one reader's ledger row: a pure function, tested case by case.

The engine claims a batch, hands it to the transport, and then asks :func:`decide`
for every reader: the row as the ledger holds it plus what the transport answered
go in, the row's next state comes out. No I/O, no clock and no randomness here: the
caller passes ``now`` (wall seconds) and ``jitter`` (0..1), so every combination can
be checked in a table (tests/test_outcome.py).

The rules, in a reader's words:

* Delivered, refused for good, or bounced: final at once.
The numbers (backoff curve, window, waits) are :mod:`newsletter.retry`'s; here is what they mean.

* A temporary failure (SMTP 4xx, HTTP 5xx) is retried with growing, jittered waits.
  The reader fails for good only when ``retry_window`` has passed since their
  first temporary failure, however many tries that took.
* A rate-limit answer (HTTP 429, SMTP 421 "too many") is a pacing signal: retried
  after ``retry_after``, counting no attempt and starting no window.
* No answer at all (the connection dropped before the transport could say anything
  about this reader) counts no attempt, but is bounded by the window like a failure.
* An uncertain answer (the message may have gone out) is sent once more under the
  same idempotency key when the resend policy allows it, else reported; never more
  than :data:`UNCERTAIN_RESENDS` times.
* A refusal of the sender (our HELO, login, relay permission; not this reader) is
  charged to nobody: no attempt, no window; the reader waits, due at once, while the
  engine holds the delivery for the editor to fix the configuration and resume.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Sequence

from newsletter.retry import (DEFAULT_RETRY_WINDOW, RATE_LIMIT_WAIT, UNCERTAIN_RESENDS,  # noqa: F401 (re-exported)
                              RetryPolicy, backoff_delay, rate_limit_wait)
from newsletter.states import RowState
from newsletter.transports.base import SendResult, Status

#: The retry settings :func:`decide` reads (defined, with every number of the policy, in newsletter.retry).
Policy = RetryPolicy


class Answer(str, enum.Enum):
    """What the transport said about one reader, as far as the ledger cares."""

    DELIVERED = "delivered"
    FAILED_TEMPORARY = "failed-temporary"
    RATE_LIMITED = "rate-limited"
    FAILED_PERMANENT = "failed-permanent"
    BOUNCED = "bounced"
    UNCERTAIN = "uncertain"
    NO_ANSWER = "no-answer"
    SENDER_REFUSED = "sender-refused"

    @property
    def counts_attempt(self) -> bool:
        """Only a real answer about this reader uses up one of their attempts."""
        return self not in (Answer.RATE_LIMITED, Answer.NO_ANSWER, Answer.SENDER_REFUSED)


def classify(result: SendResult | None) -> Answer:
    """Normalise a transport result (``None``: nothing was heard about this reader)."""
    if result is None:
        return Answer.NO_ANSWER
    try:
        status = Status(result.status)
    except ValueError:  # a transport bug: whatever happened, the message may have gone out
        return Answer.UNCERTAIN
    if status.delivered:
        return Answer.DELIVERED
    if result.about_sender:
        return Answer.SENDER_REFUSED
    if status is Status.UNCERTAIN:
        return Answer.UNCERTAIN
    if status is Status.FAILED_TEMPORARY:
        if result.rate_limited:
            return Answer.RATE_LIMITED
        # Never tried (an earlier failure in the same call stopped the transport): nothing was
        # heard about this reader, so no attempt is used up.
        return Answer.FAILED_TEMPORARY if result.attempted else Answer.NO_ANSWER
    return Answer.BOUNCED if result.bounce else Answer.FAILED_PERMANENT


@dataclass(frozen=True)
class Row:
    """A claimed reader's row, as it was before this send."""

    attempts: int = 0                     # answers received so far
    first_failure_at: float | None = None  # wall seconds of the first temporary failure
    uncertain_resends: int = 0            # uncertain answers already sent again


@dataclass(frozen=True)
class Transition:
    """The row after this send. ``next_attempt_at`` is set for ``retry`` only."""

    state: str
    attempts: int
    first_failure_at: float | None
    next_attempt_at: float | None
    uncertain_resends: int
    error: str | None
    bounce: bool = False

    @property
    def final(self) -> bool:
        """Every state :func:`decide` gives is final but ``retry`` (the ledger's list of states is
        :data:`newsletter.ledger.records.LEDGER_STATES`; no second copy here)."""
        return self.state != RowState.RETRY


def decide(row: Row, answer: Answer, *, now: float, policy: Policy, error: str | None = None,
           retry_after: float | None = None, jitter: float = 0.5) -> Transition:
    """The row's next state after ``answer``. Pure: same inputs, same transition."""
    attempts = row.attempts + (1 if answer.counts_attempt else 0)
    first = row.first_failure_at

    def final(state: str, text: str | None, bounce: bool = False) -> Transition:
        return Transition(state, attempts, first, None, row.uncertain_resends, text, bounce)

    def retry(text: str, at: float, resends: int = row.uncertain_resends, since: float | None = first) -> Transition:
        return Transition(RowState.RETRY, attempts, since, at, resends, text)

    if answer is Answer.DELIVERED:
        return final(RowState.SENT, None)
    if answer in (Answer.FAILED_PERMANENT, Answer.BOUNCED):
        return final(RowState.FAILED_PERMANENT, error or answer.value, bounce=answer is Answer.BOUNCED)
    if answer is Answer.SENDER_REFUSED:  # nobody's fault but the configuration's: due when resumed
        return retry(f"held: {error or 'the server refused the sender'}", now)
    if answer is Answer.RATE_LIMITED:
        return retry(f"rate limited: {error or 'slow down'}", now + rate_limit_wait(retry_after, jitter))
    if answer is Answer.UNCERTAIN:
        text = f"may or may not have been delivered: {error or 'the answer was lost'}"
        if not policy.resend_uncertain or row.uncertain_resends >= UNCERTAIN_RESENDS:
            return final(RowState.UNCERTAIN, text + "; not sent again")
        return retry(text + "; sent once more", now + backoff_delay(attempts, retry_after, jitter=jitter),
                     resends=row.uncertain_resends + 1)
    # A temporary failure, or no answer: retried within the window that the first one opened.
    first = now if first is None else first
    text = error or ("no answer (the connection dropped)" if answer is Answer.NO_ANSWER else "temporary failure")
    if now - first >= policy.retry_window:
        hours = (now - first) / 3600
        return final(RowState.GAVE_UP, f"gave up after {attempts} attempts over {hours:.1f} h "
                                         f"(NEWSLETTER_RETRY_WINDOW): {text}")
    delay = backoff_delay(attempts, retry_after, jitter=jitter, since_first_failure=now - first)
    return retry(text, now + delay, since=first)


def decide_batch(rows: Sequence[Row], answers: Sequence[tuple[Answer, str | None, float | None]], *, now: float,
                 policy: Policy, jitters: Sequence[float]) -> tuple[list[Transition], bool]:
    """Every reader's transition for one batch, and whether the batch comes back whole.

    ``answers`` are (answer, error, retry_after) per row. When every reader is to be
    retried, the batch is retried as one, under its idempotency key, when the last of
    them is due (so the provider can recognise a repeated request).
    """
    out = [decide(row, answer, now=now, policy=policy, error=error, retry_after=retry_after, jitter=jitter)
           for row, (answer, error, retry_after), jitter in zip(rows, answers, jitters)]
    whole = bool(out) and all(t.state == RowState.RETRY for t in out)
    if whole:
        latest = max(t.next_attempt_at or now for t in out)
        out = [replace(t, next_attempt_at=latest) for t in out]
    return out, whole
