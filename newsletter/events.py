"""What comes back from readers and providers, applied once each to the store.

Provider webhooks (:mod:`newsletter.webhooks`) and the reply-to inbox
(:mod:`newsletter.inbox`) turn what they receive into :class:`Event`s;
:func:`apply_event` is the one place that changes a subscriber because of one.
Every event carries a ``dedupe_key`` that is unique at its source (a provider's
event id, an inbox message's Message-ID, or a hash of the body), so the same
webhook delivered twice, or the same mailbox read twice, changes things once.

Soft bounces are only counted: soft bounces on ``soft_bounce_limit`` distinct messages
within ``soft_bounce_window`` suppress the reader as bounced. Providers report a temporary
failure once per delivery attempt (Mailgun's ``attempt-no``, greylisting, SES and SendGrid
deferrals), so attempts at one message count once (:func:`_soft_bounce_messages`). A complaint always wins
(:meth:`SubscriberStore.mark_complained`), and nothing ever reactivates it.

No ``from __future__ import annotations``: the records are NamedTuples (cheaper at import
than dataclasses; ``status`` loads this module), and NamedTuple compiles string annotations.
"""

import enum
import sqlite3
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

from newsletter.states import RowState
from newsletter.store import (ACTIVE, BOUNCED, COMPLAINED, PENDING, UNSUBSCRIBED, Subscriber, SubscriberStore, _one_line,
                              stamp)

COMPONENT = "events"

MIGRATIONS: list[str] = [
    """CREATE TABLE feedback_events (
  dedupe_key TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  source TEXT NOT NULL,
  subscriber_id INTEGER,
  delivery_id INTEGER,
  email TEXT NOT NULL DEFAULT '',
  occurred_at TEXT NOT NULL,
  received_at TEXT NOT NULL,
  outcome TEXT NOT NULL,
  detail TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE INDEX feedback_events_subscriber ON feedback_events(subscriber_id, kind, occurred_at);
CREATE INDEX feedback_events_delivery ON feedback_events(delivery_id, kind)""",
    # Which message a soft bounce was about (the provider's id, else our Message-ID), so that
    # several attempts at one message count as one soft bounce.
    # Rows from before: their delivery when known, else their day (as _message_key would say).
    """ALTER TABLE feedback_events ADD COLUMN message_key TEXT NOT NULL DEFAULT '';
UPDATE feedback_events SET message_key = CASE WHEN delivery_id IS NOT NULL THEN 'delivery:' || delivery_id
  ELSE 'day:' || substr(occurred_at, 1, 10) END""",
]


class Kind(str, enum.Enum):
    """The events that change (or may change) a subscriber. Deliveries, opens and
    clicks are not events here: sources ignore them."""

    HARD_BOUNCE = "hard-bounce"
    SOFT_BOUNCE = "soft-bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"


class Outcome(str, enum.Enum):
    APPLIED = "applied"            # the subscriber changed (or the soft bounce was counted)
    NO_CHANGE = "no-change"        # recorded; the subscriber already had that status
    DUPLICATE = "duplicate"        # this dedupe_key was applied before: nothing done
    UNKNOWN_READER = "unknown-reader"  # no subscriber matches: recorded, nothing changed


class Event(NamedTuple):
    """One thing a source reported about one reader.

    ``email`` is the address the source names; ``subscriber_id`` is set when the
    source proved who the reader is (a verified unsubscribe token). ``message_id``
    (ours, with angle brackets) and ``provider_id`` tie the event to a delivery.
    ``detail`` is a one-line diagnostic; it is flattened and cut, never trusted.
    """

    kind: Kind
    source: str
    dedupe_key: str
    email: str = ""
    occurred_at: datetime | None = None
    subscriber_id: int | None = None
    message_id: str | None = None
    provider_id: str | None = None
    detail: str = ""


class SoftBouncePolicy(NamedTuple):
    """Soft bounces on ``limit`` distinct messages within ``window`` make a hard one."""

    limit: int = 3
    window: timedelta = timedelta(days=30)


def _delivery_of(conn: sqlite3.Connection, subscriber_id: int, event: Event) -> int | None:
    """The delivery the event is about: by provider id, else by the slug in our Message-ID."""
    from newsletter.ledger.lookups import delivery_for_event

    return delivery_for_event(conn, subscriber_id, provider_id=event.provider_id, message_id=event.message_id)


def _by_provider_id(store: SubscriberStore, provider_id: str) -> Subscriber | None:
    """The reader the provider's message id was sent to, when the address matches nobody."""
    from newsletter.ledger.lookups import subscriber_for_provider_id

    sid = subscriber_for_provider_id(store.conn, provider_id)
    return store.get(sid) if sid is not None else None


