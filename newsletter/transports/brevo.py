"""Brevo: ``POST /v3/smtp/email``, one message a request.

Docs: https://developers.brevo.com/reference/sendtransacemail (``api-key`` header,
body ``sender``/``to``/``subject``/``htmlContent``/``textContent``/``replyTo``/
``headers``; reply ``201 {"messageId"}``) and
https://developers.brevo.com/docs/heterogenous-versions-batch-emails
(idempotency: not an HTTP header but an ``idempotencyKey`` entry in the JSON
``headers`` object, which must be a UUID, kept 30 minutes).

Brevo's ``messageVersions`` could carry several recipients, but a version has
only ``to``/``cc``/``bcc``/``replyTo``/``subject``/``params``/``htmlContent``/
``textContent``, no headers, and each of our messages has its own
List-Unsubscribe and Message-ID: so one request per message.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Sequence

from newsletter.transports.http import HTTPTransport, Payload, mailbox, mailbox_from_header

if TYPE_CHECKING:
    import requests

    from newsletter.message import OutgoingMessage
    from newsletter.transports.base import SendResult

#: Fixed namespace so one per-request key always maps to the same UUID.
IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1c3b0e-8d5a-4f47-9a52-0e2b7c1d4a93")


class BrevoTransport(HTTPTransport):
    name = "brevo"
    per_request = 1
    max_batch = 50
    default_api_url = "https://api.brevo.com"
    path = "/v3/smtp/email"

    def auth_headers(self) -> dict[str, str]:
        return {"api-key": self.api_key or ""}

    def build_payload(self, chunk: Sequence["OutgoingMessage"], idempotency_key: str | None) -> Payload:
        (m,) = chunk
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

    def parse_response(self, chunk: Sequence["OutgoingMessage"], response: "requests.Response") -> list["SendResult"]:
        return [self.accepted(chunk[0], response.json()["messageId"])]
