"""Resend: ``POST /emails/batch``, up to 100 messages a request, with idempotency keys.

Docs: https://resend.com/docs/api-reference/emails/send-batch-emails (request shape,
limit of 100), https://resend.com/docs/dashboard/emails/idempotency-keys
(``Idempotency-Key`` header, kept 24 hours, also on ``/emails/batch``) and
https://resend.com/docs/dashboard/emails/batch-validation-modes and the announcement
https://resend.com/changelog/batch-validation-modes ("Set the batch validation header to
``permissive``": valid emails are queued, invalid ones come back in the ``errors`` array as
``{index, message}``, ``data`` lists the created ids). Neither the header nor ``errors`` is in
Resend's OpenAPI description (resend/resend-openapi), which declares only ``data``; the
documentation above is what we rely on, and a reply without ``errors`` reads as all accepted.

Addresses: "To include a friendly name, use the format "Your Name <sender@domain.com>"" (the
send-email reference); the body is JSON, so the name goes as UTF-8 text, quoted when it holds
an RFC 5322 special. Size: "max 40MB per email, after Base64 encoding of the attachments"
(https://resend.com/docs/api-reference/emails/send-email); no limit per batch request is
documented beyond its 100 emails.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from newsletter.transports.http import MB, HTTPTransport, Payload, address, payload_bytes

if TYPE_CHECKING:
    import requests

    from newsletter.message import OutgoingMessage
    from newsletter.transports.base import SendResult


class ResendTransport(HTTPTransport):
    name = "resend"
    per_request = max_batch = 100
    default_api_url = "https://api.resend.com"
    path = "/emails/batch"
    auth_header = ("Authorization", "Bearer {key}")
    idempotency_header = "Idempotency-Key"
    max_message_bytes = 40 * MB
    size_limits_doc = "https://resend.com/docs/api-reference/emails/send-email"

    def build_payload(self, chunk: Sequence["OutgoingMessage"], idempotency_key: str | None) -> Payload:
        return Payload(headers={"x-batch-validation": "permissive"}, json=[self.entry(m) for m in chunk])

    def entry(self, m: "OutgoingMessage") -> dict[str, Any]:
        html, text = self.bodies(m)  # escaped once per issue, not per reader
        return {
            "from": address(m.from_name, m.from_email),
            "to": [address(m.recipient.name, m.to_email)],
            "subject": m.subject,
            "html": html,
            "text": text,
            "reply_to": m.reply_to,
            "headers": m.extra_headers,
        }

    def sizes(self, m: "OutgoingMessage") -> tuple[int, int]:
        return 2, payload_bytes(Payload(json=self.entry(m))) + 2  # "[" "]", and ", " between entries

    def parse_response(self, chunk: Sequence["OutgoingMessage"], response: "requests.Response") -> list["SendResult"]:
        body = response.json()
        errors = {int(e["index"]): str(e.get("message", "")) for e in body.get("errors") or ()}
        ids = iter(body["data"])
        # ``data`` holds only the emails that were created, in request order.
        results = [self.rejected(m, f"resend: {errors[i]}") if i in errors else self.accepted(m, next(ids)["id"])
                   for i, m in enumerate(chunk)]
        if next(ids, None) is not None:
            raise ValueError("more ids than messages")
        return results