def _message_key(event: Event, delivery_id: int | None, now: datetime) -> str:
    """What identifies the message a soft bounce is about: our delivery (one message per reader
    per delivery), else the provider's message id or our Message-ID, else the day it happened
    (a report naming no message counts once a day)."""
    if delivery_id is not None:
        return f"delivery:{delivery_id}"
    if event.provider_id or event.message_id:
        return f"message:{event.provider_id or event.message_id}"[:400]
    return f"day:{stamp(event.occurred_at or now)[:10]}"


def _soft_bounce_messages(conn: sqlite3.Connection, sub_id: int, key: str, since: datetime) -> int:
    """Distinct messages with a soft bounce for this reader since ``since``, this one included."""
    rows = conn.execute(
        "SELECT DISTINCT message_key FROM feedback_events WHERE subscriber_id=? AND kind=? AND occurred_at>=?",
        (sub_id, Kind.SOFT_BOUNCE.value, stamp(since))).fetchall()
    return len({r[0] for r in rows} | {key})


def _reason(event: Event) -> str:
    return f"{event.source}: {event.kind.value}" + (f": {event.detail}" if event.detail else "")


def _apply_to_subscriber(store: SubscriberStore, before: Subscriber, event: Event, policy: SoftBouncePolicy,
                         now: datetime, delivery_id: int | None) -> Outcome:
    """Change the subscriber as the event says; called inside the event's transaction, in which
    ``before`` was read (so it is the row as it stands)."""
    sub_id = before.id
    reason = _reason(event)
    if event.kind is Kind.COMPLAINT:
        after = store.mark_complained(sub_id, reason)
    elif event.kind is Kind.HARD_BOUNCE:
        after = store.mark_bounced(sub_id, reason)
    elif event.kind is Kind.UNSUBSCRIBE:
        after = store.unsubscribe(sub_id, reason)
    else:
        count = _soft_bounce_messages(store.conn, sub_id, _message_key(event, delivery_id, now), now - policy.window)
        if count < policy.limit:
            return Outcome.APPLIED
        after = store.mark_bounced(sub_id, f"soft bounces on {count} messages within {policy.window.days} days; "
                                           f"{reason}")
    return Outcome.APPLIED if after.status != before.status else Outcome.NO_CHANGE


def _reader_of(store: SubscriberStore, event: Event) -> Subscriber | None:
    """The reader an event names: by proven id, else by address, else by the provider's message id."""
    sub = store.get(event.subscriber_id) if event.subscriber_id is not None else None
    if sub is None and event.email:
        sub = store.get_by_email(event.email)
    if sub is None and event.provider_id:  # an address we never sent to (a forwarder's, an alias)
        sub = _by_provider_id(store, event.provider_id)
    return sub


def _record(conn: sqlite3.Connection, event: Event, sub: Subscriber | None, delivery_id: int | None,
            outcome: Outcome, now: datetime, *, or_skip: bool = False) -> bool:
    """The event's row; with ``or_skip`` an event already recorded is left alone (False), as one statement."""
    skip = " ON CONFLICT(dedupe_key) DO NOTHING RETURNING 1" if or_skip else ""
    cur = conn.execute(
        "INSERT INTO feedback_events(dedupe_key, kind, source, subscriber_id, delivery_id, email,"
        f" occurred_at, received_at, outcome, detail, message_key) VALUES(?,?,?,?,?,?,?,?,?,?,?){skip}",
        (event.dedupe_key, event.kind.value, event.source, sub.id if sub else None, delivery_id,
         _one_line(event.email, 320), stamp(event.occurred_at or now), stamp(now), outcome.value,
         _one_line(event.detail, 500), _message_key(event, delivery_id, now)))
    return not or_skip or cur.fetchone() is not None


#: The status each kind sets, and the statuses it changes (from any other it changes nothing).
_TARGETS = {Kind.HARD_BOUNCE: (BOUNCED, (ACTIVE, PENDING, UNSUBSCRIBED)),
            Kind.UNSUBSCRIBE: (UNSUBSCRIBED, (ACTIVE, PENDING)),
            Kind.COMPLAINT: (COMPLAINED, (ACTIVE, PENDING, UNSUBSCRIBED, BOUNCED))}


class Ready(NamedTuple):
    """What :func:`prepare` read before the writer line: the reader and the delivery."""

    sub: Subscriber
    delivery_id: int | None


class Stale(Exception):
    """The reader changed between :func:`prepare` and the writer line: roll back, apply the slow way."""


