"""The shared send sequence of every HTTP email API (after django-anymail's base backend).

:class:`HTTPTransport.send` fixes the order once: screen each message (one that cannot
be built, or is over the provider's documented size limit, fails alone, for good, with
the reason), split the rest into requests of at most :attr:`~HTTPTransport.per_request`
messages and :attr:`~HTTPTransport.max_request_bytes` bytes, build each payload
(provider hook), POST it with one reused :class:`requests.Session`, then read
the reply into one :class:`SendResult` per message (provider hook).

A provider's refusal of a whole request is kept as a :class:`ProviderError`: HTTP status,
the provider's error code, and its message with every token-like run masked (a provider may
echo the API key encoded), bounded; never the raw reply.

Failures of a whole request are mapped here, the same way for every provider:

* a read timeout, or a 2xx reply that cannot be read -> ``UNCERTAIN``: the request
  went out and may have been accepted, so the ledger's resend policy decides.
* a connection that fails after the whole body was handed to the socket -> ``UNCERTAIN``
  too; one that fails before (refused, connect timeout, reset while sending) ->
  ``FAILED_TEMPORARY``: nobody was contacted.
* HTTP 429 (a provider's rate limit) is a pacing signal: the shared
  :class:`~newsletter.transports.ratelimit.RateLimiter` pauses for ``Retry-After``
  (bounded), slows down, and the same request goes again, a few times; only a limit
  that persists (or asks for a longer wait) is reported, as ``FAILED_TEMPORARY`` with
  ``rate_limited=True`` so the engine defers it without counting an attempt.
* HTTP 408 and 5xx -> ``FAILED_TEMPORARY`` for every message of the request,
  ``Retry-After`` (seconds or HTTP-date) copied into ``retry_after``; waiting for
  those is the delivery engine's job.
* a refused login (401/403) is the account's problem, not the recipients':
  it raises :class:`~newsletter.errors.TransportError` when nothing of the call
  was sent yet (the delivery layer puts the batch back untouched), and marks
  the rest ``FAILED_TEMPORARY`` otherwise, so earlier successes are not lost.
* any other non-2xx -> ``FAILED_PERMANENT``.
* after a temporary failure or a refused login the rest of the call is not
  attempted: those messages get the same status, marked "not attempted".

Requests of one ``send`` go out one after another, or ``concurrency`` at a time
(Brevo: one request per message) through a bounded thread pool, always within
the limiter's rate. A provider module contributes only its name, limits, default
URL, auth, endpoint, payload, sizes and response parsing; it is found by its module's
name (:mod:`newsletter.transports`). Secrets are held as :class:`~newsletter.config.Secret`
and scrubbed from every error string.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import lru_cache
from email.headerregistry import Address
from email.utils import parseaddr, parsedate_to_datetime
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

from newsletter.clock import SYSTEM, Clock
from newsletter.config import Secret
from newsletter.errors import ConfigError, HeaderInjectionError, InputError, TransportError, mask_tokens
from newsletter.errors import scrub as scrub_text
from newsletter.message import MAX_NAME
from newsletter.patterns import compiled, has_control_chars
from newsletter.transports.base import (UNBUILDABLE, SameAnswerRun, SendResult, Status, Transport, check_credential,
                                        unbuildable)
from newsletter.transports.merge import ByIdentity, merge_runs
from newsletter.transports.ratelimit import RETRIES, RateLimiter, shared_limiter

if TYPE_CHECKING:
    import requests

    from newsletter.config import Settings
    from newsletter.message import OutgoingMessage

#: (connect, read) seconds: a stalled provider must not hang a whole send.
DEFAULT_TIMEOUT = (10.0, 30.0)
#: Statuses where the same request may succeed later.
TEMPORARY_HTTP = frozenset({408, 429})
#: The status of a rate-limit answer (RFC 6585 4).
RATE_LIMITED_HTTP = 429
#: Statuses that will fail every later request of the call too.
AUTH_HTTP = frozenset({401, 403})
#: The longest provider error text kept in a result.
MAX_ERROR = 300
#: The largest reply read (a batch reply of 1,000 ids is a few tens of KB).
MAX_REPLY = 4 << 20
#: Providers state their size limits in megabytes; read as the smaller, decimal unit.
MB = 1000 * 1000
#: An upper bound of one multipart/form-data part's framing: boundary line, Content-Disposition
#: (with a filename), Content-Type and the blank lines.
PART_OVERHEAD = 200
#: The batch number at the end of the engine's keys (``nl-<nonce>-<delivery>-<batch>``).
_BATCH_SUFFIX = re.compile(r"-\d+$")


@dataclass
class Payload:
    """What one HTTP request carries, as the provider built it.

    Exactly one of ``json``, ``data``/``files`` is normally set; ``headers`` are
    added to the auth headers.
    """

    json: Any = None  # may hold RawJSON values: text already JSON-encoded, spliced in as it is
    data: Any = None  # a mapping, or (name, value) pairs when a field repeats
    files: Any = None  # multipart/form-data parts as requests takes them: (name, (filename, value[, type])) pairs
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Failure:
    """A failure of one whole request, before it is copied to each of its messages."""

    status: Status
    error: str
    retry_after: float | None = None
    halt: bool = False
    refused_login: bool = False
    rate_limited: bool = False

    def result(self, msg: "OutgoingMessage", prefix: str = "", attempted: bool = True) -> SendResult:
        return SendResult(msg.to_email, self.status, error=prefix + self.error, retry_after=self.retry_after,
                          rate_limited=self.rate_limited, attempted=attempted)


@dataclass(frozen=True)
class ProviderError:
    """What is kept of a provider's refusal of a whole request: a bounded, classified record (HTTP
    status, the provider's own error code, its message with every token-like run masked), never
    the raw reply, which may echo a credential in a form no literal scrub recognises."""

    provider: str
    status: int
    code: str | None
    message: str

    def __str__(self) -> str:
        return ": ".join(p for p in (self.provider, f"HTTP {self.status}", self.code, self.message) if p)[:MAX_ERROR]


#: A provider error code worth keeping: a short identifier of letters (``validation_error``,
#: ``MessageRejected``), or a number (``ErrorCode 300``). Digits only apart from letters, so no key,
#: hex or base64 fits; anything else is not a code and is dropped.
_ERROR_CODE = r"[A-Za-z][A-Za-z_.-]{0,39}( [0-9]{1,6})?|[0-9]{1,6}"


class RawJSON:
    """A value already encoded as JSON text, as pieces of ASCII bytes (e.g.
    ``OutgoingMessage.html_json``, escaped once per issue): :func:`json_body` puts it
    in the request as it is."""

    __slots__ = ("parts",)

    def __init__(self, parts: list[bytes]):
        self.parts = parts


def json_pieces(value: Any) -> list[bytes]:
    """``value`` as a JSON request body in pieces, with every :class:`RawJSON` spliced in verbatim.

    Only the small skeleton (addresses, headers) is encoded here, by the C encoder:
    it hands each RawJSON to ``default``, which leaves a marker carrying a random
    nonce (so no value from outside can forge one); the body is then one join of the
    skeleton's pieces and the pre-encoded ones, made by :class:`_TrackedBody` block by block
    while sending. ASCII throughout, as ``json.dumps`` writes.
    """
    raws: list[RawJSON] = []
    nonce = os.urandom(8).hex()

    def default(obj: Any) -> str:
        if not isinstance(obj, RawJSON):
            raise TypeError(f"{type(obj).__name__} is not JSON serializable")
        raws.append(obj)
        return f"\x00{nonce}:{len(raws) - 1}\x00"

    skeleton = json.dumps(value, default=default, allow_nan=False)
    pieces: list[bytes] = []
    for i, part in enumerate(re.split(rf'"\\u0000{nonce}:(\d+)\\u0000"', skeleton)):  # text, index, ...
        if i % 2:
            pieces.extend(raws[int(part)].parts)
        else:
            pieces.append(part.encode("ascii"))
    return pieces


def json_body(value: Any) -> bytes:
    """The joined :func:`json_pieces`: what the provider receives."""
    return b"".join(json_pieces(value))


def json_bytes(value: Any) -> int:
    """``len(json_body(value))``, counted without making it: each RawJSON is measured, not copied."""
    raws: list[RawJSON] = []

    def default(obj: Any) -> str:
        if not isinstance(obj, RawJSON):
            raise TypeError(f"{type(obj).__name__} is not JSON serializable")
        raws.append(obj)
        return ""

    skeleton = json.dumps(value, default=default, allow_nan=False)
    return len(skeleton) - 2 * len(raws) + sum(len(part) for raw in raws for part in raw.parts)


def payload_bytes(payload: Payload) -> int:
    """The size of the request body ``payload`` makes (an upper bound for a multipart form)."""
    if payload.json is not None:
        return json_bytes(payload.json)
    parts = list(payload.data.items() if isinstance(payload.data, Mapping) else payload.data or ())
    parts += [(name, value[1]) for name, value in (payload.files or ())]
    return sum(form_part_bytes(name, value) for name, value in parts)


def form_part_bytes(name: str, value: str | bytes) -> int:
    """An upper bound of one multipart/form-data part's size."""
    size = len(value) if isinstance(value, bytes) else len(value.encode("utf-8"))
    return PART_OVERHEAD + len(name.encode("utf-8")) + size


