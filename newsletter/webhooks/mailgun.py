"""Mailgun: webhooks signed with the HTTP webhook signing key.

Authenticity ("Securing Webhooks",
https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks):
the JSON body carries ``signature: {timestamp, token, signature}``; ``signature`` is the
hex HMAC-SHA256 of ``timestamp + token`` under ``MAILGUN_WEBHOOK_SIGNING_KEY``. Mailgun
recommends refusing stale timestamps and tokens seen before: we refuse timestamps more than
five minutes from our clock, and remember tokens in SQLite (:mod:`newsletter.webhooks.replay`).

Payload ("Webhooks → event-data", https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhooks
and "Events", https://documentation.mailgun.com/docs/mailgun/user-manual/events/events):
``event-data`` with ``event`` (``failed`` with ``severity`` ``permanent``/``temporary``,
``complained``, ``unsubscribed``, ``delivered``, ``opened``, …), ``recipient``, ``id`` (unique
per event), ``timestamp``, ``message.headers.message-id`` (the id of the send reply, which
our transport stored with angle brackets), ``delivery-status.description``/``message``.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from werkzeug.wrappers import Request

from newsletter.events import Event, Kind
from newsletter.webhooks.base import (
    Provider, Refused, Verified, WebhookContext, address, check_fresh, dedupe_key, event, mapping, text, unix_time,
)

SIMPLE = {"complained": Kind.COMPLAINT, "unsubscribed": Kind.UNSUBSCRIBE}


class MailgunWebhook(Provider):
    name = "mailgun"
    secret_setting = "MAILGUN_WEBHOOK_SIGNING_KEY"

    def verify(self, request: Request, body: bytes, payload: Any, ctx: WebhookContext) -> Verified:
        sig = mapping(mapping(payload).get("signature"))
        stamp = sig.get("timestamp")  # documented as an int, shown as a string in the examples: take both
        timestamp = str(stamp) if type(stamp) is int else text(stamp, 20)
        token, given = text(sig.get("token"), 200), text(sig.get("signature"))
        if not timestamp or not token or not given:
            raise Refused(401, "missing signature")
        expected = hmac.new(str(self.secret).encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), given.lower().encode()):
            raise Refused(401, "bad signature")
        check_fresh(timestamp, ctx)
        return Verified(nonce=f"{self.name}:{token}")

    def events(self, payload: Any, request: Request) -> list[Event]:
        data = mapping(mapping(payload).get("event-data"))
        name = text(data.get("event"))
        if name == "failed":
            kind = Kind.HARD_BOUNCE if text(data.get("severity")) == "permanent" else Kind.SOFT_BOUNCE
        else:
            kind = SIMPLE.get(name)
        email = address(data.get("recipient"))
        if kind is None or not email:
            return []
        mid = text(mapping(mapping(data.get("message")).get("headers")).get("message-id"), 300).strip("<>")
        status = mapping(data.get("delivery-status"))
        ident = text(data.get("id"), 200) or f"{name}:{email}:{data.get('timestamp')}:{mid}"
        return [event(kind, self.name, dedupe_key(self.name, ident), email,
                      provider_id=f"<{mid}>" if mid else None, message_id=f"<{mid}>" if mid else None,
                      occurred_at=unix_time(data.get("timestamp")),
                      detail=text(status.get("description")) or text(status.get("message")) or text(data.get("reason")))]
