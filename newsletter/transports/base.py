"""The transport interface, normalised statuses, and the null transport.

A transport takes a batch of already-personalised messages and answers with one
:class:`SendResult` per message. Providers differ only in how they post a batch
and read the reply; statuses are normalised so the delivery ledger never needs
to know which provider it talks to (after django-anymail).
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from newsletter.errors import ConfigError, InputError
from newsletter.patterns import CONTROL_CHARS, compiled

if TYPE_CHECKING:
    from newsletter.config import Settings
    from newsletter.message import OutgoingMessage



def check_credential(setting: str, value: str) -> None:
    """Refuse a key or password that would break (or leak through) a header or an AUTH line.

    A stray space or the CR of a CRLF ``.env`` is refused rather than stripped: a
    silently changed credential would fail later with a message that may quote it.
    The error names the setting, never the value.
    """
    if value != value.strip():
        raise ConfigError(f"{setting} starts or ends with a space or line break (a CRLF .env?); "
                          "remove it and try again")
    if compiled(CONTROL_CHARS).search(value):
        raise ConfigError(f"{setting} contains a control character or line break; remove it and try again")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ConfigError(f"{setting} contains a character that cannot be sent in an HTTP header "
                          "(only Latin-1 is allowed); check that it was copied correctly") from None


class Status(str, enum.Enum):
    """What became of one message. Only the two failed-* states drive retries and bounces."""

    SENT = "sent"                          # accepted for delivery by the server/provider
    QUEUED = "queued"                      # accepted, will be sent later by the provider
    REJECTED = "rejected"                  # provider refused this recipient (suppressed, invalid)
    FAILED_TEMPORARY = "failed-temporary"  # try again later (SMTP 4xx, HTTP 429/5xx, timeouts)
    FAILED_PERMANENT = "failed-permanent"  # do not retry (SMTP 5xx, HTTP 4xx)
    UNCERTAIN = "uncertain"                # the message went out but the answer was lost: it may
                                           # have been accepted; the ledger's resend policy decides

    @property
    def delivered(self) -> bool:
        return self in (Status.SENT, Status.QUEUED)


@dataclass(frozen=True)
class SendResult:
    """One message's outcome. ``bounce`` marks "no such user" style refusals.

    ``rate_limited`` marks a temporary failure that is a pacing signal (HTTP 429,
    SMTP 421/4.7.x "too many"): the ledger retries it after ``retry_after``
    without counting an attempt against the reader. ``attempted`` is False when the
    message never left because the transport stopped before it (an earlier failure in
    the same call): not an attempt either. ``about_sender`` marks a refusal of the *sender*
    (our HELO name, login, relay permission, reputation), not of this reader: nobody is
    charged, and the delivery engine holds the delivery until the configuration is fixed.
    """

    recipient: str
    status: Status
    provider_id: str | None = None
    error: str | None = None
    retry_after: float | None = None
    bounce: bool = False
    rate_limited: bool = False
    attempted: bool = True
    about_sender: bool = False


#: What building one reader's message raises when their stored address cannot be sent (a line
#: break or a non-ASCII character, from rows written before imports checked addresses).
UNBUILDABLE = (InputError, UnicodeError)


def unbuildable(msg: "OutgoingMessage", exc: Exception) -> SendResult:
    """The result for a reader whose message cannot be built: refused for good, alone, so
    it neither stops the rest of the call nor is retried for the whole retry window."""
    reason = exc.message if isinstance(exc, InputError) else "the address is not ASCII"
    return SendResult(msg.to_email, Status.FAILED_PERMANENT, error=f"not sent: {reason}")


class Transport(ABC):
    """Send batches of prepared messages. Implementations must never raise for a
    per-recipient failure: they report it in the result list, in input order."""

    #: The most messages one ``send`` call hands to the backend at once; larger
    #: batches are split by the transport itself.
    max_batch: int = 100
    #: Name shown to the user in summaries.
    name: str = "transport"
    #: True if this transport talks to the network (a real send needs confirmation).
    real: bool = True

    @classmethod
    def from_settings(cls, settings: "Settings", **options: object) -> "Transport":
        return cls(**options)  # type: ignore[arg-type]

    @abstractmethod
    def send(self, messages: Sequence["OutgoingMessage"], idempotency_key: str | None = None) -> list[SendResult]:
        """Send ``messages``; ``idempotency_key`` is stable across retries of the same batch."""

    def open(self) -> None:
        """Check configuration and local resources (CA file, DKIM key, credentials' shape)
        before the ledger claims any reader. Raises :class:`~newsletter.errors.TransportError`
        or :class:`~newsletter.errors.ConfigError`; nobody has been contacted when it does."""

    def close(self) -> None:
        """Release connections. Safe to call more than once."""

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullTransport(Transport):
    """Accepts everything and keeps nothing: for benchmarks of the layers above."""

    name = "null"
    real = False
    max_batch = 1000

    def send(self, messages: Sequence["OutgoingMessage"], idempotency_key: str | None = None) -> list[SendResult]:
        for m in messages:
            m.as_bytes()  # do the per-recipient work a real transport would
        return [SendResult(m.to_email, Status.SENT, provider_id=m.message_id) for m in messages]
