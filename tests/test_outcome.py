"""The outcome function, exhaustively: every (answer, row, window, policy) combination.

The expectations are written out as rules below, independently of the implementation's
branches, and checked for every combination of the inputs (7 answers × 3 attempt counts ×
3 first-failure times × 2 uncertain-resend counts × 2 policies × 2 retry-after values).
"""

from __future__ import annotations

import itertools

import pytest

from newsletter.outcome import (DEFAULT_RETRY_WINDOW, UNCERTAIN_RESENDS, Answer, Policy, Row, classify, decide)
from newsletter.pacing import BACKOFF_CAP
from newsletter.transports.base import SendResult, Status

NOW = 1_900_000_000.0
WINDOW = 3600.0
FIRST_FAILURES = [None, NOW - 60, NOW - WINDOW - 1]   # none yet, inside the window, window passed
ATTEMPTS = [0, 1, 7]


def expected_state(answer: Answer, row: Row, policy: Policy) -> str:
    if answer is Answer.DELIVERED:
        return "sent"
    if answer in (Answer.FAILED_PERMANENT, Answer.BOUNCED):
        return "failed-permanent"
    if answer in (Answer.RATE_LIMITED, Answer.SENDER_REFUSED):  # waits; a refused sender charges nobody
        return "retry"
    if answer is Answer.UNCERTAIN:
        resend = policy.resend_uncertain and row.uncertain_resends < UNCERTAIN_RESENDS
        return "retry" if resend else "uncertain"
    first = NOW if row.first_failure_at is None else row.first_failure_at
    return "gave-up" if NOW - first >= policy.retry_window else "retry"


CASES = list(itertools.product(list(Answer), ATTEMPTS, FIRST_FAILURES, [0, 1], [True, False], [None, 30.0]))


@pytest.mark.parametrize("answer, attempts, first, resends, resend_policy, retry_after", CASES)
def test_every_combination(answer, attempts, first, resends, resend_policy, retry_after):
    row = Row(attempts=attempts, first_failure_at=first, uncertain_resends=resends)
    policy = Policy(retry_window=WINDOW, resend_uncertain=resend_policy)
    t = decide(row, answer, now=NOW, policy=policy, error="boom", retry_after=retry_after, jitter=0.5)

    assert t.state == expected_state(answer, row, policy)
    # Attempts: only an answer about this reader counts one.
    counted = answer not in (Answer.RATE_LIMITED, Answer.NO_ANSWER, Answer.SENDER_REFUSED)
    assert t.attempts == attempts + (1 if counted else 0)
    # The window opens at the first temporary failure (or lost connection), never on a rate limit.
    if answer in (Answer.FAILED_TEMPORARY, Answer.NO_ANSWER):
        assert t.first_failure_at == (NOW if first is None else first)
    else:
        assert t.first_failure_at == first
    # Retry rows get a time in the future, never beyond the cap; final rows none.
    if t.state == "retry" and answer is Answer.SENDER_REFUSED:  # due as soon as the editor resumes
        assert t.next_attempt_at == NOW and not t.final
    elif t.state == "retry":
        assert t.next_attempt_at is not None and NOW < t.next_attempt_at <= NOW + BACKOFF_CAP
        if retry_after:
            assert t.next_attempt_at >= NOW + retry_after  # the server's Retry-After is a floor
        assert not t.final
    else:
        assert t.next_attempt_at is None and t.final
    # An uncertain answer is resent at most UNCERTAIN_RESENDS times in all.
    resent_now = answer is Answer.UNCERTAIN and t.state == "retry"
    assert t.uncertain_resends == resends + (1 if resent_now else 0)
    assert t.uncertain_resends <= max(resends, UNCERTAIN_RESENDS)
    # Only a bounce suppresses the reader; every non-sent row says why.
    assert t.bounce == (answer is Answer.BOUNCED)
    assert (t.error is None) == (t.state == "sent")
    if t.state == "gave-up":
        assert f"gave up after {t.attempts} attempts" in t.error and "NEWSLETTER_RETRY_WINDOW" in t.error


