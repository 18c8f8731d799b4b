"""Postmark: bounce, spam-complaint and subscription-change webhooks.

Authenticity: Postmark does not sign webhooks; it documents HTTP basic auth in the
webhook URL (``https://user:SECRET@host/webhooks/postmark``) — "Webhooks overview →
Protecting your webhook", https://postmarkapp.com/developer/webhooks/webhooks-overview —
so the secret is ``NEWSLETTER_WEBHOOK_SECRET`` as the basic-auth password.

Payloads (one JSON object per request), by ``RecordType``:

* ``Bounce`` — https://postmarkapp.com/developer/webhooks/bounce-webhook : ``ID``, ``Type``
  (``HardBounce``, ``SoftBounce``, ``Transient``, ``BadEmailAddress``, …), ``MessageID``
  (the id our transport stored from the batch reply), ``Email``, ``BouncedAt``, ``Details``.
* ``SpamComplaint`` — https://postmarkapp.com/developer/webhooks/spam-complaint-webhook :
  the same fields as a bounce.
* ``SubscriptionChange`` — https://postmarkapp.com/developer/webhooks/subscription-change-webhook :
  ``Recipient``, ``MessageID``, ``ChangedAt``, ``SuppressSending`` (true = suppressed,
  false = reactivated: never acted on) and ``SuppressionReason`` (``HardBounce``,
  ``SpamComplaint``, ``ManualSuppression`` = the reader unsubscribed).

Everything else (Delivery, Open, Click, …) is ignored.
"""

from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Request

from newsletter.events import Event, Kind
from newsletter.webhooks.base import (
    SharedSecretProvider, address, dedupe_key, event, iso_time, mapping, text,
)

#: Bounce ``Type`` names from "Bounce webhook" and the bounce types table of the Bounce API
#: (https://postmarkapp.com/developer/api/bounce-api#bounce-types). ``Unsubscribe`` is a
#: reader's unsubscribe request that reached Postmark as a bounce (a list-unsubscribe mail);
#: ``SpamComplaint`` as a bounce type is a complaint. Types about the sender, not the reader
#: (``Blocked``, ``DMARCPolicy``, ``SpamNotification``, ``SMTPApiError``, …) change no reader.
HARD = frozenset({"HardBounce", "BadEmailAddress"})
SOFT = frozenset({"SoftBounce", "Transient", "DnsError"})
BOUNCE_AS = {"Unsubscribe": Kind.UNSUBSCRIBE, "SpamComplaint": Kind.COMPLAINT}
SUPPRESSION = {"HardBounce": Kind.HARD_BOUNCE, "SpamComplaint": Kind.COMPLAINT,
               "ManualSuppression": Kind.UNSUBSCRIBE}


class PostmarkWebhook(SharedSecretProvider):
    name = "postmark"

    def events(self, payload: Any, request: Request) -> list[Event]:
        p = mapping(payload)
        record = text(p.get("RecordType"))
        kind = self._kind(record, p)
        if kind is None:
            return []
        email = address(p.get("Email") or p.get("Recipient"))
        if not email and not text(p.get("MessageID")):  # no address: found by the MessageID we stored
            return []
        ident = p.get("ID") if record != "SubscriptionChange" else text(p.get("ChangedAt"))
        when = iso_time(p.get("BouncedAt") or p.get("ChangedAt"))
        return [event(kind, self.name, dedupe_key(self.name, record, ident, text(p.get("MessageID")), email), email,
                      provider_id=text(p.get("MessageID"), 200) or None, occurred_at=when,
                      detail=text(p.get("Details")) or text(p.get("SuppressionReason")) or text(p.get("Type")))]

    @staticmethod
    def _kind(record: str, p: dict) -> Kind | None:
        if record == "Bounce":
            kind = text(p.get("Type"))
            if kind in BOUNCE_AS:
                return BOUNCE_AS[kind]
            return Kind.HARD_BOUNCE if kind in HARD else Kind.SOFT_BOUNCE if kind in SOFT else None
        if record == "SpamComplaint":
            return Kind.COMPLAINT
        if record == "SubscriptionChange" and p.get("SuppressSending") is True:
            return SUPPRESSION.get(text(p.get("SuppressionReason")))
        return None
