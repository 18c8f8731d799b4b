"""Brevo (ex-Sendinblue): transactional email webhooks.

Authenticity: Brevo does not sign webhooks. Its webhook settings take basic auth in the
URL or an ``auth`` object with a bearer token ("Create a webhook" → ``auth.type``/``auth.token``,
https://developers.brevo.com/reference/create-webhook), so ``NEWSLETTER_WEBHOOK_SECRET`` is
accepted as the bearer token or the basic-auth password (never in the query string,
which access logs keep).

Payload (one JSON object per request; "Transactional webhooks",
https://developers.brevo.com/docs/transactional-webhooks): ``event``, ``email``,
``message-id`` (the ``messageId`` our transport stored from the send reply), ``ts_epoch``
(milliseconds, UTC; ``ts``/``ts_event`` are seconds in the account's time zone, so they are
only a fallback), ``reason``. Brevo's ``id`` is the webhook's id, not the event's, so the
dedupe key is message-id + event + address + time. Brevo discards a webhook on most 4xx
answers ("Retry mechanism", https://developers.brevo.com/docs/retry-mechanism).

Event names, and where each is used (:data:`KINDS`):

* ``hard_bounce``, ``soft_bounce``, ``invalid_email``, ``spam``, ``unsubscribed`` — the
  transactional webhook payloads (https://developers.brevo.com/docs/transactional-webhooks) and
  marketing webhook payloads (https://developers.brevo.com/docs/marketing-webhooks);
* ``hardBounce``, ``softBounce``, ``invalid``, ``spam``, ``unsubscribed`` — the event names of
  "Create a webhook" (https://developers.brevo.com/reference/create-webhook, ``events`` enum)
  and of Brevo's SDKs generated from it (e.g. brevo-python ``CreateWebhook.events``), which
  some payloads echo;
* ``complaint`` and ``unsubscribe`` — the names django-anymail's Brevo tracking handler maps
  for complaints and unsubscribes (``anymail/webhooks/brevo.py``, ``event_types``, written
  from the transactional webhooks page above).

``blocked`` (Brevo refused to send to an address it already suppresses), ``deferred``,
``delivered``, opens and clicks change no reader.
"""

from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Request

from newsletter.events import Event, Kind
from newsletter.webhooks.base import (
    SharedSecretProvider, address, dedupe_key, event, mapping, text, unix_time,
)

KINDS = {
    "hard_bounce": Kind.HARD_BOUNCE, "hardBounce": Kind.HARD_BOUNCE,
    "invalid_email": Kind.HARD_BOUNCE, "invalid": Kind.HARD_BOUNCE,
    "soft_bounce": Kind.SOFT_BOUNCE, "softBounce": Kind.SOFT_BOUNCE,
    "spam": Kind.COMPLAINT, "complaint": Kind.COMPLAINT,
    "unsubscribed": Kind.UNSUBSCRIBE, "unsubscribe": Kind.UNSUBSCRIBE,
}


class BrevoWebhook(SharedSecretProvider):
    name = "brevo"

    def events(self, payload: Any, request: Request) -> list[Event]:
        p = mapping(payload)
        kind = KINDS.get(text(p.get("event")))
        email = address(p.get("email"))
        message_id = text(p.get("message-id"), 300)
        if kind is None or not (email or message_id):  # no address: found by the message-id we stored
            return []
        when = unix_time(p.get("ts_epoch"), scale=1000)
        if when is None:
            when = unix_time(p.get("ts_event") if p.get("ts_event") is not None else p.get("ts"))
        return [event(kind, self.name, dedupe_key(self.name, message_id, kind.value, email, when), email,
                      provider_id=message_id or None, occurred_at=when, detail=text(p.get("reason")))]
