"""SendGrid: the Signed Event Webhook.

Authenticity ("Getting Started with the Event Webhook Security Features → The Signed Event
Webhook / Verify the signature",
https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features):
an ECDSA (P-256, SHA-256) signature, base64 in ``X-Twilio-Email-Event-Webhook-Signature``,
over the ``X-Twilio-Email-Event-Webhook-Timestamp`` value followed by the raw body; the
verification key (``SENDGRID_WEBHOOK_PUBLIC_KEY``) is the base64 DER public key shown in
Mail Settings. SendGrid documents no freshness window; we refuse timestamps further than
five minutes from our clock, as Standard Webhooks does.

Payload ("Event Webhook Reference",
https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event): a JSON array
of events with ``event``, ``email``, ``timestamp``, ``sg_event_id`` (unique; the dedupe key),
``sg_message_id`` (our stored ``X-Message-Id`` followed by ``.filter…``). ``bounce`` with
``type: bounce`` is permanent, ``type: blocked`` temporary; ``dropped`` with reason
``Bounced Address``/``Invalid`` is a suppressed address, ``Spam Reporting Address`` a
complaint, ``Unsubscribed Address`` an unsubscribe; ``spamreport`` is a complaint;
``unsubscribe``/``group_unsubscribe`` unsubscribe. Others are ignored.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from werkzeug.wrappers import Request

from newsletter.events import Event, Kind
from newsletter.webhooks.base import (
    Provider, Refused, Verified, WebhookContext, address, check_fresh, dedupe_key, event, items, mapping, text,
    unix_time,
)

SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
SIMPLE = {"spamreport": Kind.COMPLAINT, "unsubscribe": Kind.UNSUBSCRIBE, "group_unsubscribe": Kind.UNSUBSCRIBE}
DROPPED = {"Bounced Address": Kind.HARD_BOUNCE, "Invalid": Kind.HARD_BOUNCE,
           "Spam Reporting Address": Kind.COMPLAINT, "Unsubscribed Address": Kind.UNSUBSCRIBE}


def load_public_key(value: str) -> ec.EllipticCurvePublicKey:
    """SendGrid's key as shown (base64 DER), or PEM; it must be an EC P-256 key."""
    try:
        if "BEGIN PUBLIC KEY" in value:
            key = serialization.load_pem_public_key(value.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode("".join(value.split()), validate=True))
    except Exception:  # malformed base64/DER/PEM, or an algorithm cryptography does not support
        raise Refused(503, "SENDGRID_WEBHOOK_PUBLIC_KEY is not a usable public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise Refused(503, "SENDGRID_WEBHOOK_PUBLIC_KEY is not an ECDSA P-256 key")
    return key


class SendGridWebhook(Provider):
    name = "sendgrid"
    secret_setting = "SENDGRID_WEBHOOK_PUBLIC_KEY"

    def verify(self, request: Request, body: bytes, payload: Any, ctx: WebhookContext) -> Verified:
        signature, timestamp = request.headers.get(SIGNATURE, ""), request.headers.get(TIMESTAMP, "")
        if not signature or not timestamp or len(timestamp) > 20:
            raise Refused(401, "missing signature headers")
        try:
            raw = base64.b64decode(signature, validate=True)
            key = str(self.secret)
            public_key = ctx.cached(f"sendgrid public key:{key}", lambda: load_public_key(key))
            public_key.verify(raw, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, binascii.Error, ValueError):
            raise Refused(401, "bad signature") from None
        check_fresh(timestamp, ctx.clock)
        return Verified()

    def events(self, payload: Any, request: Request) -> list[Event]:
        out = []
        for raw in items(payload):
            e = mapping(raw)
            kind, email = self._kind(e), address(e.get("email"))
            provider_id = text(e.get("sg_message_id"), 300).partition(".filter")[0]
            if kind is None or not (email or provider_id):  # no address: found by the message id we stored
                continue
            ident = text(e.get("sg_event_id"), 200) or f"{e.get('event')}:{email}:{e.get('timestamp')}:{provider_id}"
            out.append(event(kind, self.name, dedupe_key(self.name, ident), email,
                             provider_id=provider_id or None, occurred_at=unix_time(e.get("timestamp")),
                             detail=text(e.get("reason")) or text(e.get("response"))))
        return out

    @staticmethod
    def _kind(e: dict) -> Kind | None:
        name = text(e.get("event"))
        if name == "bounce":
            return Kind.SOFT_BOUNCE if text(e.get("type")) == "blocked" else Kind.HARD_BOUNCE
        if name == "dropped":
            return DROPPED.get(text(e.get("reason")))
        return SIMPLE.get(name)
