"""The one sequence every provider webhook follows, anymail-style.

``handle`` fixes the order: find the provider (404 when unknown or its secret is not
configured) → read the body, bounded (413) → parse it (400) → verify authenticity
(401/403; SNS may also answer 503 when AWS's certificate cannot be fetched) → let the
provider acknowledge (SNS subscription confirmation) → normalise to
:class:`~newsletter.events.Event`s (every one: a batch is never cut; more than
:data:`MAX_EVENTS` is refused whole, so the provider retries) → check their times
(:mod:`newsletter.webhooks.times`: outside 2000–2100 or a day ahead of us is a 400) →
apply them all in ONE transaction, together with the replay nonce (the same token and
body again is the provider retrying: a 200 that changes nothing), so a refused or failed
request changes nothing. Event types we do not act on are ignored with a 200, so the
provider does not retry them forever. An event without an address is applied to the
reader the provider's message id was sent to.

A provider module supplies only :meth:`Provider.verify` and :meth:`Provider.events`
(and, for SNS, :meth:`Provider.acknowledge`; Mailgun's legacy forms, :meth:`Provider.parse`).
Secrets never appear in a response or in a refusal reason; refusals are logged (a fixed
set of reasons), summarised when repeated (:mod:`newsletter.web.logsummary`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import sqlite3
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any, Callable, ClassVar, TypeVar

from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from newsletter.clock import SYSTEM, Clock
from newsletter.errors import NewsletterError
from newsletter.events import Event, Kind, Outcome, Ready, Stale, apply_event, prepare
from newsletter.webhooks import replay
from newsletter.webhooks.errors import Refused
from newsletter.webhooks.fetching import FetchBudget, fetch_https
from newsletter.webhooks.times import TOLERANCE, check_event_time, check_fresh, is_fresh, iso_time, unix_time

__all__ = ["Refused", "TOLERANCE", "check_fresh", "fetch_https", "iso_time", "unix_time"]  # providers import these from here

if TYPE_CHECKING:
    from newsletter.config import Secret, Settings
    from newsletter.store import SubscriberStore

#: Largest body we read. SendGrid batches events, SES includes headers; 1 MiB is ample.
MAX_BODY_BYTES = 1 << 20
#: Events per request we apply; a bigger batch is refused rather than half-applied.
MAX_EVENTS = 5000

log = logging.getLogger(__name__)
T = TypeVar("T")
WithStore = Callable[[Callable[["SubscriberStore"], T]], T]
Fetcher = Callable[[str], bytes]


@dataclass(frozen=True)
class Verified:
    """What verification proved. ``nonce`` is a one-time value (Mailgun's token) claimed in the
    same transaction as the events, with ``digest`` (the body's hash): the same token with the
    same body is the provider retrying (applied once, answered 200), with another body a replay.
    ``signed_at`` is checked for freshness only when the nonce is new (:func:`_apply`)."""

    nonce: str | None = None
    digest: str = ""
    signed_at: datetime | None = None


@dataclass
class WebhookContext:
    """What a webhook request needs besides itself: settings, the store (through the web
    app's ``with_store``, which serialises writers), a clock and a fetcher (both injected
    in tests), and the cache of parsed keys (SNS certificates, SendGrid's key) shared across requests."""

    settings: "Settings"
    with_store: WithStore
    clock: Clock = SYSTEM
    fetch: Fetcher = fetch_https
    fetches: FetchBudget = field(default_factory=FetchBudget)
    cache: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def cached(self, key: str, make: Callable[[], Any], limit: int = 32) -> Any:
        """``make()`` once per key (certificates, public keys), bounded: the cache is cleared when full."""
        with self.lock:
            if key in self.cache:
                return self.cache[key]
        value = make()
        with self.lock:
            if len(self.cache) >= limit:
                self.cache.clear()
            self.cache[key] = value
        return value


class Provider:
    """One provider's authenticity check and event parsing; everything else is shared."""

    name: ClassVar[str]
    secret_setting: ClassVar[str]
    #: How old a signed timestamp may be: a provider that retries with the original signature needs its retry span.
    tolerance: ClassVar[timedelta] = TOLERANCE

    def __init__(self, settings: "Settings"):
        self.settings = settings

    @property
    def secret(self) -> "Secret | None":
        return self.settings.secret(self.secret_setting)

    def enabled(self) -> bool:
        return self.secret is not None

    def parse(self, body: bytes, request: Request) -> Any:
        return parse_json(body)

    def verify(self, request: Request, body: bytes, payload: Any, ctx: WebhookContext) -> Verified:
        raise NotImplementedError

    def acknowledge(self, payload: Any, ctx: WebhookContext) -> None:
        """A side effect the provider needs once the request is proved authentic (SNS)."""

    def events(self, payload: Any, request: Request) -> list[Event]:
        """The events we act on; anything else is left out (and so ignored with a 200)."""
        raise NotImplementedError


# ---- helpers the providers share ------------------------------------------------------
def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Refused(400, "body is not UTF-8 JSON") from None


def text(value: Any, limit: int = 1000) -> str:
    """A string field of a payload, or '' when it is missing or not a string."""
    return value[:limit] if isinstance(value, str) else ""


def mapping(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def items(value: Any) -> list:
    return value if isinstance(value, list) else []


#: A bare address of RFC 5322 dot-atoms, which ``parseaddr`` gives back unchanged (the usual
#: webhook field): taken as it is, without the header parser's cost on every request.
_BARE_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                           r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def address(value: Any) -> str:
    """The bare address of ``value`` ("Name <a@b>" or "a@b"), '' when there is none."""
    raw = text(value, 400)
    if _BARE_ADDRESS.fullmatch(raw):
        return raw
    addr = parseaddr(raw)[1]
    return addr if "@" in addr else ""


class SharedSecretProvider(Provider):
    """Providers that do not sign (Postmark, Brevo): the request carries ``NEWSLETTER_WEBHOOK_SECRET``."""

    secret_setting = "NEWSLETTER_WEBHOOK_SECRET"

    def verify(self, request: Request, body: bytes, payload: Any, ctx: WebhookContext) -> Verified:
        """Basic auth (the password) or a bearer token: the ways Postmark and Brevo let a
        webhook carry a secret. Never a URL query, which servers and proxies write to their
        access logs. Compared in constant time."""
        secret = str(self.secret).encode("utf-8")
        auth = request.authorization
        given = [auth.password, auth.token] if auth is not None else []
        if not any(g and hmac.compare_digest(g.encode("utf-8"), secret) for g in given):
            raise Refused(401, "missing or wrong webhook secret")
        return Verified()


def dedupe_key(source: str, *parts: Any) -> str:
    """``source:part:…``, hashed when long, so the key is bounded whatever the payload holds."""
    raw = ":".join(str(p) for p in parts)
    if len(raw) > 200:
        raw = hashlib.sha256(raw.encode("utf-8", "replace")).hexdigest()
    return f"{source}:{raw}"


def event(kind: Kind, source: str, key: str, email: str, **fields: Any) -> Event:
    fields["detail"] = text(fields.get("detail"), 300)
    return Event(kind, source, key, email=email, **fields)


# ---- the sequence ------------------------------------------------------------------------
def _read_body(request: Request) -> bytes:
    """At most :data:`MAX_BODY_BYTES`, read in chunks: werkzeug refuses a too-large
    Content-Length up front, but silently cuts a chunked body at the limit, so we count."""
    request.max_content_length = MAX_BODY_BYTES + 1
    chunks: list[bytes] = []
    total = 0
    try:
        while chunk := request.stream.read(64 * 1024):
            total += len(chunk)
            if total > MAX_BODY_BYTES:
                raise Refused(413, "body too large")
            chunks.append(chunk)
    except HTTPException as exc:
        raise Refused(exc.code or 400, "body too large" if exc.code == 413 else "unreadable body") from None
    return b"".join(chunks)


def _apply(store: "SubscriberStore", events: list[Event], verified: Verified, provider: Provider,
           ctx: WebhookContext) -> dict[str, int]:
    """Claim the nonce and apply every event in one transaction: all or nothing. The usual
    event's reads are done first, outside the writer line (:func:`newsletter.events.prepare`);
    should a reader change meanwhile, the transaction is rolled back and done the slow way."""
    if not store.conn.in_transaction:  # ours to roll back and do again
        try:
            return _apply_all(store, events, verified, provider, ctx, [prepare(store, e) for e in events])
        except Stale:
            pass
    return _apply_all(store, events, verified, provider, ctx, [None] * len(events))


def _apply_all(store: "SubscriberStore", events: list[Event], verified: Verified, provider: Provider,
               ctx: WebhookContext, ready: list[Ready | None]) -> dict[str, int]:
    now, policy = ctx.clock.now(), ctx.settings.soft_bounce_policy
    counts = {o.value: 0 for o in Outcome}
    with store.transaction() as conn:
        if verified.nonce is not None:
            seen = replay.claim(conn, verified.nonce, verified.digest, now, keep=provider.tolerance + 2 * TOLERANCE)
            if seen is replay.Seen.OTHER_BODY:
                raise Refused(403, "token reused with a different body")
            stale = verified.signed_at is not None and not is_fresh(verified.signed_at, ctx.clock,
                                                                     past=provider.tolerance)
            if seen is replay.Seen.NEW and stale:
                raise Refused(403, "stale signature timestamp")
        for e, r in zip(events, ready):
            counts[apply_event(store, e, policy=policy, now=now, ready=r).value] += 1
    return counts


def process(provider: Provider, request: Request, ctx: WebhookContext) -> Response:
    """Verify, parse, normalise and apply one request; raises :class:`Refused`."""
    if request.method != "POST":
        raise Refused(405, "POST only")
    body = _read_body(request)
    payload = provider.parse(body, request)
    verified = provider.verify(request, body, payload, ctx)
    if verified.nonce is not None and not verified.digest:
        verified = Verified(verified.nonce, hashlib.sha256(body).hexdigest(), verified.signed_at)
    provider.acknowledge(payload, ctx)
    try:
        events = provider.events(payload, request)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise Refused(400, "payload has an unexpected shape") from None
    if len(events) > MAX_EVENTS:
        raise Refused(413, "too many events in one request")
    now = ctx.clock.now()
    for e in events:
        check_event_time(e.occurred_at, now)
    counts = ctx.with_store(lambda store: _apply(store, events, verified, provider, ctx))
    return Response(json.dumps({"events": len(events), **counts}) + "\n", mimetype="application/json")


def handle(name: str, request: Request, ctx: WebhookContext) -> Response:
    """The WSGI-level entry point: ``POST /webhooks/<name>`` → a response, never a traceback."""
    from newsletter.webhooks import PROVIDERS

    cls = PROVIDERS.get(name)
    provider = cls(ctx.settings) if cls is not None else None
    if provider is None or not provider.enabled():
        return Response("Not found\n", status=404, mimetype="text/plain")
    try:
        response = process(provider, request, ctx)
    except Refused as exc:
        log.warning(f"webhook {provider.name} refused ({exc.status}): {exc.reason}")  # a fixed set; summarised
        response = Response(f"{exc.reason}\n", status=exc.status, mimetype="text/plain")
        if exc.retry_after is not None:
            response.headers["Retry-After"] = str(exc.retry_after)
    except (sqlite3.Error, NewsletterError):
        # Our side (a locked or broken database, a bad setting): ask the provider to retry.
        response = Response("temporarily unavailable\n", status=503, mimetype="text/plain")
    except Exception:
        # A bug of ours: the provider gets one line and retries; the server log gets the traceback.
        log.exception("webhook %s: unexpected error", provider.name)
        response = Response("internal error\n", status=500, mimetype="text/plain")
    response.headers["Cache-Control"] = "no-store"
    return response
