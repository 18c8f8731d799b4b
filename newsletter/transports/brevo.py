"""Brevo: ``POST /v3/smtp/email``, one message a request, ``BREVO_CONCURRENCY`` at a time.

Docs: https://developers.brevo.com/reference/sendtransacemail (``api-key`` header,
body ``sender``/``to``/``subject``/``htmlContent``/``textContent``/``replyTo``/
``headers``; reply ``201 {"messageId"}``) and
https://developers.brevo.com/docs/heterogenous-versions-batch-emails
(idempotency: not an HTTP header but an ``idempotencyKey`` entry in the JSON
``headers`` object, which must be a UUID, kept 30 minutes). Our key for a request is the
reader's own within the delivery (:meth:`HTTPTransport.request_key`), as a UUID.

Brevo's ``messageVersions`` could carry several recipients, but a version has
only ``to``/``cc``/``bcc``/``replyTo``/``subject``/``params``/``htmlContent``/
``textContent``, no headers, and each of our messages has its own
List-Unsubscribe and Message-ID: so one request per message. Those requests go
out concurrently (a bounded thread pool, ``BREVO_CONCURRENCY``, default 4) so the
send is not bound by round trips, always within the shared adaptive rate
(:mod:`newsletter.transports.ratelimit`).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from newsletter.transports.http import HTTPTransport, Payload, mailbox, mailbox_from_header

if TYPE_CHECKING:
    import requests

    from newsletter.config import Settings
    from newsletter.message import OutgoingMessage

#: Fixed namespace so one per-request key always maps to the same UUID.
IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1c3b0e-8d5a-4f47-9a52-0e2b7c1d4a93")
#: Requests in flight at once, by default.
DEFAULT_CONCURRENCY = 4


class BrevoTransport(HTTPTransport):
    name = "brevo"
    default_api_url = "https://api.brevo.com"
    path = "/v3/smtp/email"
    auth_header = ("api-key", "{key}")

    @classmethod
    def settings_options(cls, settings: "Settings") -> dict[str, Any]:
        return {"concurrency": settings.integer("BREVO_CONCURRENCY", DEFAULT_CONCURRENCY, minimum=1)}

    def message_payload(self, m: "OutgoingMessage", idempotency_key: str | None) -> Payload:
        headers = dict(m.extra_headers)
        if idempotency_key is not None:
            headers["idempotencyKey"] = str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, idempotency_key))
        return Payload(json={
            "sender": mailbox(m.from_name, m.from_email),
            "to": [mailbox(m.recipient.name, m.to_email)],
            "subject": m.subject,
            "htmlContent": m.html,
            "textContent": m.text,
            "replyTo": mailbox_from_header(m.reply_to),
            "headers": headers,
        })

    def provider_id(self, response: "requests.Response") -> str | None:
        return response.json()["messageId"]
