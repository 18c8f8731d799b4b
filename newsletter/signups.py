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
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import NamedTuple

from newsletter import signup_status
from newsletter.clock import SYSTEM, Clock
from newsletter.errors import scrub
from newsletter.timestamps import parse_timestamp
from newsletter.store import (ACTIVE, BOUNCED, COMPLAINED, PENDING, UNSUBSCRIBED, Subscriber, SubscriberStore,
                              clean_text, normalise_email, stamp)


#: One request, for any address: a new one becomes pending; a pending or unsubscribed one gets a fresh
#: request (and nonce; an unsubscribed reader stays so until confirmed); an active, bounced or
#: complained one is written back unchanged (status=status too: the counts trigger fires as for a new
#: address, see newsletter.store v6). With ``:go`` false (a limit held the request back) it
#: writes nothing, and an open link keeps working.
_REQUEST_SQL = f"""INSERT INTO subscribers AS s(email, name, status, created_at, changed_at, source, consent,
  signup_requested_at, signup_ip, signup_nonce)
SELECT :email, :name, '{PENDING}', :at, :at, :source, :consent, :at, :ip, :nonce WHERE :go
ON CONFLICT(email) DO UPDATE SET
  status=s.status,
  signup_requested_at=CASE WHEN s.status IN ('{PENDING}','{UNSUBSCRIBED}') THEN excluded.signup_requested_at
                           ELSE s.signup_requested_at END,
  signup_ip=CASE WHEN s.status IN ('{PENDING}','{UNSUBSCRIBED}') THEN excluded.signup_ip ELSE s.signup_ip END,
  signup_nonce=CASE WHEN s.status IN ('{PENDING}','{UNSUBSCRIBED}') THEN excluded.signup_nonce ELSE s.signup_nonce END,
  name=CASE WHEN s.status='{PENDING}' AND excluded.name<>'' THEN excluded.name ELSE s.name END
RETURNING id, status"""

#: Queue (or re-arm: due now, failures forgotten) the confirmation mail when the last parameter is
#: true; a lease another process holds is kept. Parameters: subscriber id, due, whether to queue.
_QUEUE_SQL = """INSERT INTO signup_outbox(subscriber_id, kind, due_at) SELECT ?, 'confirm', ? WHERE ?
ON CONFLICT(subscriber_id, kind) DO UPDATE SET
  due_at=CASE WHEN excluded.due_at < signup_outbox.due_at THEN excluded.due_at ELSE signup_outbox.due_at END, attempts=0,
  first_failed_at=0, last_error='', gave_up_at=0"""

#: Outbox rows that no longer apply: the reader is gone, a confirmation's request is closed
#: (confirmed, expired, unsubscribed), a welcome's reader is no longer active.
_MOOT_MAIL_SQL = f"""DELETE FROM signup_outbox WHERE NOT EXISTS (SELECT 1 FROM subscribers s
  WHERE s.id = signup_outbox.subscriber_id AND CASE signup_outbox.kind
    WHEN 'confirm' THEN s.signup_requested_at<>'' ELSE s.status='{ACTIVE}' END)"""

HOUR = 3600.0
DAY = 24 * HOUR
MAX_NAME = 100
RETRY_CAP = 15 * 60.0  # the longest wait between two tries of a signup mail


@dataclass(frozen=True)
class SignupLimits:
    """The knobs; defaults match ``.env.example``."""

    confirm_ttl: float = 48 * HOUR          # NEWSLETTER_CONFIRM_TTL (seconds)
    hourly_cap: int = 100                    # NEWSLETTER_SIGNUP_HOURLY_CAP: confirmation emails per hour, all told
    per_ip_hourly: int = 10                  # NEWSLETTER_SIGNUP_PER_IP_HOURLY: signup requests per IP per hour
    per_address: float = DAY                 # one confirmation email per address per this many seconds
    min_fill_seconds: float = 3.0            # NEWSLETTER_SIGNUP_MIN_SECONDS: a human takes longer
    retry_window: float = DAY                # NEWSLETTER_RETRY_WINDOW (hours there): a failing mail is retried


