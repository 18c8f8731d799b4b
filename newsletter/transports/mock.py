"""A transport for tests: it records every message it is given and answers as told.

As httpx ships ``MockTransport`` and django-anymail a test backend, this is public so that
a publication can test its own scripts around ``newsletter`` without a mail server::

    from newsletter.transports.mock import MockTransport
    from newsletter.transports.base import SendResult, Status

    mock = MockTransport()                                   # accepts everything
    run_delivery(conn, delivery_id, prepared, lambda: mock, options=options)
    assert mock.received.counts()["reader@example.org"] == 1

    def greylist(msg, key, call_no):                         # refuse one reader for now
        if msg.to_email == "slow@example.org":
            return SendResult(msg.to_email, Status.FAILED_TEMPORARY, error="451 greylisted")
        return None                                          # accept the others
    mock = MockTransport(handler=greylist)

A handler may also return ``"drop"``: the call then raises ``ConnectionResetError`` before
any of its messages is accepted, as a connection lost mid-request would.
"""

from __future__ import annotations

import collections
import threading
from typing import TYPE_CHECKING, Callable, Sequence

from newsletter.transports.base import SendResult, Status, Transport

if TYPE_CHECKING:
    from newsletter.message import OutgoingMessage

#: ``handler(message, idempotency_key, call_number)``: None accepts, a SendResult is that
#: outcome (nothing delivered), "drop" loses the whole call.
Handler = Callable[["OutgoingMessage", "str | None", int], "SendResult | str | None"]


class Received:
    """What "the world" received through one or more mock transports; thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[tuple[str, str, str | None]] = []  # (address, Message-ID, idempotency key)
        self.calls: list[tuple[str | None, list[str]]] = []  # (idempotency key, addresses) per send call
        self.messages: dict[str, "OutgoingMessage"] = {}  # the last message accepted for each address

    def counts(self) -> collections.Counter:
        """How many copies each address was sent."""
        with self.lock:
            return collections.Counter(e for e, _, _ in self.received)


class MockTransport(Transport):
    """Accepts what ``handler`` lets through and records it in ``received`` (shareable between
    several instances, as a delivery's worker threads each open their own transport).
    ``before(messages, key)`` runs at each call before anything is accepted (to stop a run,
    or to fail from a test at a chosen moment)."""

    name = "mock"
    real = False

    def __init__(self, received: Received | None = None, *, handler: Handler | None = None,
                 before: Callable[[Sequence["OutgoingMessage"], str | None], None] | None = None):
        self.received = received or Received()
        self.handler = handler
        self.before = before
        self.closed = False

    def send(self, messages: Sequence["OutgoingMessage"], idempotency_key: str | None = None) -> list[SendResult]:
        with self.received.lock:
            call_no = len(self.received.calls)
            self.received.calls.append((idempotency_key, [m.to_email for m in messages]))
        if self.before is not None:
            self.before(messages, idempotency_key)
        outcomes = [self.handler(m, idempotency_key, call_no) if self.handler else None for m in messages]
        if "drop" in outcomes:
            raise ConnectionResetError("connection reset by peer")
        results = []
        for m, out in zip(messages, outcomes):
            if out is None:
                m.as_bytes()  # the per-recipient work a real transport does
                with self.received.lock:
                    self.received.received.append((m.to_email, m.message_id, idempotency_key))
                    self.received.messages[m.to_email] = m
                results.append(SendResult(m.to_email, Status.SENT, provider_id=m.message_id))
            else:
                results.append(out)  # type: ignore[arg-type]
        return results

    def close(self) -> None:
        self.closed = True
