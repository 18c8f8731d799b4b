"""SendGrid v3: ``POST /v3/mail/send``, up to 1,000 readers a request through personalizations.

Docs: https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send
(body shape, Bearer auth, ``202 Accepted`` with an ``X-Message-Id`` header; "text/plain"
content before "text/html"),
https://www.twilio.com/docs/sendgrid/for-developers/sending-email/personalizations
(each personalization has its own ``to``, ``headers`` and ``substitutions``; at most
1,000 personalizations and 1,000 recipients a request, each address once:
https://www.twilio.com/docs/sendgrid/api-reference/mail-send/errors "Personalizations
errors") and https://www.twilio.com/docs/sendgrid/for-developers/sending-email/substitution-tags
(substitutions apply to the body and the subject; string values only; a size limit per
personalization block, 10,000 bytes in the Mail Send reference).

Each personalization keeps the reader's own message: their ``to``, their own
``headers`` (Message-ID, List-Unsubscribe with their token, List-Unsubscribe-Post),
and ``substitutions`` for our placeholders, so the shared body becomes their own
unsubscribe link, address and name (:mod:`newsletter.transports.merge`). A reader
whose values cannot be substituted safely goes alone, with the personalised body.
The reply has one ``X-Message-Id`` for the request; SendGrid's event ids start with
it. SendGrid has no idempotency key.

Limits (https://docs.sendgrid.com/api-reference/mail-send/limitations): "The total size of your
email, including attachments, must be less than 30MB" (one request is one email with its
personalizations), and
"The to.name, cc.name, and bcc.name personalizations cannot include either the ; or ,
characters": such a reader's name is left out (their address alone), so the request is not refused.
Names otherwise go as UTF-8 text in the ``name`` of the address object.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from newsletter.transports.http import MB, HTTPTransport, Payload, mailbox, mailbox_from_header, payload_bytes
from newsletter.transports.merge import ByIdentity, merge_bodies, merge_values

if TYPE_CHECKING:
    import requests

    from newsletter.message import OutgoingMessage
    from newsletter.transports.base import SendResult

#: Personalizations (and recipients) per request (Mail Send errors, "Personalizations errors").
MAX_PERSONALIZATIONS = 1000
#: Substitution bytes per personalization (Mail Send reference: 10,000; some pages say 50,000).
MAX_SUBSTITUTION_BYTES = 10_000
#: Characters a personalization's ``to.name`` cannot hold (Mail Send limitations).
NAME_REFUSES = (",", ";")


def tag(part: str, key: str) -> str:
    """``%%NAME:TEXT%%`` / ``%%NAME:HTML%%``: never equal to, or inside, our own placeholders."""
    return f"%%{key.upper()}:{part.upper()}%%"


class SendGridTransport(HTTPTransport):
    name = "sendgrid"
    per_request = max_batch = MAX_PERSONALIZATIONS
    default_api_url = "https://api.sendgrid.com"
    path = "/v3/mail/send"
    auth_header = ("Authorization", "Bearer {key}")
    max_request_bytes = max_message_bytes = 30 * MB
    size_limits_doc = "https://docs.sendgrid.com/api-reference/mail-send/limitations"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._bodies = merge_bodies(tag)
        # Each reader's substitutions: made once by plan's size check, used again by the
        # payload; holds one batch, for the length of one send.
        self._substitutions: ByIdentity["OutgoingMessage", dict[str, str]] = ByIdentity(
            lambda m: merge_values(m, tag))

    def _merge_values(self, m: "OutgoingMessage") -> dict[str, str]:
        return self._substitutions.get(m)

    def shares_request(self, m: "OutgoingMessage") -> bool:
        if not self._bodies.get(m.prepared).usable:
            return False
        size = sum(len(k.encode()) + len(v.encode()) for k, v in self._merge_values(m).items())
        values = [*m.placeholder_values.values(), *m.extra_headers.values()]
        return size <= MAX_SUBSTITUTION_BYTES and not any("%%" in v for v in values)

    def send(self, messages: Sequence["OutgoingMessage"], idempotency_key: str | None = None) -> list["SendResult"]:
        try:
            return super().send(messages, idempotency_key)
        finally:  # the batch's messages are not kept alive while the engine builds the next one
            self._substitutions.clear()

    def sizes(self, m: "OutgoingMessage") -> tuple[int, int]:
        if not self.shares_request(m):
            return super().sizes(m)
        body = self._bodies.get(m.prepared)
        shared = {**self._common(m), "content": [{"type": "text/plain", "value": body.text},
                                                 {"type": "text/html", "value": body.html}],
                  "personalizations": []}
        return (payload_bytes(Payload(json=shared)),
                payload_bytes(Payload(json=self._personalization(m, merged=True))) + 2)  # ", " between entries

    def build_payload(self, chunk: Sequence["OutgoingMessage"], idempotency_key: str | None) -> Payload:
        first = chunk[0]
        if len(chunk) == 1 and not self.shares_request(first):
            return self.message_payload(first, idempotency_key)
        body = self._bodies.get(first.prepared)
        return Payload(json={
            "personalizations": [self._personalization(m, merged=True) for m in chunk],
            **self._common(first),
            # text/plain must come before text/html.
            "content": [{"type": "text/plain", "value": body.text}, {"type": "text/html", "value": body.html}],
        })

    def message_payload(self, m: "OutgoingMessage", idempotency_key: str | None) -> Payload:
        """One reader alone, their body personalised here (a value that could not be substituted)."""
        html, text = self.bodies(m)
        return Payload(json={
            "personalizations": [self._personalization(m, merged=False)],
            **self._common(m),
            "content": [{"type": "text/plain", "value": text}, {"type": "text/html", "value": html}],
        })

    def _personalization(self, m: "OutgoingMessage", *, merged: bool) -> dict[str, Any]:
        name = "" if any(c in m.recipient.name for c in NAME_REFUSES) else m.recipient.name
        out: dict[str, Any] = {"to": [mailbox(name, m.to_email)], "headers": m.extra_headers}
        if merged:
            out["substitutions"] = self._merge_values(m)
        return out

    @staticmethod
    def _common(m: "OutgoingMessage") -> dict[str, Any]:
        return {"from": mailbox(m.from_name, m.from_email), "reply_to": mailbox_from_header(m.reply_to),
                "subject": m.subject}

    def parse_response(self, chunk: Sequence["OutgoingMessage"], response: "requests.Response") -> list["SendResult"]:
        message_id = response.headers.get("X-Message-Id")
        return [self.accepted(m, message_id) for m in chunk]