@dataclass(frozen=True)
class SignupDecision:
    """What to do after a request. ``mail`` is None when nothing goes out; ``why`` is for logs only,
    never for the visitor, who sees the same page whatever it says."""

    mail: Subscriber | None
    why: str


class OutboxMail(NamedTuple):
    """One leased signup mail; ``nonce`` is the request's, for the confirmation link."""

    id: int
    kind: str
    sub: Subscriber | None
    nonce: str


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

    # ---- requests ------------------------------------------------------------------
    def request(self, email: str, name: str = "", *, ip: str, source: str, consent: str,
                lang: str = "") -> SignupDecision:
        """Record a signup request; decide whether a confirmation email goes out.

        Raises :class:`~newsletter.errors.InputError` for an invalid address or name (the
        visitor's typo, answered with a 400); everything else answers the same. Within the
        requester's IP limit, a new, pending, active or suppressed address, over an address or
        hourly limit or not, runs the same statements (the writes that do not apply change
        nothing), so the time taken does not tell who is on the list, nor who signed up lately.
        Each request gets a fresh nonce: only the newest link confirms.
        """
        email = normalise_email(email)
        name = clean_text(name, "name")[:MAX_NAME]
        now = self.clock.now()
        t, at, key, nonce = now.timestamp(), stamp(now), _address_key(email), secrets.token_urlsafe(16)
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM signup_events WHERE at < ?", (t - max(DAY, self.limits.per_address),))
            if self._count(conn, "ip", ip, t - HOUR) >= self.limits.per_ip_hourly:
                return SignupDecision(None, "rate limit: ip")  # this requester's own limit: says nothing of the address
            conn.execute("INSERT INTO signup_events(scope, key, at) VALUES('ip', ?, ?)", (ip, t))
            mailed_lately = self._count(conn, "address", key, t - self.limits.per_address)  # both counted, always
            busy = self._count(conn, "global", "", t - HOUR) >= self.limits.hourly_cap
            limit = "rate limit: address" if mailed_lately else "rate limit: hourly cap" if busy else ""
            before = conn.execute("SELECT status FROM subscribers WHERE email=?", (email,)).fetchone()
            sid, status = conn.execute(_REQUEST_SQL, dict(email=email, name=name, at=at, source=source, consent=consent,
                                                          ip=ip, nonce=nonce, go=not limit)).fetchone() or (0, None)
            mail = status in (PENDING, UNSUBSCRIBED)
            conn.execute("INSERT INTO signup_events(scope, key, at) SELECT 'global', '', ? WHERE ?", (t, mail))
            conn.execute(_QUEUE_SQL, (sid, t, mail))
            # The language chosen on the form, for a reader not yet confirmed only (run always, like the rest).
            conn.execute("UPDATE subscribers SET lang=? WHERE id=? AND status=? AND ?<>'' AND ?",
                         (lang, sid, PENDING, lang, not limit))
        sub = self.store.get(sid)
        return SignupDecision(sub if mail else None, limit or ("new" if before is None else f"address is {before[0]}"))

    @staticmethod
    def _count(conn, scope: str, key: str, since: float) -> int:  # noqa: ANN001
        return conn.execute("SELECT COUNT(*) FROM signup_events WHERE scope=? AND key=? AND at>=?",
                            (scope, key, since)).fetchone()[0]

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
                    f"UPDATE subscribers SET status='{ACTIVE}', status_reason='', changed_at=?,"
                    " consent_requested_at=signup_requested_at, consent_confirmed_at=?, consent_ip=?,"
                    " signup_requested_at='' WHERE id=?", (stamp(now), stamp(now), ip, sid))
                if welcome:
                    conn.execute("INSERT INTO signup_outbox(subscriber_id, kind, due_at) VALUES(?, 'welcome', ?)",
                                 (sid, now.timestamp()))
        return state

    # ---- the outbox ----------------------------------------------------------------
    def claim_due(self, lease: float, limit: int = 20) -> list[OutboxMail]:
        """Lease up to ``limit`` due emails (another process skips them until the lease ends).
        ``sub`` is None when one should no longer be sent (confirmed, expired, unsubscribed, gone)."""
        t = self.clock.now().timestamp()
        out: list[OutboxMail] = []
        with self.store.transaction() as conn:
            rows = conn.execute("SELECT o.id, o.subscriber_id, o.kind, coalesce(s.signup_nonce, '')"
                                " FROM signup_outbox o LEFT JOIN subscribers s ON s.id = o.subscriber_id"
                                " WHERE o.due_at<=? AND o.lease_until<=? AND o.gave_up_at=0"
                                " ORDER BY o.id LIMIT ?", (t, t, limit)).fetchall()
            for oid, sid, kind, nonce in rows:
                conn.execute("UPDATE signup_outbox SET lease_until=? WHERE id=?", (t + lease, oid))
                sub = self.store.get(sid)
                wanted = sub is not None and (self.confirmable(sid) == "open" if kind == "confirm"
                                              else sub.status == ACTIVE)
                out.append(OutboxMail(oid, kind, sub if wanted else None, nonce))
        return out

    def sent(self, outbox_id: int) -> None:
        """The mail went out: the row goes, and a confirmation counts against its address's limit."""
        t = self.clock.now().timestamp()
        with self.store.transaction() as conn:
            row = conn.execute("SELECT o.kind, s.email FROM signup_outbox o JOIN subscribers s"
                               " ON s.id = o.subscriber_id WHERE o.id=?", (outbox_id,)).fetchone()
            if row is not None and row[0] == "confirm":
                conn.execute("INSERT INTO signup_events(scope, key, at) VALUES('address', ?, ?)",
                             (_address_key(row[1]), t))
            conn.execute("DELETE FROM signup_outbox WHERE id=?", (outbox_id,))

    def drop(self, outbox_id: int) -> None:
        """A mail that no longer applies (confirmed, expired, unsubscribed or gone meanwhile)."""
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM signup_outbox WHERE id=?", (outbox_id,))

    def failed(self, outbox_id: int, error: str = "") -> bool:
        """Deferred, never dropped: retried with growing waits (1, 2, 4 ... minutes, at most
        :data:`RETRY_CAP`) until ``limits.retry_window`` has passed since the first failure; then
        the row stays, marked given up, for ``subscribers list`` and ``status`` to show (a new
        request for the address queues it again). Returns False when it was given up."""
        t = self.clock.now().timestamp()
        error = scrub(error, 200)
        with self.store.transaction() as conn:
            row = conn.execute("SELECT attempts, first_failed_at FROM signup_outbox WHERE id=?",
                               (outbox_id,)).fetchone()
            if row is None:
                return False
            attempts, first = row[0] + 1, row[1] or t
            if t - first >= self.limits.retry_window:
                conn.execute("UPDATE signup_outbox SET attempts=?, first_failed_at=?, last_error=?, gave_up_at=?,"
                             " lease_until=0 WHERE id=?", (attempts, first, error, t, outbox_id))
                return False
            conn.execute("UPDATE signup_outbox SET attempts=?, first_failed_at=?, last_error=?, due_at=?,"
                         " lease_until=0 WHERE id=?",
                         (attempts, first, error, t + min(RETRY_CAP, 60 * 2 ** (attempts - 1)), outbox_id))
        return True

    def due_count(self) -> int:
        t = self.clock.now().timestamp()
        return self.store.conn.execute("SELECT COUNT(*) FROM signup_outbox WHERE due_at<=? AND gave_up_at=0",
                                       (t,)).fetchone()[0]

    def mail_problems(self) -> dict[int, str]:
        """See :func:`newsletter.signup_status.mail_problems`."""
        return signup_status.mail_problems(self.store.conn)

    def mail_counts(self) -> tuple[int, int]:
        """See :func:`newsletter.signup_status.mail_counts`."""
        return signup_status.mail_counts(self.store.conn)

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
            deleted = conn.execute(f"DELETE FROM subscribers WHERE status='{PENDING}' AND "
                                   "signup_requested_at<>''"
                                   " AND signup_requested_at<?", (cutoff,)).rowcount
            conn.execute(f"UPDATE subscribers SET signup_requested_at='' WHERE status<>'{PENDING}'"
                         " AND signup_requested_at<>'' AND signup_requested_at<?", (cutoff,))
            conn.execute(_MOOT_MAIL_SQL)
        return deleted
