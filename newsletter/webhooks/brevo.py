"""Brevo (ex-Sendinblue): transactional email webhooks.

Authenticity: Brevo does not sign webhooks. Its webhook settings take basic auth in the
URL or an ``auth`` object with a bearer token ("Create a webhook" → ``auth.type``/``auth.token``,
https://developers.brevo.com/reference/create-webhook), so ``NEWSLETTER_WEBHOOK_SECRET`` is
accepted as the bearer token or the basic-auth password (never in the query string,
which access logs keep).

Payload (one JSON object per request; "Transactional webhooks",
https://developers.brevo.com/docs/transactional-webhooks): ``event`` (``hard_bounce``,
``soft_bounce``, ``spam``, ``unsubscribed``, ``invalid_email``, ``blocked``, ``delivered``,
``opened``, ``click``, …), ``email``, ``message-id`` (the ``messageId`` our transport stored
from the send reply), ``ts_event`` (unix seconds), ``reason``. Brevo's ``id`` is the
webhook's id, not the event's, so the dedupe key is message-id + event + address + time.
Note Brevo discards a webhook on most 4xx answers ("Retry mechanism",
https://developers.brevo.com/docs/retry-mechanism).
"""

from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Request

from newsletter.events import Event, Kind
from newsletter.webhooks.base import (
    SharedSecretProvider, address, dedupe_key, event, mapping, text, unix_time,
)

KINDS = {"hard_bounce": Kind.HARD_BOUNCE, "invalid_email": Kind.HARD_BOUNCE, "soft_bounce": Kind.SOFT_BOUNCE,
         "spam": Kind.COMPLAINT, "unsubscribed": Kind.UNSUBSCRIBE}


class BrevoWebhook(SharedSecretProvider):
    name = "brevo"

    def events(self, payload: Any, request: Request) -> list[Event]:
        p = mapping(payload)
        kind = KINDS.get(text(p.get("event")))
        email = address(p.get("email"))
        if kind is None or not email:
            return []
        message_id = text(p.get("message-id"), 300)
        stamp = p.get("ts_event") if p.get("ts_event") is not None else p.get("ts")
        return [event(kind, self.name, dedupe_key(self.name, message_id, kind.value, email, stamp), email,
                      provider_id=message_id or None,
                      occurred_at=unix_time(stamp), detail=text(p.get("reason")))]
