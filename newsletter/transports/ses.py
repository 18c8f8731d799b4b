"""Amazon SES v2: ``SendEmail`` with raw MIME, one message a request, signed with SigV4.

Docs: https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html
(``POST /v2/email/outbound-emails``, ``Content.Raw.Data`` base64 of the MIME,
reply ``{"MessageId"}``; errors: TooManyRequestsException 429, LimitExceededException,
MessageRejected, SendingPausedException ... 400, named in ``x-amzn-ErrorType``).
Signing is botocore's :class:`~botocore.auth.SigV4Auth`, never our own.
SES has no idempotency key. Size: "Using the SES v2 API or SMTP - Maximum message size
(including attachments): 40 MB per message (after base64 encoding)"
(https://docs.aws.amazon.com/ses/latest/dg/quotas.html).
"""

from __future__ import annotations

import base64
import json
import logging
from typing import TYPE_CHECKING, Any

from newsletter.config import Secret
from newsletter.transports.http import MB, HTTPTransport, Payload

if TYPE_CHECKING:
    import requests

    from newsletter.config import Settings
    from newsletter.message import OutgoingMessage

#: Error types that mean "later", though SES answers them with HTTP 400 (sending quota).
TEMPORARY_ERRORS = frozenset({"LimitExceededException", "TooManyRequestsException", "ThrottlingException"})
#: Of those, the ones that mean "too fast" (the maximum send rate), a pacing signal.
RATE_LIMIT_ERRORS = frozenset({"TooManyRequestsException", "ThrottlingException"})


def _hide_signing_debug(record: logging.LogRecord) -> bool:
    # botocore logs the canonical request at DEBUG, with X-Amz-Security-Token in it.
    return not (record.levelno <= logging.DEBUG and str(record.msg).startswith(("CanonicalRequest", "StringToSign")))


logging.getLogger("botocore.auth").addFilter(_hide_signing_debug)


class SESTransport(HTTPTransport):
    name = "ses"
    path = "/v2/email/outbound-emails"
    signs_body = True  # SigV4 hashes the body
    max_message_bytes = 40 * MB
    size_limits_doc = "https://docs.aws.amazon.com/ses/latest/dg/quotas.html"

    def __init__(self, *, access_key_id: str, secret_access_key: str, region: str,
                 session_token: str | None = None, api_url: str | None = None, **kwargs: Any):
        super().__init__(api_url=api_url or f"https://email.{region}.amazonaws.com", **kwargs)
        self.access_key_id = access_key_id
        self.secret_access_key = Secret(secret_access_key)
        self.session_token = Secret(session_token) if session_token else None
        self.region = region

    @classmethod
    def from_settings(cls, settings: "Settings", **options: Any) -> "SESTransport":
        why = "to send with ses"
        kwargs: dict[str, Any] = {
            "access_key_id": settings.require("AWS_ACCESS_KEY_ID", why),
            "secret_access_key": Secret(settings.require("AWS_SECRET_ACCESS_KEY", why)),
            "session_token": settings.secret("AWS_SESSION_TOKEN"),
            "region": settings.require("AWS_REGION", why),
            "api_url": settings.get("SES_API_URL") or None,
        }
        kwargs.update(options)
        return cls(**kwargs)

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.secret_access_key, self.session_token) if s)

    def credentials(self) -> dict[str, str | None]:
        return {"AWS_ACCESS_KEY_ID": self.access_key_id, "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
                "AWS_SESSION_TOKEN": self.session_token}

    def message_payload(self, m: "OutgoingMessage", idempotency_key: str | None) -> Payload:
        return Payload(json={
            "FromEmailAddress": m.from_email,
            "Destination": {"ToAddresses": [m.to_email]},
            "Content": {"Raw": {"Data": base64.b64encode(m.as_bytes()).decode("ascii")}},
        })

    def sizes(self, m: "OutgoingMessage") -> tuple[int, int]:
        # The base64 of the MIME, counted without making it; the small JSON around it, made.
        frame = json.dumps({"FromEmailAddress": m.from_email, "Destination": {"ToAddresses": [m.to_email]},
                            "Content": {"Raw": {"Data": ""}}})
        return 0, 4 * -(-len(m.as_bytes()) // 3) + len(frame)

    def sign(self, request: "requests.PreparedRequest") -> None:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        # Sign only what no proxy rewrites; SigV4 adds host and X-Amz-Date itself.
        signed = AWSRequest(method=request.method, url=request.url, data=request.body,
                            headers={"Content-Type": request.headers["Content-Type"]})
        credentials = Credentials(self.access_key_id, self.secret_access_key, self.session_token)
        SigV4Auth(credentials, "ses", self.region).add_auth(signed)
        request.headers.update(dict(signed.headers.items()))

    @staticmethod
    def error_type(response: "requests.Response", body: Any) -> str:
        """``MessageRejected`` from ``x-amzn-ErrorType: MessageRejected:http://...`` or ``__type``."""
        raw = response.headers.get("x-amzn-ErrorType") or (body.get("__type", "") if isinstance(body, dict) else "")
        return str(raw).split(":")[0].rpartition("#")[2]

    def is_temporary(self, response: "requests.Response", body: Any) -> bool:
        return super().is_temporary(response, body) or self.error_type(response, body) in TEMPORARY_ERRORS

    def is_rate_limited(self, response: "requests.Response", body: Any) -> bool:
        return super().is_rate_limited(response, body) or self.error_type(response, body) in RATE_LIMIT_ERRORS

    def error_code(self, response: "requests.Response", body: Any) -> str | None:
        return self.error_type(response, body) or None

    def provider_id(self, response: "requests.Response") -> str | None:
        return response.json()["MessageId"]
