"""The named states the database stores, defined once for every backend and caller.

Each is a :class:`enum.StrEnum`: a member *is* its stored text (``RowState.SENT == "sent"``),
so it binds as a query parameter on SQLite and PostgreSQL alike and reads back as the same
word. SQL that names a state literally (a CHECK constraint, a partial index) is built from
these lists too, so a new state is added in one place.

No imports beyond ``enum``: ``status`` and the web app load this on their fast paths.
"""

from __future__ import annotations

from enum import StrEnum


class SubscriberStatus(StrEnum):
    """Whether a reader is sent to. Only ``active`` is; the suppressed ones are kept on purpose."""

    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    PENDING = "pending"  # signed up, not yet confirmed: never sent to; purged when the link expires

    @property
    def suppressed(self) -> bool:
        return self in SUPPRESSED


SUPPRESSED: frozenset[SubscriberStatus] = frozenset(
    {SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED})


class DeliveryState(StrEnum):
    """Where one delivery (one issue to the list) stands."""

    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    DONE = "done"
    CANCELLED = "cancelled"
    HELD = "held"
    DEFERRED = "deferred"


#: Deliveries not finished: a worker, `resume` or `send` may still act on them.
OPEN_DELIVERY_STATES: tuple[DeliveryState, ...] = (
    DeliveryState.SCHEDULED, DeliveryState.RUNNING, DeliveryState.PAUSED, DeliveryState.HELD, DeliveryState.DEFERRED)


class RowState(StrEnum):
    """Where one reader of one delivery stands (a ledger row).

    ``retry`` waits for its next attempt; ``gave-up`` is final: temporary failures went on past
    the retry window. (It was stored as ``failed-temporary`` before ledger v4; that word now
    means only a transport's "try again later" answer.)"""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    RETRY = "retry"
    GAVE_UP = "gave-up"
    FAILED_PERMANENT = "failed-permanent"
    SKIPPED = "skipped"
    UNCERTAIN = "uncertain"


#: Rows still to be sent: a delivery is done only when none is left in these.
OPEN_ROW_STATES: tuple[RowState, ...] = (RowState.PENDING, RowState.RETRY, RowState.SENDING)
#: Rows whose message may have reached the reader: a later delivery of the issue leaves them out,
#: and an issue with one is public in the archive (its "read in your browser" link must work).
REACHED_ROW_STATES: tuple[RowState, ...] = (RowState.SENT, RowState.SENDING, RowState.UNCERTAIN)
#: Final rows that need the editor's attention (``status --failed``).
FAILED_ROW_STATES: tuple[RowState, ...] = (RowState.FAILED_PERMANENT, RowState.GAVE_UP, RowState.UNCERTAIN)


def sql_list(states: tuple[StrEnum, ...] | type[StrEnum]) -> str:
    """``('a','b')`` for a CHECK constraint or an ``IN``: the members' stored words, quoted."""
    return "(" + ",".join(f"'{s.value}'" for s in states) + ")"