def megabytes(size: int) -> str:
    return f"{size / MB:.1f} MB"


def display_name(name: str) -> str:
    """A reader's name as a JSON API takes it: UTF-8 text (JSON carries Unicode, so never RFC 2047
    encoded-words), cut where the To header cuts it. A control character is refused: the
    message fails alone (:data:`~newsletter.transports.base.UNBUILDABLE`)."""
    if has_control_chars(name):
        raise HeaderInjectionError(f"the reader's name contains a control character or line break: {name[:60]!r}")
    return name[:MAX_NAME]


def address(name: str, email: str) -> str:
    """``Name <email>`` for APIs that take one address string (Postmark, Resend, Mailgun): the name
    in UTF-8, in quotes when it holds an RFC 5322 special such as a comma (stdlib's
    :class:`~email.headerregistry.Address` decides), so the provider's parser reads one mailbox."""
    name = display_name(name)
    if not name:
        return email
    if compiled(_PLAIN_PHRASE).fullmatch(name):  # nothing to quote: the common case, without the parser
        return f"{name} <{email}>"
    return _quoted_address(name, email)


#: A display name that RFC 5322 lets stand unquoted: atoms of ASCII atext (and UTF-8 beyond ASCII,
#: RFC 6532) separated by single spaces.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]+"
_PLAIN_PHRASE = rf"{_ATOM}(?: {_ATOM})*"


