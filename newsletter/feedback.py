"""One classified inbox message, applied: events to the store, replies to the digest.

Bounces, complaints and mailed unsubscribes become :class:`newsletter.events.Event`s,
so they change a reader exactly as a provider webhook would, once. Replies are
matched to the issue they answer: by ``In-Reply-To``/``References`` against our
Message-IDs (``<slug.hash@our-domain>``), else by a subscriber's address and a
"Re:" subject equal to what we sent. Everything is recorded once per message, keyed by
its content (never its Message-ID, which anyone can reuse), so reading the mailbox twice
changes nothing while a different message reusing an id is still read.
"""

from __future__ import annotations

import sqlite3
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from newsletter import replies
from newsletter.addresses import mask_email
from newsletter.classify import Category, Classified, strip_reply_prefixes
from newsletter.errors import scrub
from newsletter.events import Event, Kind, Outcome, SoftBouncePolicy, apply_event
from newsletter.excerpt import printable
from newsletter.ledger.lookups import issue_addresses, issue_freezes, iter_recipients, latest_sent_slug, sent_issue
from newsletter.message_ids import HASH_CHARS, hash_of, make_message_id, real_send_salt, slug_of, verify_message_id
from newsletter.store import SubscriberStore

SOURCE = "inbox"
MAX_FAILURES = 10
#: Issues whose Message-IDs an inbox run keeps at hand: 12 bytes a reader each.
ISSUES_KEPT = 8


class _IssueIds:
    """The Message-ID of every recipient of an issue's real deliveries, made once: sorted 64-bit
    hash prefixes beside their readers' ids (arrays: 100k readers in 1.2 MB), so finding who an
    id was made for is a binary search. Anyone can mail a report quoting a made-up id of a real
    issue; without this each one cost an HMAC per reader (100k readers: half a second)."""

    def __init__(self, conn: sqlite3.Connection, secret_key: str, slug: str, domain: str):
        salt = real_send_salt(slug)
        self.freezes = issue_freezes(conn, slug)  # read first: a freeze after it shows as a change
        pairs = sorted((int(hash_of(make_message_id(secret_key, salt, slug, email, domain))[:16], 16), sub_id)
                       for delivery_id, _ in self.freezes for sub_id, email in iter_recipients(conn, delivery_id))
        self.hashes, self.ids = array("Q", (h for h, _ in pairs)), array("q", (i for _, i in pairs))
        self.size = len(pairs)

    def readers(self, digest: str) -> list[int]:
        """The readers whose id has this hash prefix (one, or none; newest row first if more)."""
        key = int(digest[:16], 16)
        return sorted({self.ids[i] for i in range(bisect_left(self.hashes, key), bisect_right(self.hashes, key))},
                      reverse=True)


@dataclass(frozen=True)
class Handled:
    """What happened to one message: its class, the reason, and the outcome, for one line."""

    category: str
    reason: str
    outcome: str
    slug: str | None = None
    reply: replies.Reply | None = None

    def line(self) -> str:
        """One line for a terminal: quoted ids and addresses come from the message, so scrubbed."""
        return f"{self.category:<11} " + scrub(printable(f"{self.reason} → {self.outcome}"), 400)


