"""Feedback events: applied once each, to the right reader and delivery, on a real SQLite file and on PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from newsletter.events import (Event, Kind, Outcome, SoftBouncePolicy, Stale, apply_event, delivery_event_counts,
                               prepare)
from newsletter.ledger import ensure_schema as ensure_ledger
from newsletter.store import SubscriberStore

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def store(any_db):
    s = SubscriberStore.open(any_db)  # on SQLite and on PostgreSQL (tests/conftest.py)
    ensure_ledger(s.conn)
    yield s
    s.close()


def _delivery(store: SubscriberStore, slug: str, sub_id: int, email: str, provider_id: str | None = None) -> int:
    conn = store.conn
    cur = conn.execute("INSERT INTO deliveries(slug, content_hash, state, created_at) VALUES(?, 'h', 'done', 'x') RETURNING id",
                       (slug,))
    delivery_id = cur.fetchone()[0]
    conn.execute("INSERT INTO ledger(delivery_id, subscriber_id, email, state, provider_id) VALUES(?,?,?,'sent',?)",
                 (delivery_id, sub_id, email, provider_id))
    return delivery_id


@pytest.mark.parametrize("kind,status", [(Kind.HARD_BOUNCE, "bounced"), (Kind.COMPLAINT, "complained"),
                                         (Kind.UNSUBSCRIBE, "unsubscribed")])
def test_event_changes_the_reader_once(store, kind, status):
    sub = store.add("a@example.org")
    e = Event(kind, "postmark", "pm-1", email="A@example.org", detail="550 5.1.1\r\nBcc: x")
    assert apply_event(store, e, now=NOW) is Outcome.APPLIED
    assert store.get(sub.id).status == status
    assert apply_event(store, e, now=NOW) is Outcome.DUPLICATE
    reason = store.status_reason(sub.id)
    assert "\n" not in reason and "\r" not in reason and "postmark" in reason


def test_complaint_beats_bounce_and_is_never_undone(store):
    sub = store.add("a@example.org")
    apply_event(store, Event(Kind.COMPLAINT, "ses", "c1", email="a@example.org"), now=NOW)
    assert apply_event(store, Event(Kind.HARD_BOUNCE, "ses", "b1", email="a@example.org"), now=NOW) \
        is Outcome.NO_CHANGE
    assert apply_event(store, Event(Kind.UNSUBSCRIBE, "inbox", "u1", subscriber_id=sub.id), now=NOW) \
        is Outcome.NO_CHANGE
    assert store.get(sub.id).status == "complained"


def test_unknown_reader_changes_nothing(store):
    store.add("a@example.org")
    assert apply_event(store, Event(Kind.HARD_BOUNCE, "mailgun", "x", email="nobody@example.org"), now=NOW) \
        is Outcome.UNKNOWN_READER
    assert store.counts()["active"] == 1


def test_soft_bounces_suppress_only_past_the_limit_within_the_window(store):
    sub = store.add("a@example.org")
    policy = SoftBouncePolicy(limit=3, window=timedelta(days=10))
    old = Event(Kind.SOFT_BOUNCE, "sendgrid", "s0", email="a@example.org", occurred_at=NOW - timedelta(days=30))
    apply_event(store, old, policy=policy, now=NOW)
    for i in (1, 2):
        e = Event(Kind.SOFT_BOUNCE, "sendgrid", f"s{i}", email="a@example.org", occurred_at=NOW, provider_id=f"m{i}")
        assert apply_event(store, e, policy=policy, now=NOW) is Outcome.APPLIED
        assert store.get(sub.id).status == "active"
    third = Event(Kind.SOFT_BOUNCE, "sendgrid", "s3", email="a@example.org", occurred_at=NOW, provider_id="m3")
    assert apply_event(store, third, policy=policy, now=NOW) is Outcome.APPLIED
    assert store.get(sub.id).status == "bounced"


def test_events_are_tied_to_their_delivery(store):
    a = store.add("a@example.org")
    b = store.add("b@example.org")
    d6 = _delivery(store, "issue-six", a.id, "a@example.org", provider_id="pm-abc")
    d7 = _delivery(store, "issue-seven", b.id, "b@example.org")
    apply_event(store, Event(Kind.HARD_BOUNCE, "postmark", "1", email="a@example.org", provider_id="pm-abc"), now=NOW)
    apply_event(store, Event(Kind.COMPLAINT, "inbox", "2", email="b@example.org",
                             message_id="<issue-seven.0123abcd@news.example>"), now=NOW)
    assert delivery_event_counts(store.conn, d6)["hard-bounce"] == 1
    assert delivery_event_counts(store.conn, d7) == {"hard-bounce": 0, "soft-bounce": 0, "complaint": 1,
                                                     "unsubscribe": 0}


def test_an_unknown_address_is_found_by_provider_id_and_tied_to_its_delivery(store):
    sub = store.add("a@example.org")
    did = _delivery(store, "s", sub.id, "a@example.org", provider_id="pm-msg-1")
    e = Event(Kind.HARD_BOUNCE, "postmark", "pm-alias", email="alias@forwarder.example", provider_id="pm-msg-1")
    assert apply_event(store, e, now=NOW) is Outcome.APPLIED
    assert store.get(sub.id).status == "bounced"
    assert delivery_event_counts(store.conn, did)["hard-bounce"] == 1
    # an id shared by several rows names nobody
    other = store.add("b@example.org")
    store.conn.execute("INSERT INTO ledger(delivery_id, subscriber_id, email, state, provider_id)"
                       " VALUES(?,?,?,'sent','pm-msg-1')", (did, other.id, "b@example.org"))
    e2 = Event(Kind.HARD_BOUNCE, "postmark", "pm-alias-2", email="alias@forwarder.example", provider_id="pm-msg-1")
    assert apply_event(store, e2, now=NOW) is Outcome.UNKNOWN_READER
    assert store.get(other.id).status == "active"


@pytest.mark.parametrize("ids", [
    {"provider_id": "mg-1"}, {"message_id": "<issue.abc@example.org>"}, {},  # {}: no message named: by day
])
def test_attempts_at_one_message_are_one_soft_bounce(store, ids):
    """Mailgun reports each failed attempt (attempt-no 1, 2, 3…), greylisting retries for hours:
    soft bounces count distinct messages, never attempts (issue 22)."""
    sub = store.add("a@example.org")
    policy = SoftBouncePolicy(limit=2, window=timedelta(days=30))
    for attempt in range(6):
        e = Event(Kind.SOFT_BOUNCE, "mailgun", f"attempt{attempt}", email="a@example.org",
                  occurred_at=NOW + timedelta(minutes=10 * attempt), **ids)
        assert apply_event(store, e, policy=policy, now=NOW) is Outcome.APPLIED
    assert store.get(sub.id).status == "active"
    other = {k: v + "-other" for k, v in ids.items()} if ids else {}
    later = NOW + timedelta(days=1) if not ids else NOW
    e = Event(Kind.SOFT_BOUNCE, "mailgun", "next", email="a@example.org", occurred_at=later, **other)
    apply_event(store, e, policy=policy, now=later)
    assert store.get(sub.id).status == "bounced"


def test_soft_bounces_tied_to_one_delivery_count_once_whatever_ids_they_carry(store):
    sub = store.add("a@example.org")
    _delivery(store, "issue-six", sub.id, "a@example.org", provider_id="pm-abc")
    policy = SoftBouncePolicy(limit=2, window=timedelta(days=30))
    for i, ids in enumerate(({"provider_id": "pm-abc"}, {"message_id": "<issue-six.x@example.org>"},
                             {"provider_id": "pm-abc"})):
        apply_event(store, Event(Kind.SOFT_BOUNCE, "postmark", f"k{i}", email="a@example.org", occurred_at=NOW,
                                 **ids), policy=policy, now=NOW)
    assert store.get(sub.id).status == "active"


def test_soft_bounces_recorded_before_the_message_key_keep_their_delivery(tmp_path):
    """An upgraded database: rows from before carry their delivery (or day) as the message key, so
    a soft bounce about the same delivery, applied after the upgrade, does not count twice."""
    from newsletter.db import connect, migrate
    from newsletter.events import MIGRATIONS
    from newsletter.schema import COMPONENTS, migrations

    conn = connect(tmp_path / "old.db")
    for component in COMPONENTS[:2]:  # subscribers and delivery as they are now
        migrate(conn, component.name, migrations(component))
    migrate(conn, "events", MIGRATIONS[:1])  # the events schema as it was
    store = SubscriberStore(conn)
    sub = store.add("a@example.org")
    delivery = _delivery(store, "issue-six", sub.id, "a@example.org", provider_id="pm-abc")
    with store.conn:
        store.conn.execute("INSERT INTO feedback_events(dedupe_key, kind, source, subscriber_id, delivery_id, email, "
                           "occurred_at, received_at, outcome) VALUES('old', 'soft-bounce', 'postmark', ?, ?, "
                           "'a@example.org', '2026-03-01T10:00:00.000000Z', '2026-03-01T10:00:00.000000Z', 'applied')",
                           (sub.id, delivery))
    store.close()
    store = SubscriberStore.open(tmp_path / "old.db")  # the opener brings events up to date
    policy = SoftBouncePolicy(limit=2, window=timedelta(days=30))
    apply_event(store, Event(Kind.SOFT_BOUNCE, "postmark", "new", email="a@example.org", occurred_at=NOW,
                             provider_id="pm-abc"), policy=policy, now=NOW)
    assert store.get(sub.id).status == "active"
    store.close()


# ---- the usual event: its reads before the writer line (newsletter.events.prepare) ----------
@pytest.mark.parametrize("kind,status", [(Kind.HARD_BOUNCE, "bounced"), (Kind.COMPLAINT, "complained"),
                                         (Kind.UNSUBSCRIBE, "unsubscribed")])
def test_a_prepared_event_is_applied_and_recorded_as_the_slow_path_would(store, kind, status):
    sub = store.add("a@example.org")
    delivery_id = _delivery(store, "006-x", sub.id, "a@example.org", provider_id="pm-7")
    e = Event(kind, "postmark", "pm-1", email="A@example.org", provider_id="pm-7", detail="550")
    ready = prepare(store, e)
    assert ready is not None and ready.sub.id == sub.id and ready.delivery_id == delivery_id
    assert apply_event(store, e, now=NOW, ready=ready) is Outcome.APPLIED
    assert store.get(sub.id).status == status and "postmark" in store.status_reason(sub.id)
    row = store.conn.execute("SELECT subscriber_id, delivery_id, outcome FROM feedback_events WHERE dedupe_key='pm-1'"
                             ).fetchone()
    assert tuple(row) == (sub.id, delivery_id, "applied")
    assert prepare(store, e) is None  # recorded: the slow path says duplicate
    assert apply_event(store, e, now=NOW) is Outcome.DUPLICATE


def test_events_the_slow_path_decides_are_not_prepared(store):
    store.add("a@example.org")
    gone = store.add("b@example.org")
    apply_event(store, Event(Kind.COMPLAINT, "ses", "c1", email="b@example.org"), now=NOW)
    assert prepare(store, Event(Kind.SOFT_BOUNCE, "ses", "s1", email="a@example.org")) is None
    assert prepare(store, Event(Kind.HARD_BOUNCE, "ses", "h1", email="nobody@example.org")) is None
    assert prepare(store, Event(Kind.HARD_BOUNCE, "ses", "h2", email="b@example.org")) is None  # nothing to change
    assert store.get(gone.id).status == "complained"


def test_a_duplicate_that_came_meanwhile_stops_at_the_claim(store):
    sub = store.add("a@example.org")
    e = Event(Kind.HARD_BOUNCE, "postmark", "pm-1", email="a@example.org")
    ready = prepare(store, e)
    assert apply_event(store, e, now=NOW) is Outcome.APPLIED  # another thread, between the reads and the line
    assert apply_event(store, e, now=NOW, ready=ready) is Outcome.DUPLICATE
    assert store.conn.execute("SELECT COUNT(*) FROM feedback_events").fetchone()[0] == 1
    assert store.get(sub.id).status == "bounced"


def test_a_reader_changed_meanwhile_makes_the_prepared_event_stale_and_rolls_back(store):
    sub = store.add("a@example.org")
    e = Event(Kind.HARD_BOUNCE, "postmark", "pm-1", email="a@example.org")
    ready = prepare(store, e)
    apply_event(store, Event(Kind.COMPLAINT, "ses", "c1", email="a@example.org"), now=NOW)  # meanwhile
    with pytest.raises(Stale):
        apply_event(store, e, now=NOW, ready=ready)
    assert not store.conn.in_transaction
    assert store.conn.execute("SELECT COUNT(*) FROM feedback_events WHERE dedupe_key='pm-1'").fetchone()[0] == 0
    assert apply_event(store, e, now=NOW) is Outcome.NO_CHANGE  # the slow way decides
    assert store.get(sub.id).status == "complained"


def test_inside_the_writer_line_a_prepared_event_is_two_statements(tmp_path, monkeypatch):
    with SubscriberStore.open(tmp_path / "n.db") as store:
        ensure_ledger(store.conn)
        store.add("a@example.org")
        e = Event(Kind.HARD_BOUNCE, "postmark", "pm-1", email="a@example.org", provider_id="pm-7")
        ready = prepare(store, e)
        said: list[str] = []
        execute = store.conn.execute

        def recording(sql, *args):
            said.append(sql.split()[0])
            return execute(sql, *args)

        monkeypatch.setattr(store.conn, "execute", recording)  # each call lets the GIL go
        with store.transaction():
            apply_event(store, e, now=NOW, ready=ready)
        assert said == ["BEGIN", "INSERT", "UPDATE", "COMMIT"]
        assert store.get(1).status == "bounced"