def prepare(store: SubscriberStore, event: Event) -> Ready | None:
    """The reads of the usual event (new, about a known reader whose status it changes), done
    outside the writer line: inside, a writer holds every other for as few SQLite calls as it
    can, since each lets the GIL go (see newsletter.db.write_transaction). None: the slow path
    decides (a duplicate, an unknown reader, a soft bounce, nothing to change)."""
    target = _TARGETS.get(event.kind)
    if target is None or store.conn.execute("SELECT 1 FROM feedback_events WHERE dedupe_key=?",
                                            (event.dedupe_key,)).fetchone():
        return None
    sub = _reader_of(store, event)
    if sub is None or sub.status not in target[1]:
        return None
    return Ready(sub, _delivery_of(store.conn, sub.id, event))


def _apply_ready(store: SubscriberStore, event: Event, ready: Ready, now: datetime) -> Outcome:
    """Inside the transaction, two statements: claim the event's key (a duplicate that came
    meanwhile stops here), then the status change, conditional on the status :func:`prepare` read."""
    if not _record(store.conn, event, ready.sub, ready.delivery_id, Outcome.APPLIED, now, or_skip=True):
        return Outcome.DUPLICATE
    status, only_from = _TARGETS[event.kind]
    if store.change_status_if(ready.sub.id, status, _reason(event), only_from) is None:
        raise Stale(event.dedupe_key)
    return Outcome.APPLIED


def apply_event(store: SubscriberStore, event: Event, *, policy: SoftBouncePolicy = SoftBouncePolicy(),
                now: datetime | None = None, ready: Ready | None = None) -> Outcome:
    """Record ``event`` once and apply it to its subscriber. Idempotent by ``dedupe_key``.

    May run inside a transaction the caller opened (to apply a batch all or nothing). ``ready``
    (from :func:`prepare`) skips the reads; it raises :class:`Stale` when they no longer hold, and
    the caller, who opened the transaction, rolls back and applies again without. The
    connection comes from :func:`newsletter.schema.open_database`, which made every table."""
    now = now or datetime.now(timezone.utc)
    with store.transaction() as conn:
        if ready is not None:
            return _apply_ready(store, event, ready, now)
        if conn.execute("SELECT 1 FROM feedback_events WHERE dedupe_key=?", (event.dedupe_key,)).fetchone():
            return Outcome.DUPLICATE
        sub = _reader_of(store, event)
        if sub is None:
            outcome, delivery_id = Outcome.UNKNOWN_READER, None
        else:
            delivery_id = _delivery_of(conn, sub.id, event)
            outcome = _apply_to_subscriber(store, sub, event, policy, now, delivery_id)
        _record(conn, event, sub, delivery_id, outcome, now)
    return outcome


def delivery_event_counts(conn: sqlite3.Connection, delivery_id: int) -> dict[str, int]:
    """Readers per event kind for one delivery (for ``status``); every kind present, zero when none.
    A reader reported twice (the SMTP reply and a later DSN, or two webhooks) counts once."""
    out = {k.value: 0 for k in Kind}
    for kind, n in conn.execute(
            "SELECT kind, COUNT(DISTINCT COALESCE(CAST(subscriber_id AS TEXT), lower(email))) FROM feedback_events "
            "WHERE delivery_id=? GROUP BY kind", (delivery_id,)):
        out[kind] = n
    return out


def guard_counts(conn: sqlite3.Connection, delivery_id: int) -> tuple[int, int]:
    """(readers who complained, readers whose hard bounce was reported later) about one delivery,
    each reader once: what the reputation guard (:mod:`newsletter.guard`) weighs during a send.
    A reader the server refused while sending (their ledger row failed-permanent) is counted by
    the guard from the ledger, so a bounce event about them is not counted again here. Through
    the (delivery_id, kind) index and the ledger's key: cheap enough to ask before every batch."""
    out = dict.fromkeys((Kind.COMPLAINT.value, Kind.HARD_BOUNCE.value), 0)
    for kind, n in conn.execute(
            "SELECT e.kind, COUNT(DISTINCT e.subscriber_id) FROM feedback_events e WHERE e.delivery_id=? AND "
            "(e.kind=? OR (e.kind=? AND NOT EXISTS (SELECT 1 FROM ledger l WHERE l.delivery_id=e.delivery_id "
            f"AND l.subscriber_id=e.subscriber_id AND l.state='{RowState.FAILED_PERMANENT}'))) GROUP BY e.kind",
            (delivery_id, Kind.COMPLAINT.value, Kind.HARD_BOUNCE.value)):
        out[kind] = n
    return out[Kind.COMPLAINT.value], out[Kind.HARD_BOUNCE.value]
