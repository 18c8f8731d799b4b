"""Mailgun: ``POST /v3/<domain>/messages.mime``, our own MIME bytes, one message a request.

Docs: https://documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/messages
("Send an email in MIME format": multipart form with ``to`` and the MIME as the
``message`` file; HTTP basic auth ``api:<key>``; reply ``{"id", "message"}``).
Sending the MIME keeps our exact headers (List-Unsubscribe, Message-ID, DKIM).
Mailgun has no idempotency key.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from newsletter.transports.http import HTTPTransport, Payload

if TYPE_CHECKING:
    import requests

    from newsletter.config import Settings
    from newsletter.message import OutgoingMessage


class MailgunTransport(HTTPTransport):
    name = "mailgun"
    default_api_url = "https://api.mailgun.net"
    path = "/v3/{self.domain}/messages.mime"

    def __init__(self, *, domain: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.domain = domain

    @classmethod
    def settings_options(cls, settings: "Settings") -> dict[str, Any]:
        return {"domain": settings.require("MAILGUN_DOMAIN", "to send with mailgun (your sending domain)")}

    def auth_headers(self) -> dict[str, str]:
        token = base64.b64encode(f"api:{self.api_key}".encode()).decode("ascii")
        return {"Authorization": f"Basic {token}"}

    def message_payload(self, m: "OutgoingMessage", idempotency_key: str | None) -> Payload:
        return Payload(data={"to": m.to_email}, files={"message": ("message.mime", m.as_bytes(), "message/rfc822")})

    def provider_id(self, response: "requests.Response") -> str | None:
        return response.json()["id"]

    def secrets(self) -> tuple[str, ...]:
        # The basic-auth token is the key in base64; a server echoing it must not leak it either.
        return (*super().secrets(), self.auth_headers()["Authorization"].split()[1]) if self.api_key else ()
