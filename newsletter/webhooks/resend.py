"""Resend: webhooks delivered by Svix, signed per Standard Webhooks.

Authenticity ("Verify Webhooks Requests", https://resend.com/docs/webhooks/verify-webhooks-requests,
and the Standard Webhooks spec, https://www.standardwebhooks.com/ → "Verifying webhooks"):
headers ``svix-id``, ``svix-timestamp``, ``svix-signature`` (or their ``webhook-*`` names);
the signature list holds ``v1,<base64 HMAC-SHA256>`` entries over ``id.timestamp.body`` under
the ``whsec_…`` secret (``RESEND_WEBHOOK_SECRET``). The HMAC construction is the
``standardwebhooks`` package's own ``Webhook.sign``; we compare and check freshness
ourselves because its ``verify`` reads the wall clock, and ours is injected.

Payload (https://resend.com/docs/webhooks/emails/bounced and …/complained): ``type``
(``email.bounced``, ``email.complained``, ``email.delivered``, ``email.delivery_delayed``, …),
``created_at``, ``data.email_id`` (the id our transport stored from the batch reply),
``data.to`` (a list), ``data.bounce.type`` (``Permanent``/``Transient``) and ``.message``.
A retried delivery keeps its ``svix-id``, so the dedupe key is that id plus the address.
"""

from __future__ import annotations

import hmac
from typing import Any

from standardwebhooks import Webhook
from werkzeug.wrappers import Request

from newsletter.events import Event, Kind
from newsletter.webhooks.base import (
    Provider, Refused, Verified, WebhookContext, address, check_fresh, dedupe_key, event, iso_time, mapping, text,
)
from newsletter.webhooks.times import signed_time


def _header(request: Request, name: str) -> str:
    return request.headers.get(f"svix-{name}") or request.headers.get(f"webhook-{name}") or ""


class ResendWebhook(Provider):
    name = "resend"
    secret_setting = "RESEND_WEBHOOK_SECRET"

    def verify(self, request: Request, body: bytes, payload: Any, ctx: WebhookContext) -> Verified:
        msg_id, stamp, given = _header(request, "id"), _header(request, "timestamp"), _header(request, "signature")
        if not msg_id or not stamp or not given:
            raise Refused(401, "missing signature headers")
        if not (stamp.isascii() and stamp.isdigit()):
            raise Refused(400, "malformed signature timestamp")
        when = signed_time(stamp)  # 400 for a time no clock can hold (year 33658), before any use of it
        try:
            signer = Webhook(str(self.secret))
        except Exception:  # the package raises bare errors for a malformed secret
            raise Refused(503, "RESEND_WEBHOOK_SECRET is not a usable whsec_ secret") from None
        expected = signer.sign(msg_id, when, body.decode("utf-8", "replace"))
        if not any(hmac.compare_digest(expected.encode(), part.encode()) for part in given.split()[:10]):
            raise Refused(401, "bad signature")
        check_fresh(stamp, ctx.clock)
        return Verified()

    def events(self, payload: Any, request: Request) -> list[Event]:
        p = mapping(payload)
        data = mapping(p.get("data"))
        name = text(p.get("type"))
        if name == "email.bounced":
            bounce = mapping(data.get("bounce"))
            kind = Kind.SOFT_BOUNCE if text(bounce.get("type")).lower() == "transient" else Kind.HARD_BOUNCE
            detail = text(bounce.get("message"))
        elif name == "email.complained":
            kind, detail = Kind.COMPLAINT, ""
        else:
            return []
        to = data.get("to")
        emails = list(dict.fromkeys(a for a in (address(x) for x in (to if isinstance(to, list) else [to])) if a))
        email_id = text(data.get("email_id"), 200) or None
        if not emails and email_id:
            emails = [""]  # no address: the reader is found by the email id our transport stored
        when = iso_time(p.get("created_at"))
        return [event(kind, self.name, dedupe_key(self.name, _header(request, "id"), email or email_id), email,
                      provider_id=email_id, occurred_at=when, detail=detail)
                for email in emails]  # every recipient; more than base.MAX_EVENTS is refused whole, never cut