@lru_cache(maxsize=4096)
def _quoted_address(name: str, email: str) -> str:
    try:
        return str(Address(display_name=name, addr_spec=email))
    except (ValueError, IndexError) as exc:  # the parser refused the address itself
        raise InputError(f"{email!r} cannot be written as an address: {exc}") from None


def mailbox(name: str, email: str) -> dict[str, str]:
    """``{"email", "name"}`` for providers that take objects (SendGrid, Brevo); no empty name."""
    name = display_name(name)
    return {"email": email, "name": name} if name else {"email": email}


def mailbox_from_header(value: str) -> dict[str, str]:
    """Split a header value like ``Ann <a@example.org>`` into a :func:`mailbox`."""
    name, email = parseaddr(value)
    return mailbox(name, email or value)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class HTTPTransport(Transport):
    """Base class of the HTTP API transports; subclasses fill in the hooks below."""

    name = "http"
    #: Messages per HTTP request: the provider's documented batch limit (1 for one-message APIs).
    per_request: ClassVar[int] = 1
    #: Messages per ``send`` call; one-message APIs loop over them, one request each.
    max_batch = 50
    #: Scheme and host of the public API; ``<NAME>_API_URL`` overrides it.
    default_api_url: ClassVar[str] = ""
    #: Path appended to the API URL (``str.format`` with the instance's attributes).
    path: ClassVar[str] = ""
    #: Setting holding the API key; default ``<NAME>_API_KEY``.
    api_key_setting: ClassVar[str] = ""
    #: (header, value template) carrying the API key, e.g. ``("Authorization", "Bearer {key}")``.
    auth_header: ClassVar[tuple[str, str] | None] = None
    #: HTTP header carrying a per-request idempotency key, if the provider has one.
    idempotency_header: ClassVar[str | None] = None
    #: Whether :meth:`sign` reads the body: then it is joined before signing, not streamed in pieces.
    signs_body: ClassVar[bool] = False
    #: The provider's documented limits, in bytes, on one request's body and on one message
    #: (None: none documented); requests are split to stay within them, a message over them
    #: fails alone, for good. :attr:`size_limits_doc` says where they are documented.
    max_request_bytes: ClassVar[int | None] = None
    max_message_bytes: ClassVar[int | None] = None
    size_limits_doc: ClassVar[str] = ""

    def __init__(self, *, api_key: str | None = None, api_url: str | None = None,
                 timeout: tuple[float, float] | float = DEFAULT_TIMEOUT,
                 session: "requests.Session | None" = None, clock: Clock | None = None,
                 limiter: RateLimiter | None = None, concurrency: int = 1):
        self.api_key = Secret(api_key) if api_key else None
        self.api_url = (api_url or self.default_api_url).rstrip("/")
        self.timeout = timeout
        self._session = session
        self._own_session = session is None
        self.clock = clock or SYSTEM
        # One limiter per provider account in this process (the engine's worker threads share it);
        # a test's own clock gets its own limiter.
        account = hashlib.sha256((api_key or "").encode("utf-8", "replace")).hexdigest()[:16]
        self.limiter = limiter or (RateLimiter(self.clock) if clock is not None
                                   else shared_limiter(f"{self.name} {self.api_url} {account}"))
        if not 1 <= int(concurrency) <= 64:
            raise ConfigError(f"{self.name.upper()}_CONCURRENCY must be between 1 and 64")
        self.concurrency = int(concurrency)
        self._opened = False
        self._same_answer = SameAnswerRun()
        # Per message, for the length of one send (the batch's messages are not kept alive after):
        # its size, measured once by the screen and the plan; its bodies, encoded once for both.
        self._sizes: ByIdentity["OutgoingMessage", tuple[int, int]] = ByIdentity(self.sizes)
        self._json_bodies: ByIdentity["OutgoingMessage", tuple[RawJSON, RawJSON]] = ByIdentity(
            lambda m: (RawJSON(m.html_json), RawJSON(m.text_json)))

    # ---- construction --------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: "Settings", **options: Any) -> "HTTPTransport":
        kwargs: dict[str, Any] = {
            "api_key": Secret(settings.require(cls.key_setting(), f"to send with {cls.name}")),
            "api_url": settings.get(f"{cls.name.upper()}_API_URL") or None,
            **cls.settings_options(settings),
        }
        kwargs.update(options)
        return cls(**kwargs)

    @classmethod
    def key_setting(cls) -> str:
        return cls.api_key_setting or f"{cls.name.upper()}_API_KEY"

    def credentials(self) -> dict[str, str | None]:
        """Each credential by the setting it came from, for :meth:`open` to check."""
        return {self.key_setting(): self.api_key}

    def open(self) -> None:
        """Refuse a credential that would break or leak through the HTTP headers (a stray space,
        a CR from a CRLF ``.env``, a non-Latin-1 character) before anyone is claimed or contacted."""
        for setting, value in self.credentials().items():
            if value:
                check_credential(setting, value)
        self._opened = True

    @classmethod
    def settings_options(cls, settings: "Settings") -> dict[str, Any]:
        """Provider-specific constructor arguments read from settings."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(api_url={self.api_url!r})"

    # ---- provider hooks --------------------------------------------------------------
    def auth_headers(self) -> dict[str, str]:
        """Headers that authenticate a request (never logged or echoed)."""
        if self.auth_header is None or self.api_key is None:
            return {}
        name, template = self.auth_header
        return {name: template.format(key=self.api_key)}

    def endpoint(self, chunk: Sequence["OutgoingMessage"]) -> str:
        """Where ``chunk`` is posted (Mailgun posts a lone MIME message elsewhere than a batch)."""
        return self.url

    def plan(self, messages: Sequence["OutgoingMessage"]) -> list[Sequence["OutgoingMessage"]]:
        """The requests to make, as consecutive runs of ``messages`` (order kept): at most
        :attr:`per_request` messages and :attr:`max_request_bytes` bytes each; a message that
        cannot share a request (:meth:`shares_request`) goes alone."""
        return merge_runs(messages, self.per_request, self.shares_request, self._sizes.get, self.max_request_bytes)

    def shares_request(self, msg: "OutgoingMessage") -> bool:
        """Whether ``msg`` may go in a request with others (server-side merge needs safe values)."""
        return True

    def sizes(self, msg: "OutgoingMessage") -> tuple[int, int]:
        """(bytes of the request part ``msg`` shares with the rest of its request, bytes it adds
        alone). One-message APIs: the whole request is its own; batch APIs override this."""
        return 0, payload_bytes(self.build_payload([msg], None))

    def bodies(self, msg: "OutgoingMessage") -> tuple[RawJSON, RawJSON]:
        """``msg``'s HTML and text as pre-encoded JSON strings, made once per send."""
        return self._json_bodies.get(msg)

    def refusal(self, msg: "OutgoingMessage") -> SendResult | None:
        """The result for a message that no request can carry: one that cannot be built, or one over
        the provider's size limits. It fails alone and for good; the others are sent."""
        try:
            shared, own = self._sizes.get(msg)
        except UNBUILDABLE as exc:
            return unbuildable(msg, exc)
        size = shared + own
        for limit, what in ((self.max_message_bytes, "a message"), (self.max_request_bytes, "a request")):
            if limit is not None and size > limit:
                return SendResult(msg.to_email, Status.FAILED_PERMANENT, error=(
                    f"not sent: the message is {megabytes(size)}, over {self.name}'s limit of "
                    f"{megabytes(limit)} for {what} ({self.size_limits_doc}); make the issue smaller"))
        return None

    def build_payload(self, chunk: Sequence["OutgoingMessage"], idempotency_key: str | None) -> Payload:
        """The request for ``chunk``; batch APIs override this, one-message APIs :meth:`message_payload`."""
        (msg,) = chunk
        return self.message_payload(msg, idempotency_key)

    def message_payload(self, msg: "OutgoingMessage", idempotency_key: str | None) -> Payload:
        raise NotImplementedError

    def parse_response(self, chunk: Sequence["OutgoingMessage"], response: "requests.Response") -> list[SendResult]:
        """Results for a 2xx reply, one per message of ``chunk`` in order; batch APIs override
        this, one-message APIs :meth:`provider_id`."""
        (msg,) = chunk
        return [self.accepted(msg, self.provider_id(response))]

    def provider_id(self, response: "requests.Response") -> str | None:
        """The provider's id for the one message of a 2xx reply."""
        raise NotImplementedError

    def sign(self, request: "requests.PreparedRequest") -> None:
        """Last change to the exact bytes about to be sent (SES signs them here)."""

    def is_temporary(self, response: "requests.Response", body: Any) -> bool:
        return response.status_code in TEMPORARY_HTTP or response.status_code >= 500

    def is_rate_limited(self, response: "requests.Response", body: Any) -> bool:
        """A pacing signal rather than a failure (SES overrides: it says so in an error type)."""
        return response.status_code == RATE_LIMITED_HTTP

    def error_code(self, response: "requests.Response", body: Any) -> str | None:
        """The provider's own code for the error, from a JSON error body (Resend's ``name``,
        Brevo's ``code``); providers with another shape override this."""
        if isinstance(body, dict):
            for key in ("code", "name", "type"):
                if isinstance(body.get(key), (str, int)) and not isinstance(body.get(key), bool):
                    return str(body[key])
        return None

    def describe_error(self, response: "requests.Response", body: Any) -> str | None:
        """The provider's own words from a JSON error body."""
        if isinstance(body, dict):
            for key in ("message", "Message", "error", "detail"):
                if isinstance(body.get(key), str) and body[key]:
                    return body[key]
            errors = body.get("errors")
            if isinstance(errors, list):
                texts = [e.get("message") if isinstance(e, dict) else str(e) for e in errors]
                return "; ".join(t for t in texts if t) or None
        return None

    def secrets(self) -> tuple[str, ...]:
        """Every secret value this transport holds, to scrub from error strings."""
        return (self.api_key,) if self.api_key else ()

    # ---- helpers for hooks -----------------------------------------------------------
    @property
    def url(self) -> str:
        return self.api_url + self.path.format(self=self)

    @staticmethod
    def accepted(msg: "OutgoingMessage", provider_id: Any) -> SendResult:
        return SendResult(msg.to_email, Status.SENT, provider_id=str(provider_id) if provider_id else None)

    def rejected(self, msg: "OutgoingMessage", error: str, *, temporary: bool = False,
                 bounce: bool = False, rate_limited: bool = False) -> SendResult:
        status = Status.FAILED_TEMPORARY if temporary or rate_limited else Status.FAILED_PERMANENT
        return SendResult(msg.to_email, status, error=self.scrub(error), bounce=bounce, rate_limited=rate_limited,
                          retry_after=self.limiter.pause_for(None) if rate_limited else None)

    def scrub(self, text: str) -> str:
        """This transport's own secrets out (it may have been made without settings), then
        :func:`newsletter.errors.scrub` (configured secrets, control characters, one line, bounded),
        then :func:`~newsletter.errors.mask_tokens`: what a provider says may echo a key encoded."""
        for secret in self.secrets():
            if secret:
                text = text.replace(secret, "***")
        return mask_tokens(scrub_text(text, MAX_ERROR))

    def provider_error(self, response: "requests.Response", body: Any) -> ProviderError:
        """The record kept of a refused request (see :class:`ProviderError`)."""
        import re

        code = self.error_code(response, body)
        code = code if code is not None and re.fullmatch(_ERROR_CODE, code) else None
        message = self.describe_error(response, body) or _short_text(response) or response.reason or ""
        return ProviderError(self.name, response.status_code, code or None, self.scrub(message))

    # ---- the send sequence -----------------------------------------------------------
    @property
    def session(self) -> "requests.Session":
        if self._session is None:
            import requests
            from requests.adapters import HTTPAdapter

            self._session = requests.Session()
            # One pooled connection per concurrent request; never a retry behind our back.
            adapter = HTTPAdapter(pool_maxsize=max(10, self.concurrency), max_retries=0)
            self._session.mount("https://", adapter)
            self._session.mount("http://", adapter)
        return self._session

    def send(self, messages: Sequence["OutgoingMessage"], idempotency_key: str | None = None) -> list[SendResult]:
        if not self._opened:
            self.open()
        try:
            refused = {i: r for i, m in enumerate(messages) if (r := self.refusal(m)) is not None}
            sendable = [m for i, m in enumerate(messages) if i not in refused]
            sent = iter(self._send(sendable, idempotency_key) if sendable else ())
            results = [refused[i] if i in refused else next(sent) for i in range(len(messages))]
            for i in range(len(results)):  # one answer for every reader is the sender's (issue too big, From refused)
                self._same_answer.note(results, i)
            return results
        finally:  # the batch's messages are not kept alive while the engine builds the next one
            self._sizes.clear()
            self._json_bodies.clear()

    def _send(self, messages: Sequence["OutgoingMessage"], idempotency_key: str | None) -> list[SendResult]:
        chunks = self.plan(messages)
        outcomes: list[list[SendResult] | Failure | None] = [None] * len(chunks)
        halted = threading.Event()

        def post(index: int) -> None:
            key = None if idempotency_key is None else self.request_key(idempotency_key, index, chunks[index])
            outcome = outcomes[index] = self._post_paced(chunks[index], key, halted)
            if isinstance(outcome, Failure) and outcome.halt:
                halted.set()

        if self.concurrency > 1 and len(chunks) > 1:
            with ThreadPoolExecutor(min(self.concurrency, len(chunks)), thread_name_prefix=self.name) as pool:
                try:
                    list(pool.map(post, range(len(chunks))))
                except BaseException:  # Ctrl-C: finish what is in flight, start nothing more
                    halted.set()
                    raise
        else:
            for index in range(len(chunks)):
                post(index)
        return self._collect(chunks, outcomes)

    def request_key(self, idempotency_key: str, index: int, chunk: Sequence["OutgoingMessage"]) -> str:
        """The key of one request. A batch request: the call's key plus its index, stable across
        retries of the same batch. A one-message request: the reader's own key within the delivery
        (the call's key without its trailing ``-<batch>``, plus the address), so a reader retried
        in another batch (the engine regroups partial retries) is still recognised as sent."""
        if self.per_request > 1 or len(chunk) != 1:
            return f"{idempotency_key}-{index}"
        delivery = _BATCH_SUFFIX.sub("", idempotency_key)
        return f"{delivery}-{chunk[0].to_email.lower()}"

    def _collect(self, chunks: list[Sequence["OutgoingMessage"]],
                 outcomes: list[list[SendResult] | Failure | None]) -> list[SendResult]:
        """One result per message, in input order, from each request's outcome."""
        failures = [o for o in outcomes if isinstance(o, Failure)]
        halt = next((f for f in failures if f.halt), None)
        if halt is not None and halt.refused_login:
            if all(o is None or (isinstance(o, Failure) and o.refused_login) for o in outcomes):
                raise TransportError(f"{halt.error} (check the API key and its permissions)")
            halt = replace(halt, status=Status.FAILED_TEMPORARY, refused_login=False)
        results: list[SendResult] = []
        for chunk, outcome in zip(chunks, outcomes):
            if outcome is None:
                assert halt is not None
                # What was never attempted is simply not sent yet, even after an uncertain request.
                results.extend(replace(halt, status=Status.FAILED_TEMPORARY).result(
                    m, "not attempted after an earlier failure: ", attempted=False) for m in chunk)
            elif isinstance(outcome, Failure):
                if outcome.refused_login:
                    outcome = replace(outcome, status=Status.FAILED_TEMPORARY)
                results.extend(outcome.result(m) for m in chunk)
            else:
                results.extend(outcome)
        return results

    def _post_paced(self, chunk: Sequence["OutgoingMessage"], key: str | None,
                    halted: threading.Event) -> list[SendResult] | Failure | None:
        """One request within the adapted rate; a rate-limit answer is waited out and the same
        request (same idempotency key) sent again, up to :data:`RETRIES` times. None: not sent,
        because another request of the call failed while this one waited its turn."""
        for turn in range(RETRIES + 1):
            if halted.is_set():
                return None
            granted = self.limiter.acquire()
            if halted.is_set():
                return None
            outcome = self._post(chunk, key)
            if isinstance(outcome, Failure) and outcome.rate_limited:
                pause = self.limiter.limited(outcome.retry_after, granted)
                if turn == RETRIES or (outcome.retry_after or 0.0) > self.limiter.max_pause:
                    return replace(outcome, retry_after=max(pause, outcome.retry_after or 0.0))
                continue
            if isinstance(outcome, list) and any(r.rate_limited for r in outcome):
                self.limiter.limited(max((r.retry_after or 0.0) for r in outcome) or None, granted)
            elif not isinstance(outcome, Failure):
                self.limiter.accepted(granted)
            return outcome
        raise AssertionError("unreachable")

    def _post(self, chunk: Sequence["OutgoingMessage"], key: str | None) -> list[SendResult] | Failure:
        import requests

        try:
            request = self._request(chunk, key)
        except Exception as exc:  # noqa: BLE001  nothing left us; never lose the other requests' results
            if len(chunk) == 1 and isinstance(exc, UNBUILDABLE):  # this reader's address alone is the problem
                return [unbuildable(chunk[0], exc)]
            return Failure(Status.FAILED_TEMPORARY, self.scrub(f"{self.name}: could not build the request: "
                                                               f"{type(exc).__name__}: {exc}"), halt=True)
        body = _TrackedBody(request.body)
        if request.body is not None:
            request.body = body  # type: ignore[assignment]  # Content-Length is already set
        try:
            response = self.session.send(request, timeout=self.timeout, allow_redirects=False, stream=True)
        except requests.ConnectTimeout:
            return Failure(Status.FAILED_TEMPORARY, f"{self.name}: could not connect within the timeout", halt=True)
        except requests.ReadTimeout:
            # The request went out; the provider may have accepted it before the reply was lost.
            return Failure(Status.UNCERTAIN, f"{self.name}: sent, but no answer within the timeout", halt=True)
        except (requests.RequestException, ValueError) as exc:  # ValueError: InvalidHeader and friends
            error = self.scrub(f"{self.name}: {type(exc).__name__}: {exc}")
            if body.complete:  # every byte of the request went out: it may have been accepted
                return Failure(Status.UNCERTAIN, f"{self.name}: connection lost after the request was sent "
                               f"({error})", halt=True)
            return Failure(Status.FAILED_TEMPORARY, error, halt=True)
        with response:
            complete = _read_bounded(response)
            if 200 <= response.status_code < 300:
                if not complete:
                    return Failure(Status.UNCERTAIN,  # accepted (2xx), but the reply was cut or too big
                                   f"{self.name}: unreadable reply to HTTP {response.status_code}")
                try:
                    results = self.parse_response(chunk, response)
                except (ValueError, KeyError, TypeError, IndexError, AttributeError, StopIteration):
                    return Failure(Status.UNCERTAIN,  # accepted (2xx), but we cannot tell which messages
                                   f"{self.name}: unreadable reply to HTTP {response.status_code}")
                if len(results) != len(chunk):
                    return Failure(Status.UNCERTAIN,
                                   f"{self.name}: {len(results)} results for {len(chunk)} messages")
                return results
            return self._failure(response)

    def _request(self, chunk: Sequence["OutgoingMessage"], key: str | None) -> "requests.PreparedRequest":
        import requests

        payload = self.build_payload(chunk, key)
        headers = {"Accept": "application/json", **self.auth_headers(), **payload.headers}
        if key is not None and self.idempotency_header:
            headers[self.idempotency_header] = key
        data, json_value, pieces = payload.data, payload.json, None
        if json_value is not None:  # encoded here, so pre-encoded bodies (RawJSON) are spliced in, not re-escaped
            pieces, json_value = json_pieces(json_value), None
            headers.setdefault("Content-Type", "application/json")
            if self.signs_body:
                data, pieces = b"".join(pieces), None
        request = self.session.prepare_request(requests.Request(
            "POST", self.endpoint(chunk), headers=headers, json=json_value, data=data, files=payload.files))
        if pieces is not None:  # sent block by block (_TrackedBody): a 35 MB batch is never joined whole
            request.body = pieces  # type: ignore[assignment]
            request.headers["Content-Length"] = str(sum(map(len, pieces)))
        self.sign(request)
        return request

    def _failure(self, response: "requests.Response") -> Failure:
        body = _json_or_none(response)
        error = str(self.provider_error(response, body))
        rate_limited = self.is_rate_limited(response, body)
        if rate_limited or self.is_temporary(response, body):
            retry_after = parse_retry_after(response.headers.get("Retry-After"), self.clock.now().timestamp())
            return Failure(Status.FAILED_TEMPORARY, error, retry_after, halt=True, rate_limited=rate_limited)
        refused = response.status_code in AUTH_HTTP
        return Failure(Status.FAILED_PERMANENT, error, halt=refused, refused_login=refused)

    def close(self) -> None:
        if self._session is not None and self._own_session:
            self._session.close()
            self._session = None


