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

``headers`` carries only what Brevo's description allows there: "the set of custom headers (not
the standard headers)" (``sendSmtpEmail.headers`` in Brevo's Swagger description), plus its
documented ``idempotencyKey``. So no ``Message-ID``: Brevo makes its own and returns it as
``messageId``, which is what we record and what its webhooks carry. Names go in the ``name`` of
the sender/to objects as UTF-8 text. Size: "The size limit for transactional emails is 20MB,
including attachments and email content" (https://help.brevo.com/hc/en-us/articles/4402811730962).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from newsletter.transports.http import MB, HTTPTransport, Payload, mailbox, mailbox_from_header

if TYPE_CHECKING:
    import requests

    from newsletter.config import Settings
    from newsletter.message import OutgoingMessage

#: Fixed namespace so one per-request key always maps to the same UUID.
IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1c3b0e-8d5a-4f47-9a52-0e2b7c1d4a93")
#: Requests in flight at once, by default.
DEFAULT_CONCURRENCY = 4
#: Standard headers Brevo's ``headers`` object is not for (it makes its own Message-ID).
STANDARD_HEADERS = frozenset({"message-id"})


class BrevoTransport(HTTPTransport):
    name = "brevo"
    default_api_url = "https://api.brevo.com"
    path = "/v3/smtp/email"
    auth_header = ("api-key", "{key}")
    max_request_bytes = max_message_bytes = 20 * MB
    size_limits_doc = "https://help.brevo.com/hc/en-us/articles/4402811730962"

    @classmethod
    def settings_options(cls, settings: "Settings") -> dict[str, Any]:
        return {"concurrency": settings.integer("BREVO_CONCURRENCY", DEFAULT_CONCURRENCY, minimum=1)}

    def message_payload(self, m: "OutgoingMessage", idempotency_key: str | None) -> Payload:
        headers = {k: v for k, v in m.extra_headers.items() if k.lower() not in STANDARD_HEADERS}
        if idempotency_key is not None:
            headers["idempotencyKey"] = str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, idempotency_key))
        html, text = self.bodies(m)  # escaped once per issue, not per reader
        return Payload(json={
            "sender": mailbox(m.from_name, m.from_email),
            "to": [mailbox(m.recipient.name, m.to_email)],
            "subject": m.subject,
            "htmlContent": html,
            "textContent": text,
            "replyTo": mailbox_from_header(m.reply_to),
            "headers": headers,
        })

    def provider_id(self, response: "requests.Response") -> str | None:
        return response.json()["messageId"]