class Applier:
    """Applies classified messages to one database; holds the store and the policy."""

    def __init__(self, store: SubscriberStore, *, secret_key: str, sender_domain: str,
                 policy: SoftBouncePolicy = SoftBouncePolicy(), now: datetime | None = None):
        self.store, self.conn = store, store.conn
        self.secret_key, self.domain, self.policy = secret_key, sender_domain, policy
        self.now = now
        self._ids_by_slug: dict[str, _IssueIds] = {}

    def _now(self) -> datetime:
        return self.now or datetime.now(timezone.utc)

    def apply(self, c: Classified) -> Handled:
        if replies.seen(self.conn, c.dedupe_key):
            return Handled(c.category.value, c.line(), "already read")
        handler = {Category.BOUNCE: self._bounce, Category.COMPLAINT: self._complaint,
                   Category.UNSUBSCRIBE: self._unsubscribe, Category.REPLY: self._reply}.get(c.category)
        handled = handler(c) if handler else Handled(c.category.value, c.line(), "ignored", self._issue_slug(c))
        replies.record(self.conn, c.dedupe_key, handled.category, handled.slug, self._now(), handled.reply)
        return handled

    def _event(self, kind: Kind, c: Classified, key_suffix: str, **fields: object) -> Outcome:
        event = Event(kind, SOURCE, f"{SOURCE}:{c.dedupe_key}:{key_suffix}"[:500], occurred_at=self._now(),
                      message_id=c.original_message_id or None, **fields)  # type: ignore[arg-type]
        return apply_event(self.store, event, policy=self.policy, now=self._now())

    def _issue_slug(self, c: Classified) -> str | None:
        """The issue a message concerns: the one whose Message-ID it quotes or answers."""
        for ref in (c.original_message_id, *c.references):
            slug = slug_of(ref, self.domain)
            if slug and sent_issue(self.conn, slug=slug):
                return slug
        return None

    def _reader(self, c: Classified, named: str) -> dict[str, object] | str:
        """Who a bounce or complaint is about, proved by the Message-ID of ours it quotes: the
        address it names when the id was made for it, else the reader the id was made for.
        Anyone can mail a report; only we can make the id. A string says why nobody."""
        mid = c.original_message_id
        if not mid:
            return "it quotes no Message-ID of ours: nothing changed"
        if verify_message_id(self.secret_key, mid, named, self.domain):
            return {"email": named}
        return self._made_for(mid)

    def _made_for(self, mid: str) -> dict[str, object] | str:
        """The reader ``mid`` was made for, among the recipients of every real delivery of its
        issue, not only the latest. The issue's ids are made once per run (:class:`_IssueIds`), so
        each report, forged or not, costs a lookup, not a pass over the readers."""
        slug, digest = slug_of(mid, self.domain), hash_of(mid)
        if slug and len(digest) == HASH_CHARS and all(ch in "0123456789abcdef" for ch in digest):
            ids = self._ids_by_slug.pop(slug, None)
            if ids is None or ids.freezes != issue_freezes(self.conn, slug):  # a delivery froze since
                ids = _IssueIds(self.conn, self.secret_key, slug, self.domain)
            if ids.size:  # kept, most recent last; an issue never sent is not kept (it would push one out)
                self._ids_by_slug[slug] = ids
                while len(self._ids_by_slug) > ISSUES_KEPT:
                    del self._ids_by_slug[next(iter(self._ids_by_slug))]
            for sub_id in ids.readers(digest):
                email = next((e for e in issue_addresses(self.conn, slug, sub_id)
                              if verify_message_id(self.secret_key, mid, e, self.domain)), None)
                if email is not None:
                    return {"subscriber_id": sub_id, "email": email}
        return f"its Message-ID {mid[:80]} is not one we sent: nothing changed"

    def _bounce(self, c: Classified) -> Handled:
        outcomes: list[str] = []
        for f in c.failures[:MAX_FAILURES]:  # we send one message per reader: a report names one or two
            kind = Kind.HARD_BOUNCE if f.permanent else Kind.SOFT_BOUNCE
            reader = self._reader(c, f.address)
            if isinstance(reader, str):
                outcomes.append(reader)
                continue
            detail = " ".join(x for x in (f.status, f.diagnostic) if x)
            outcome = self._event(kind, c, str(reader["email"]), detail=detail, **reader)
            outcomes.append(f"{kind.value} {outcome.value}")
        return Handled(c.category.value, c.line(), "; ".join(dict.fromkeys(outcomes)) or "nothing to apply",
                       self._issue_slug(c))

    def _complaint(self, c: Classified) -> Handled:
        reader = self._reader(c, c.complainant)
        if isinstance(reader, str):
            return Handled(c.category.value, c.line(), reader, self._issue_slug(c))
        outcome = self._event(Kind.COMPLAINT, c, "complaint", **reader)
        return Handled(c.category.value, c.line(), f"complaint {outcome.value}", self._issue_slug(c))

    def _unsubscribe(self, c: Classified) -> Handled:
        sub = self.store.get_by_token(self.secret_key, c.token)
        if sub is None:
            return Handled(c.category.value, c.line(), "the token does not verify: nothing changed")
        outcome = self._event(Kind.UNSUBSCRIBE, c, "unsubscribe", subscriber_id=sub.id, email=sub.email)
        slug = self._issue_slug(c) or latest_sent_slug(self.conn, sub.id)
        return Handled(c.category.value, c.line(), f"unsubscribe {outcome.value}", slug)

    def _reply(self, c: Classified) -> Handled:
        sub = self.store.get_by_email(c.sender) if c.sender else None
        slug, how = self._issue_slug(c), "Message-ID"
        if slug is None and sub is not None:
            subject = strip_reply_prefixes(c.subject)
            found = sent_issue(self.conn, subject=subject) if subject else None
            slug, how = (found[1] if found else None), "sender and subject"
        if slug is None:
            return Handled(Category.OTHER.value, c.line(), "answers nothing we sent: not feedback")
        name = c.sender_name or (sub.name if sub else "")
        reply = replies.Reply(name=" ".join(name.split())[:100], masked_email=mask_email(c.sender),
                              date=self._date(c), excerpt=c.text, matched_by=how)
        return Handled(c.category.value, c.line(), f"reply to {slug} (matched by {how})", slug, reply)

    def _date(self, c: Classified) -> str:
        """The reply's Date when it is plausible, else when we read it."""
        now = self._now()
        date = c.date if c.date is not None and c.date.tzinfo is not None else None
        if date is None or not (now - timedelta(days=3650) < date < now + timedelta(days=1)):
            date = now
        return date.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
