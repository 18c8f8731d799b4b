"""The shared send sequence of every HTTP email API (after django-anymail's base backend).

:class:`HTTPTransport.send` fixes the order once: split the batch into requests
of at most :attr:`~HTTPTransport.per_request` messages, build each payload
(provider hook), POST it with one reused :class:`requests.Session`, then read
the reply into one :class:`SendResult` per message (provider hook).

Failures of a whole request are mapped here, the same way for every provider:

* a read timeout, or a 2xx reply that cannot be read -> ``UNCERTAIN``: the request
  went out and may have been accepted, so the ledger's resend policy decides.
* HTTP 408, 429 and 5xx, connect timeouts and connection errors -> ``FAILED_TEMPORARY``
  for every message of the request, ``Retry-After`` (seconds or HTTP-date) copied
  into ``retry_after``. The transport never sleeps: waiting is the delivery layer's job.
* a refused login (401/403) is the account's problem, not the recipients':
  it raises :class:`~newsletter.errors.TransportError` when nothing of the call
  was sent yet (the delivery layer puts the batch back untouched), and marks
  the rest ``FAILED_TEMPORARY`` otherwise, so earlier successes are not lost.
* any other non-2xx -> ``FAILED_PERMANENT``.
* after a temporary failure or a refused login the rest of the call is not
  attempted: those messages get the same status, marked "not attempted".

A provider module contributes only its name, limits, default URL, auth,
endpoint, payload and response parsing. Secrets are held as
:class:`~newsletter.config.Secret` and scrubbed from every error string.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from email.utils import formataddr, parseaddr, parsedate_to_datetime
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Mapping, Sequence

from newsletter.config import Secret
from newsletter.errors import TransportError
from newsletter.transports.base import SendResult, Status, Transport

if TYPE_CHECKING:
    import requests

    from newsletter.config import Settings
    from newsletter.message import OutgoingMessage

#: (connect, read) seconds: a stalled provider must not hang a whole send.
DEFAULT_TIMEOUT = (10.0, 30.0)
#: Statuses where the same request may succeed later.
TEMPORARY_HTTP = frozenset({408, 429})
#: Statuses that will fail every later request of the call too.
AUTH_HTTP = frozenset({401, 403})
#: The longest provider error text kept in a result.
MAX_ERROR = 300


@dataclass
class Payload:
    """What one HTTP request carries, as the provider built it.

    Exactly one of ``json``, ``data``/``files`` is normally set; ``headers`` are
    added to the auth headers.
    """

    json: Any = None
    data: Mapping[str, Any] | None = None
    files: Mapping[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Failure:
    """A failure of one whole request, before it is copied to each of its messages."""

    status: Status
    error: str
    retry_after: float | None = None
    halt: bool = False
    refused_login: bool = False

    def result(self, msg: "OutgoingMessage", prefix: str = "") -> SendResult:
        return SendResult(msg.to_email, self.status, error=prefix + self.error, retry_after=self.retry_after)


def address(name: str, email: str) -> str:
    """``Name <email>`` for providers that take one string (RFC 2047 for non-ASCII names)."""
    return formataddr((name, email)) if name else email


def mailbox(name: str, email: str) -> dict[str, str]:
    """``{"email", "name"}`` for providers that take objects; no empty name."""
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


def chunked(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


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

    def __init__(self, *, api_key: str | None = None, api_url: str | None = None,
                 timeout: tuple[float, float] | float = DEFAULT_TIMEOUT,
                 session: "requests.Session | None" = None):
        self.api_key = Secret(api_key) if api_key else None
        self.api_url = (api_url or self.default_api_url).rstrip("/")
        self.timeout = timeout
        self._session = session
        self._own_session = session is None

    # ---- construction --------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: "Settings", **options: Any) -> "HTTPTransport":
        setting = cls.api_key_setting or f"{cls.name.upper()}_API_KEY"
        kwargs: dict[str, Any] = {
            "api_key": Secret(settings.require(setting, f"to send with {cls.name}")),
            "api_url": settings.get(f"{cls.name.upper()}_API_URL") or None,
            **cls.settings_options(settings),
        }
        kwargs.update(options)
        return cls(**kwargs)

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
                 bounce: bool = False) -> SendResult:
        status = Status.FAILED_TEMPORARY if temporary else Status.FAILED_PERMANENT
        return SendResult(msg.to_email, status, error=self.scrub(error), bounce=bounce)

    def scrub(self, text: str) -> str:
        for secret in self.secrets():
            if secret:
                text = text.replace(secret, "***")
        return text[:MAX_ERROR]

    # ---- the send sequence -----------------------------------------------------------
    @property
    def session(self) -> "requests.Session":
        if self._session is None:
            import requests

            self._session = requests.Session()
        return self._session

    def send(self, messages: Sequence["OutgoingMessage"], idempotency_key: str | None = None) -> list[SendResult]:
        results: list[SendResult] = []
        halted: Failure | None = None
        for index, chunk in enumerate(chunked(list(messages), self.per_request)):
            if halted is not None:
                results.extend(halted.result(m, "not attempted after an earlier failure: ") for m in chunk)
                continue
            key = None if idempotency_key is None else f"{idempotency_key}-{index}"
            outcome = self._post(chunk, key)
            if isinstance(outcome, Failure) and outcome.refused_login:
                if not results:
                    raise TransportError(f"{outcome.error} (check the API key and its permissions)")
                outcome = Failure(Status.FAILED_TEMPORARY, outcome.error, halt=True)
            if isinstance(outcome, Failure):
                results.extend(outcome.result(m) for m in chunk)
                # What was never attempted is simply not sent yet, even after an uncertain chunk.
                halted = replace(outcome, status=Status.FAILED_TEMPORARY) if outcome.halt else None
            else:
                results.extend(outcome)
        return results

    def _post(self, chunk: Sequence["OutgoingMessage"], key: str | None) -> list[SendResult] | Failure:
        import requests

        payload = self.build_payload(chunk, key)
        headers = {"Accept": "application/json", **self.auth_headers(), **payload.headers}
        if key is not None and self.idempotency_header:
            headers[self.idempotency_header] = key
        request = self.session.prepare_request(requests.Request(
            "POST", self.url, headers=headers, json=payload.json, data=payload.data, files=payload.files))
        self.sign(request)
        try:
            response = self.session.send(request, timeout=self.timeout, allow_redirects=False)
        except requests.ConnectTimeout:
            return Failure(Status.FAILED_TEMPORARY, f"{self.name}: could not connect within the timeout", halt=True)
        except requests.ReadTimeout:
            # The request went out; the provider may have accepted it before the reply was lost.
            return Failure(Status.UNCERTAIN, f"{self.name}: sent, but no answer within the timeout", halt=True)
        except requests.RequestException as exc:
            return Failure(Status.FAILED_TEMPORARY, self.scrub(f"{self.name}: {type(exc).__name__}: {exc}"),
                           halt=True)
        with response:
            if 200 <= response.status_code < 300:
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

    def _failure(self, response: "requests.Response") -> Failure:
        body = _json_or_none(response)
        detail = self.describe_error(response, body) or _short_text(response) or response.reason or ""
        error = self.scrub(f"{self.name}: HTTP {response.status_code}: {detail}".rstrip(": "))
        if self.is_temporary(response, body):
            return Failure(Status.FAILED_TEMPORARY, error, parse_retry_after(response.headers.get("Retry-After")),
                           halt=True)
        refused = response.status_code in AUTH_HTTP
        return Failure(Status.FAILED_PERMANENT, error, halt=refused, refused_login=refused)

    def close(self) -> None:
        if self._session is not None and self._own_session:
            self._session.close()
            self._session = None


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
