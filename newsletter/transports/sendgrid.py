"""SendGrid v3: ``POST /v3/mail/send``, one request per message.

Docs: https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send
(body shape, Bearer auth, ``202 Accepted`` with an ``X-Message-Id`` header) and
https://www.twilio.com/docs/sendgrid/for-developers/sending-email/personalizations.

One request per message, not one personalization per recipient: a
personalization can override headers and subject but not the body, and our
HTML and text are personalised (unsubscribe links), so batching would need
SendGrid's substitution tags instead of our own bytes. SendGrid has no
idempotency key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from newsletter.transports.http import HTTPTransport, Payload, mailbox, mailbox_from_header

if TYPE_CHECKING:
    import requests

    from newsletter.message import OutgoingMessage
    from newsletter.transports.base import SendResult


class SendGridTransport(HTTPTransport):
    name = "sendgrid"
    per_request = 1
    max_batch = 50
    default_api_url = "https://api.sendgrid.com"
    path = "/v3/mail/send"

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def build_payload(self, chunk: Sequence["OutgoingMessage"], idempotency_key: str | None) -> Payload:
        (m,) = chunk
        return Payload(json={
            "personalizations": [{"to": [mailbox(m.recipient.name, m.to_email)]}],
            "from": mailbox(m.from_name, m.from_email),
            "reply_to": mailbox_from_header(m.reply_to),
            "subject": m.subject,
            # text/plain must come before text/html.
            "content": [{"type": "text/plain", "value": m.text}, {"type": "text/html", "value": m.html}],
            "headers": m.extra_headers,
        })

    def parse_response(self, chunk: Sequence["OutgoingMessage"], response: "requests.Response") -> list["SendResult"]:
        return [self.accepted(chunk[0], response.headers.get("X-Message-Id"))]
