"""Resend: ``POST /emails/batch``, up to 100 messages a request, with idempotency keys.

Docs: https://resend.com/docs/api-reference/emails/send-batch-emails (request shape,
limit of 100), https://resend.com/docs/dashboard/emails/idempotency-keys
(``Idempotency-Key`` header, kept 24 hours, also on ``/emails/batch``) and
https://resend.com/docs/dashboard/emails/batch-validation-modes
(``x-batch-validation: permissive``: valid emails are sent, invalid ones come
back in ``errors`` as ``{index, message}``, ``data`` lists the created ids).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from newsletter.transports.http import HTTPTransport, Payload, RawJSON, address

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

    def build_payload(self, chunk: Sequence["OutgoingMessage"], idempotency_key: str | None) -> Payload:
        return Payload(headers={"x-batch-validation": "permissive"}, json=[{
            "from": address(m.from_name, m.from_email),
            "to": [address(m.recipient.name, m.to_email)],
            "subject": m.subject,
            "html": RawJSON(m.html_json),  # escaped once per issue, not per reader
            "text": RawJSON(m.text_json),
            "reply_to": m.reply_to,
            "headers": m.extra_headers,
        } for m in chunk])

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
