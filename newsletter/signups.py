"""Signup with double opt-in: the data side (requests, limits, confirmation, expiry).

A web signup never makes anyone ``active`` by itself. It records a *request*
(a new address becomes ``pending``; an address that had unsubscribed keeps its
status) and says whether a confirmation email may go out. Only a POST on the
link in that email makes the reader active and records consent: when it was
asked for, when it was confirmed, from where, and from which IP. Bounced and
complained addresses are never reactivated, and never mailed.

List-bombing limits live in the ``signup_events`` table (component ``signup``),
so they survive restarts; every time comes from an injected
:class:`~newsletter.clock.Clock`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from newsletter.clock import SYSTEM, Clock
from newsletter.db import migrate
from newsletter.ledger import parse_timestamp
from newsletter.store import (ACTIVE, BOUNCED, COMPLAINED, PENDING, UNSUBSCRIBED, Subscriber, SubscriberStore,
                              clean_text, normalise_email, stamp)

COMPONENT = "signup"
MIGRATIONS: list[str] = [
    # v1: one row per counted event; ``key`` is an IP or a hashed address ('' for the global cap).
    """CREATE TABLE signup_events (
  scope TEXT NOT NULL CHECK (scope IN ('ip','address','global')),
  key TEXT NOT NULL,
  at REAL NOT NULL
);
CREATE INDEX signup_events_lookup ON signup_events(scope, key, at);
CREATE INDEX signup_events_age ON signup_events(at)""",
    # v2: the durable outbox of confirmation and welcome emails, written in the request's own
    # transaction, so a crash between "recorded" and "sent" delays an email but never drops it.
    """CREATE TABLE signup_outbox (
  id INTEGER PRIMARY KEY,
  subscriber_id INTEGER NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('confirm','welcome')),
  due_at REAL NOT NULL,
  lease_until REAL NOT NULL DEFAULT 0,
  attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX signup_outbox_due ON signup_outbox(due_at)""",
]

HOUR = 3600.0
DAY = 24 * HOUR
MAX_NAME = 100


@dataclass(frozen=True)
class SignupLimits:
    """The knobs; defaults match ``.env.example``."""

    confirm_ttl: float = 48 * HOUR          # NEWSLETTER_CONFIRM_TTL (seconds)
    hourly_cap: int = 100                    # NEWSLETTER_SIGNUP_HOURLY_CAP: confirmation emails per hour, all told
    per_ip_hourly: int = 10                  # NEWSLETTER_SIGNUP_PER_IP_HOURLY: signup requests per IP per hour
    per_address: float = DAY                 # one confirmation email per address per this many seconds
    min_fill_seconds: float = 3.0            # NEWSLETTER_SIGNUP_MIN_SECONDS: a human takes longer


@dataclass(frozen=True)
class SignupDecision:
    """What to do after a request. ``mail`` is None when nothing goes out; ``why`` is for logs only,
    never for the visitor, who sees the same page whatever it says."""

    mail: Subscriber | None
    why: str


@dataclass(frozen=True)
class Consent:
    source: str
    text: str
    requested_at: str
    confirmed_at: str
    ip: str


def _address_key(email: str) -> str:
    return hashlib.sha256(email.lower().encode()).hexdigest()


class Signups:
    """Signup requests and confirmations on a :class:`SubscriberStore`'s connection."""

    def __init__(self, store: SubscriberStore, limits: SignupLimits | None = None, clock: Clock = SYSTEM):
        self.store, self.limits, self.clock = store, limits or SignupLimits(), clock
        migrate(store.conn, COMPONENT, MIGRATIONS)

    # ---- requests ------------------------------------------------------------------
    def request(self, email: str, name: str = "", *, ip: str, source: str, consent: str,
                lang: str = "") -> SignupDecision:
        """Record a signup request; decide whether a confirmation email goes out.

        Raises :class:`~newsletter.errors.InputError` for an invalid address or name (the
        visitor's typo, answered with a 400); everything else answers the same.
        """
        email = normalise_email(email)
        name = clean_text(name, "name")[:MAX_NAME]
        now = self.clock.now()
        t = now.timestamp()
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM signup_events WHERE at < ?", (t - max(DAY, self.limits.per_address),))
            if self._count(conn, "ip", ip, t - HOUR) >= self.limits.per_ip_hourly:
                return SignupDecision(None, "rate limit: ip")
            conn.execute("INSERT INTO signup_events(scope, key, at) VALUES('ip', ?, ?)", (ip, t))
            row = conn.execute("SELECT id, status FROM subscribers WHERE email=?", (email,)).fetchone()
            status = row[1] if row else None
            if status in (ACTIVE, BOUNCED, COMPLAINED):
                return SignupDecision(None, f"address is {status}")
            if self._count(conn, "address", _address_key(email), t - self.limits.per_address):
                return SignupDecision(None, "rate limit: address")
            if self._count(conn, "global", "", t - HOUR) >= self.limits.hourly_cap:
                return SignupDecision(None, "rate limit: hourly cap")
            conn.executemany("INSERT INTO signup_events(scope, key, at) VALUES(?, ?, ?)",
                             [("address", _address_key(email), t), ("global", "", t)])
            sid = self._record_request(conn, row[0] if row else None, email, name, ip, source, consent, stamp(now))
            if lang:  # the language chosen on the form: for a reader not yet confirmed only
                conn.execute("UPDATE subscribers SET lang=? WHERE id=? AND status='pending'", (lang, sid))
            conn.execute("INSERT INTO signup_outbox(subscriber_id, kind, due_at) VALUES(?, 'confirm', ?)", (sid, t))
        return SignupDecision(self.store.get(sid), "new" if row is None else f"address is {status}")

    @staticmethod
    def _count(conn, scope: str, key: str, since: float) -> int:  # noqa: ANN001
        return conn.execute("SELECT COUNT(*) FROM signup_events WHERE scope=? AND key=? AND at>=?",
                            (scope, key, since)).fetchone()[0]

    @staticmethod
    def _record_request(conn, sid: int | None, email: str, name: str, ip: str,  # noqa: ANN001
                        source: str, consent: str, now: str) -> int:
        if sid is None:
            cur = conn.execute(
                "INSERT INTO subscribers(email, name, status, created_at, changed_at, source, consent,"
                " signup_requested_at, signup_ip) VALUES(?, ?, 'pending', ?, ?, ?, ?, ?, ?)",
                (email, name, now, now, source, consent, now, ip))
            return int(cur.lastrowid)
        # Pending or unsubscribed: a fresh request; an unsubscribed reader stays so until confirmed.
        conn.execute("UPDATE subscribers SET signup_requested_at=?, signup_ip=?,"
                     " name=CASE WHEN status='pending' AND ?<>'' THEN ? ELSE name END WHERE id=?",
                     (now, ip, name, name, sid))
        return sid

    # ---- confirmation --------------------------------------------------------------
    def confirmable(self, sid: int) -> str:
        """``"open"`` (a live request), ``"done"`` (already active), ``"expired"`` or ``"none"``."""
        row = self.store.conn.execute("SELECT status, signup_requested_at FROM subscribers WHERE id=?",
                                      (sid,)).fetchone()
        if row is None or row[0] in (BOUNCED, COMPLAINED):
            return "none"
        if not row[1]:
            return "done" if row[0] == ACTIVE else "none"
        requested = parse_timestamp(row[1])
        if requested is None or self.clock.now() - requested > timedelta(seconds=self.limits.confirm_ttl):
            return "expired"  # an unreadable request time cannot prove the link is still live
        return "open" if row[0] in (PENDING, UNSUBSCRIBED) else "done"

    def confirm(self, sid: int, *, ip: str, welcome: bool = False) -> str:
        """Make the reader active and record consent (and queue the welcome email when asked).
        Returns the state *before*: only ``"open"`` changed anything; a second POST of the
        same link returns ``"done"``."""
        now = self.clock.now()
        with self.store.transaction() as conn:
            state = self.confirmable(sid)  # read inside the transaction: a racing confirm sees "done"
            if state == "open":
                conn.execute(
                    "UPDATE subscribers SET status='active', status_reason='', changed_at=?,"
                    " consent_requested_at=signup_requested_at, consent_confirmed_at=?, consent_ip=?,"
                    " signup_requested_at='' WHERE id=?", (stamp(now), stamp(now), ip, sid))
                if welcome:
                    conn.execute("INSERT INTO signup_outbox(subscriber_id, kind, due_at) VALUES(?, 'welcome', ?)",
                                 (sid, now.timestamp()))
        return state

    # ---- the outbox ----------------------------------------------------------------
    def claim_due(self, lease: float, limit: int = 20) -> list[tuple[int, str, Subscriber | None]]:
        """Lease up to ``limit`` due emails (another process skips them until the lease ends).
        Each is ``(outbox id, kind, subscriber or None when it should no longer be sent)``."""
        t = self.clock.now().timestamp()
        out: list[tuple[int, str, Subscriber | None]] = []
        with self.store.transaction() as conn:
            rows = conn.execute("SELECT id, subscriber_id, kind FROM signup_outbox WHERE due_at<=? AND lease_until<=?"
                                " ORDER BY id LIMIT ?", (t, t, limit)).fetchall()
            for oid, sid, kind in rows:
                conn.execute("UPDATE signup_outbox SET lease_until=? WHERE id=?", (t + lease, oid))
                sub = self.store.get(sid)
                wanted = sub is not None and (self.confirmable(sid) == "open" if kind == "confirm"
                                              else sub.status == ACTIVE)
                out.append((oid, kind, sub if wanted else None))
        return out

    def sent(self, outbox_id: int) -> None:
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM signup_outbox WHERE id=?", (outbox_id,))

    def failed(self, outbox_id: int, *, max_attempts: int) -> bool:
        """Back off exponentially (1, 2, 4 ... minutes); returns False when it was the last attempt."""
        t = self.clock.now().timestamp()
        with self.store.transaction() as conn:
            row = conn.execute("SELECT attempts FROM signup_outbox WHERE id=?", (outbox_id,)).fetchone()
            attempts = (row[0] if row else max_attempts) + 1
            if attempts >= max_attempts:
                conn.execute("DELETE FROM signup_outbox WHERE id=?", (outbox_id,))
                return False
            conn.execute("UPDATE signup_outbox SET attempts=?, due_at=?, lease_until=0 WHERE id=?",
                         (attempts, t + 60 * 2 ** (attempts - 1), outbox_id))
        return True

    def due_count(self) -> int:
        t = self.clock.now().timestamp()
        return self.store.conn.execute("SELECT COUNT(*) FROM signup_outbox WHERE due_at<=?", (t,)).fetchone()[0]

    def consent(self, sid: int) -> Consent | None:
        row = self.store.conn.execute(
            "SELECT source, consent, consent_requested_at, consent_confirmed_at, consent_ip"
            " FROM subscribers WHERE id=?", (sid,)).fetchone()
        return Consent(*row) if row else None

    # ---- expiry --------------------------------------------------------------------
    def purge_expired(self) -> int:
        """Delete pending readers whose link expired (they never confirmed, were never mailed
        an issue), and close expired requests of unsubscribed ones. Returns rows deleted."""
        cutoff = stamp(self.clock.now() - timedelta(seconds=self.limits.confirm_ttl))
        with self.store.transaction() as conn:
            deleted = conn.execute("DELETE FROM subscribers WHERE status='pending' AND signup_requested_at<>''"
                                   " AND signup_requested_at<?", (cutoff,)).rowcount
            conn.execute("UPDATE subscribers SET signup_requested_at='' WHERE status<>'pending'"
                         " AND signup_requested_at<>'' AND signup_requested_at<?", (cutoff,))
        return deleted