_SEND_BLOCK = 1 << 20


class _TrackedBody:
    """A request body that notes when its last byte has been handed to the socket.

    urllib3 reads a file-like body block by block, sending each before reading the
    next, so the empty read that ends the loop happens only after everything was
    sent: a connection lost after that may have delivered the request (uncertain);
    one lost before cannot have (a server never acts on half a request).
    """

    def __init__(self, data: bytes | str | list[bytes] | None):
        if isinstance(data, list):
            self._pieces = data
        else:
            self._pieces = [data.encode() if isinstance(data, str) else (data or b"")]
        self._length = sum(map(len, self._pieces))
        self._index = self._offset = 0  # the next byte: self._pieces[self._index][self._offset]
        self.complete = False

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes | memoryview:
        # Blocks of at least 1 MB, as views where one piece suffices: a 35 MB batch is a few
        # dozen sends of reused buffers, not thousands of 16 KB copies nor one 35 MB join.
        want = self._length if size is None or size < 0 else max(size, _SEND_BLOCK)
        block: list[memoryview] = []
        got = 0
        while got < want and self._index < len(self._pieces):
            piece = self._pieces[self._index]
            view = memoryview(piece)[self._offset:self._offset + want - got]
            block.append(view)
            got += len(view)
            self._offset += len(view)
            if self._offset >= len(piece):
                self._index, self._offset = self._index + 1, 0
        if not got:
            self.complete = True
            return b""
        return block[0] if len(block) == 1 else b"".join(block)


def _read_bounded(response: "requests.Response") -> bool:
    """Read the reply body, at most :data:`MAX_REPLY` bytes: a broken proxy or hostile server
    cannot make us hold an unbounded reply. False when it was cut short or too long."""
    import requests

    data = bytearray()
    complete = True
    try:
        for block in response.iter_content(65536):
            data += block
            if len(data) > MAX_REPLY:
                complete = False
                break
    except (requests.RequestException, OSError, ValueError):
        complete = False
    response._content = bytes(data[:MAX_REPLY])  # what .json() and .text read from now on
    response._content_consumed = True
    return complete


def _json_or_none(response: "requests.Response") -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _short_text(response: "requests.Response") -> str | None:
    """A plain-text error body such as Mailgun's ``Forbidden``; never an HTML page."""
    if response.headers.get("Content-Type", "").startswith("text/plain"):
        text = response.text.strip()
        return text if 0 < len(text) <= MAX_ERROR else None
    return None
