"""Postmark: ``POST /email/batch``, up to 500 messages a request, on the broadcast stream.

Docs: https://postmarkapp.com/developer/user-guide/send-email-with-api/batch-emails
(request and response shape) and https://postmarkapp.com/developer/api/overview
(auth header, error codes). The batch reply is HTTP 200 even when single messages
fail: each entry carries its own ``ErrorCode``, in the order of the request.

Size limits, from https://postmarkapp.com/support/article/1056-what-are-the-attachment-and-email-size-limits
("Batch endpoint total payload size, including attachments, cannot exceed 50 MB"; "Total message
size, including attachments, can be 10 MB"; "TextBody and HtmlBody can each be up to 5 MB") and the
batch page above ("up to 500 messages per API call, and up to 50 MB payload size"). Addresses:
"The From and To fields are able to accept name, in the format of John Doe <email@example.com>"
(https://postmarkapp.com/developer/user-guide/sending-with-api); the body is JSON, so the name
goes as UTF-8 text, quoted when it holds a comma or another RFC 5322 special.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from newsletter.transports.base import SendResult, Status
from newsletter.transports.http import MB, HTTPTransport, Payload, address, megabytes, payload_bytes

if TYPE_CHECKING:
    import requests

    from newsletter.config import Settings
    from newsletter.message import OutgoingMessage

#: ErrorCodes that say the address itself is bad: 406 inactive recipient (Postmark suppressed it
#: after a hard bounce or spam complaint). Not 300 "Invalid email request": that is a problem
#: with the message (a bad header, a malformed field), and one bad header must not mark a
#: whole batch of readers bounced; it fails permanently for the editor to fix.
BOUNCE_CODES = frozenset({406})
#: ErrorCodes worth retrying: 100 maintenance.
TEMPORARY_CODES = frozenset({100})
#: ErrorCode 429 "Rate limit exceeded": a pacing signal, retried without using up an attempt.
RATE_LIMIT_CODE = 429
#: "TextBody and HtmlBody can each be up to 5 MB each" (support article 1056).
MAX_BODY_BYTES = 5 * MB


class PostmarkTransport(HTTPTransport):
    name = "postmark"
    per_request = max_batch = 500
    default_api_url = "https://api.postmarkapp.com"
    path = "/email/batch"
    api_key_setting = "POSTMARK_SERVER_TOKEN"
    auth_header = ("X-Postmark-Server-Token", "{key}")
    max_request_bytes = 50 * MB
    max_message_bytes = 10 * MB
    size_limits_doc = "https://postmarkapp.com/support/article/1056-what-are-the-attachment-and-email-size-limits"

    def __init__(self, *, message_stream: str = "broadcast", **kwargs: Any):
        super().__init__(**kwargs)
        self.message_stream = message_stream

    @classmethod
    def settings_options(cls, settings: "Settings") -> dict[str, Any]:
        return {"message_stream": settings.get("POSTMARK_MESSAGE_STREAM", "broadcast")}

    def build_payload(self, chunk: Sequence["OutgoingMessage"], idempotency_key: str | None) -> Payload:
        # Postmark has no idempotency key; a retried batch may be sent twice.
        return Payload(json=[self.entry(m) for m in chunk])

    def entry(self, m: "OutgoingMessage") -> dict[str, Any]:
        html, text = self.bodies(m)  # escaped once per issue, not per reader
        return {
            "From": address(m.from_name, m.from_email),
            "To": address(m.recipient.name, m.to_email),
            "Subject": m.subject,
            "HtmlBody": html,
            "TextBody": text,
            "ReplyTo": m.reply_to,
            "Headers": [{"Name": k, "Value": v} for k, v in m.extra_headers.items()],
            "MessageStream": self.message_stream,
        }

    def sizes(self, m: "OutgoingMessage") -> tuple[int, int]:
        return 2, payload_bytes(Payload(json=self.entry(m))) + 2  # "[" "]", and ", " between entries

    def refusal(self, m: "OutgoingMessage") -> "SendResult | None":
        refused = super().refusal(m)
        if refused is not None:
            return refused
        html, text = self.bodies(m)
        for field, body in (("HtmlBody", html), ("TextBody", text)):
            size = sum(map(len, body.parts)) - 2  # the JSON string's quotes are not the body's
            if size > MAX_BODY_BYTES:
                return SendResult(m.to_email, Status.FAILED_PERMANENT, error=(
                    f"not sent: its {field} is {megabytes(size)}, over postmark's limit of "
                    f"{megabytes(MAX_BODY_BYTES)} ({self.size_limits_doc}); make the issue smaller"))
        return None

    def parse_response(self, chunk: Sequence["OutgoingMessage"], response: "requests.Response") -> list["SendResult"]:
        return [self._result(m, entry) for m, entry in zip(chunk, response.json(), strict=True)]

    def _result(self, msg: "OutgoingMessage", entry: dict[str, Any]) -> "SendResult":
        code = int(entry["ErrorCode"])
        if code == 0:
            return self.accepted(msg, entry.get("MessageID"))
        return self.rejected(msg, f"postmark ErrorCode {code}: {entry.get('Message', '')}",
                             temporary=code in TEMPORARY_CODES, bounce=code in BOUNCE_CODES,
                             rate_limited=code == RATE_LIMIT_CODE)

    def error_code(self, response: "requests.Response", body: Any) -> str | None:
        if isinstance(body, dict) and isinstance(body.get("ErrorCode"), int):
            return f"ErrorCode {body['ErrorCode']}"
        return None
