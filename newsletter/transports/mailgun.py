"""Mailgun: batch sending, ``POST /v3/<domain>/messages``, up to 1,000 readers a request.

Docs: https://documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/messages
("Send an email": form fields ``from``, ``to`` (repeated), ``subject``, ``text``, ``html``,
``h:<Header>`` for custom headers, ``recipient-variables``; HTTP basic auth ``api:<key>``;
reply ``{"id", "message": "Queued. Thank you."}``) and
https://documentation.mailgun.com/docs/mailgun/user-manual/sending-messages/batch-sending
("Batch Sending": up to 1,000 ``to`` addresses a request; with ``recipient-variables``
each reader gets a message of their own, ``%recipient.<key>%`` replaced by their values).
Recipient variables also work in header values (django-anymail sends per-recipient
headers, such as List-Unsubscribe, as ``h:<Header>: %recipient.<key>%``), so each reader
keeps their own Message-ID and List-Unsubscribe link, and their own body
(:mod:`newsletter.transports.merge`).

A reader whose values cannot be substituted safely is sent alone through
``/messages.mime`` ("Send an email in MIME format": ``to`` plus our own MIME bytes as the
``message`` file), which keeps our exact message, DKIM signature included. Batch messages
are signed by Mailgun's own DKIM for the domain. Mailgun has no idempotency key.

Both requests are ``multipart/form-data``, the only request body Mailgun's OpenAPI description
declares for ``/v3/{domain_name}/messages`` and ``.../messages.mime`` (mailgun/mailgun-mcp-server,
``src/openapi.yaml``). "The maximum message size Mailgun supports is 25MB"
(https://documentation.mailgun.com/docs/mailgun/user-manual/sending-messages/send-http): a batch
request, one message to many, is kept under it too. ``to`` "Supports friendly name format", so the
name goes as UTF-8 text, quoted when it holds an RFC 5322 special. The MIME message is a file part
of type ``application/octet-stream``, as Mailgun's own example (``curl -F message=@message.mime``)
sends it and as OpenAPI defaults a ``format: binary`` part.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any, Sequence

from newsletter.transports.http import MB, HTTPTransport, Payload, address, form_part_bytes
from newsletter.transports.merge import merge_bodies, merge_values

if TYPE_CHECKING:
    import requests

    from newsletter.config import Settings
    from newsletter.message import OutgoingMessage
    from newsletter.transports.base import SendResult

#: Recipients per batch request ("Batch Sending").
MAX_RECIPIENTS = 1000
_PREFIX = "%recipient."


def tag(part: str, key: str) -> str:
    """``%recipient.text_name%``: the reader's value for placeholder ``key`` in ``part``."""
    return f"{_PREFIX}{variable(part, key)}%"


def variable(part: str, key: str) -> str:
    """The recipient-variable name of placeholder ``key`` in ``part`` (the tag without ``%recipient.``)."""
    return f"{part}_{key}"


class MailgunTransport(HTTPTransport):
    name = "mailgun"
    per_request = max_batch = MAX_RECIPIENTS
    default_api_url = "https://api.mailgun.net"
    path = "/v3/{self.domain}/messages"
    max_request_bytes = max_message_bytes = 25 * MB
    size_limits_doc = "https://documentation.mailgun.com/docs/mailgun/user-manual/sending-messages/send-http"

    def __init__(self, *, domain: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.domain = domain
        self._bodies = merge_bodies(tag)

    @classmethod
    def settings_options(cls, settings: "Settings") -> dict[str, Any]:
        return {"domain": settings.require("MAILGUN_DOMAIN", "to send with mailgun (your sending domain)")}

    def auth_headers(self) -> dict[str, str]:
        token = base64.b64encode(f"api:{self.api_key}".encode()).decode("ascii")
        return {"Authorization": f"Basic {token}"}

    # ---- which readers share a request -------------------------------------------------
    def shares_request(self, m: "OutgoingMessage") -> bool:
        # recipient-variables are keyed by address: an address in mixed case could fail to match
        # Mailgun's own spelling of it and leave tags unfilled, so such a reader goes alone.
        values = [*m.placeholder_values.values(), *m.extra_headers.values()]
        return (self._bodies.get(m.prepared).usable and m.to_email == m.to_email.lower()
                and not any(_PREFIX in v for v in values))

    def _alone(self, chunk: Sequence["OutgoingMessage"]) -> bool:
        return len(chunk) == 1 and not self.shares_request(chunk[0])

    def endpoint(self, chunk: Sequence["OutgoingMessage"]) -> str:
        return self.url + ".mime" if self._alone(chunk) else self.url

    def sizes(self, m: "OutgoingMessage") -> tuple[int, int]:
        if not self.shares_request(m):
            return super().sizes(m)
        # An upper bound: each header as its own h: part, and again among the reader's variables.
        shared = sum(form_part_bytes(k, v) for k, v in self._shared_fields(m))
        shared += sum(form_part_bytes(f"h:{k}", v) for k, v in m.extra_headers.items())
        shared += form_part_bytes("recipient-variables", "{}")
        own = form_part_bytes("to", address(m.recipient.name, m.to_email))
        own += len(json.dumps({m.to_email: {**merge_values(m, variable), **m.extra_headers}},
                              ensure_ascii=False).encode("utf-8"))
        return shared, own

    # ---- payloads -------------------------------------------------------------------
    def build_payload(self, chunk: Sequence["OutgoingMessage"], idempotency_key: str | None) -> Payload:
        first = chunk[0]
        if self._alone(chunk):
            return Payload(files=[("to", (None, first.to_email)),
                                  ("message", ("message.mime", first.as_bytes(), "application/octet-stream"))])
        fields = self._shared_fields(first)
        fields[1:1] = [("to", address(m.recipient.name, m.to_email)) for m in chunk]
        variables: dict[str, dict[str, str]] = {m.to_email: merge_values(m, variable) for m in chunk}
        for index, name in enumerate(first.extra_headers):
            values = [m.extra_headers.get(name, "") for m in chunk]
            if len(set(values)) == 1:  # the same for every reader (List-Id, List-Unsubscribe-Post)
                fields.append((f"h:{name}", values[0]))
                continue
            key = f"header_{index}"  # each reader's own (Message-ID, List-Unsubscribe)
            fields.append((f"h:{name}", f"{_PREFIX}{key}%"))
            for m, value in zip(chunk, values):
                variables[m.to_email][key] = value
        fields.append(("recipient-variables", json.dumps(variables, ensure_ascii=False)))
        return Payload(files=[(name, (None, value.encode("utf-8"))) for name, value in fields])

    def _shared_fields(self, m: "OutgoingMessage") -> list[tuple[str, str]]:
        """The form fields every reader of ``m``'s batch shares (headers come per batch)."""
        body = self._bodies.get(m.prepared)
        return [("from", address(m.from_name, m.from_email)), ("subject", m.subject), ("text", body.text),
                ("html", body.html), ("h:Reply-To", m.reply_to)]

    def parse_response(self, chunk: Sequence["OutgoingMessage"], response: "requests.Response") -> list["SendResult"]:
        message_id = response.json()["id"]
        return [self.accepted(m, message_id) for m in chunk]

    def secrets(self) -> tuple[str, ...]:
        # The basic-auth token is the key in base64; a server echoing it must not leak it either.
        return (*super().secrets(), self.auth_headers()["Authorization"].split()[1]) if self.api_key else ()