def test_backoff_grows_with_attempts_and_time_since_the_first_failure():
    policy = Policy(retry_window=DEFAULT_RETRY_WINDOW)
    waits = [decide(Row(attempts=n, first_failure_at=NOW), Answer.FAILED_TEMPORARY, now=NOW, policy=policy,
                    jitter=1.0).next_attempt_at - NOW for n in range(0, 12)]
    assert waits[:5] == [1, 2, 4, 8, 16] and waits[-1] == BACKOFF_CAP
    # A connection that keeps dropping counts no attempt, yet the wait still grows with time.
    dropped = [decide(Row(attempts=0, first_failure_at=NOW - since), Answer.NO_ANSWER, now=NOW, policy=policy,
                      jitter=1.0).next_attempt_at - NOW for since in (0, 10, 100, 10_000)]
    assert dropped == [1, 10, 100, BACKOFF_CAP]
    # Jitter spreads retries within [d/2, d].
    low = decide(Row(attempts=3), Answer.FAILED_TEMPORARY, now=NOW, policy=policy, jitter=0.0)
    assert low.next_attempt_at - NOW == 4.0


def test_classify_normalises_transport_results():
    assert classify(None) is Answer.NO_ANSWER
    assert classify(SendResult("a@x", Status.SENT)) is Answer.DELIVERED
    assert classify(SendResult("a@x", Status.QUEUED)) is Answer.DELIVERED
    assert classify(SendResult("a@x", Status.FAILED_TEMPORARY)) is Answer.FAILED_TEMPORARY
    assert classify(SendResult("a@x", Status.FAILED_TEMPORARY, rate_limited=True)) is Answer.RATE_LIMITED
    # A message the transport never tried (an earlier failure stopped the call) used up no attempt.
    assert classify(SendResult("a@x", Status.FAILED_TEMPORARY, attempted=False)) is Answer.NO_ANSWER
    assert classify(SendResult("a@x", Status.FAILED_PERMANENT)) is Answer.FAILED_PERMANENT
    assert classify(SendResult("a@x", Status.FAILED_PERMANENT, bounce=True)) is Answer.BOUNCED
    assert classify(SendResult("a@x", Status.REJECTED)) is Answer.FAILED_PERMANENT
    assert classify(SendResult("a@x", Status.UNCERTAIN)) is Answer.UNCERTAIN
    # The server refused the sender, not this reader: charged nothing, whatever else is set.
    assert classify(SendResult("a@x", Status.FAILED_TEMPORARY, about_sender=True)) is Answer.SENDER_REFUSED
    assert classify(SendResult("a@x", Status.FAILED_TEMPORARY, about_sender=True,
                               attempted=False)) is Answer.SENDER_REFUSED


def test_a_batch_that_comes_back_whole_is_retried_together_when_the_last_is_due():
    from newsletter.outcome import decide_batch

    policy = Policy(retry_window=WINDOW)
    rows = [Row(attempts=0), Row(attempts=3), Row(attempts=0)]
    outage = [(Answer.FAILED_TEMPORARY, "HTTP 503", None), (Answer.FAILED_TEMPORARY, "HTTP 503", None),
              (Answer.RATE_LIMITED, "HTTP 429", 20.0)]
    out, whole = decide_batch(rows, outage, now=NOW, policy=policy, jitters=[1.0, 1.0, 1.0])
    assert whole and {t.state for t in out} == {"retry"}
    assert {t.next_attempt_at for t in out} == {NOW + 20.0}  # one time: the latest of them
    assert [t.attempts for t in out] == [1, 4, 0]
    # One reader through: the rest come back on their own times, and the batch is not whole.
    mixed = [(Answer.DELIVERED, None, None)] + outage[1:]
    out, whole = decide_batch(rows, mixed, now=NOW, policy=policy, jitters=[1.0, 1.0, 1.0])
    assert not whole and [t.state for t in out] == ["sent", "retry", "retry"]
    assert out[1].next_attempt_at == NOW + 8.0 and out[2].next_attempt_at == NOW + 20.0
    assert decide_batch([], [], now=NOW, policy=policy, jitters=[]) == ([], False)


def test_a_result_with_an_unknown_status_is_uncertain_not_a_crash():
    assert classify(SendResult("a@x", "bogus")) is Answer.UNCERTAIN  # type: ignore[arg-type]
