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

from typing import TYPE_CHECKING

from newsletter.transports.http import HTTPTransport, Payload, mailbox, mailbox_from_header

if TYPE_CHECKING:
    import requests

    from newsletter.message import OutgoingMessage


class SendGridTransport(HTTPTransport):
    name = "sendgrid"
    default_api_url = "https://api.sendgrid.com"
    path = "/v3/mail/send"
    auth_header = ("Authorization", "Bearer {key}")

    def message_payload(self, m: "OutgoingMessage", idempotency_key: str | None) -> Payload:
        return Payload(json={
            "personalizations": [{"to": [mailbox(m.recipient.name, m.to_email)]}],
            "from": mailbox(m.from_name, m.from_email),
            "reply_to": mailbox_from_header(m.reply_to),
            "subject": m.subject,
            # text/plain must come before text/html.
            "content": [{"type": "text/plain", "value": m.text}, {"type": "text/html", "value": m.html}],
            "headers": m.extra_headers,
        })

    def provider_id(self, response: "requests.Response") -> str | None:
        return response.headers.get("X-Message-Id")
