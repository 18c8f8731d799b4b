"""Mailgun: webhooks signed with the HTTP webhook signing key, current (JSON) and legacy (form).

Authenticity ("Securing Webhooks",
https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks):
``signature`` is the hex HMAC-SHA256 of ``timestamp + token`` under
``MAILGUN_WEBHOOK_SIGNING_KEY``. Current webhooks carry ``signature: {timestamp, token,
signature}`` in a JSON body; legacy webhooks (accounts set up before 2018-06-29) post the
same three as form fields among the event's own (``application/x-www-form-urlencoded``, or
``multipart/form-data`` when the message is attached), per the legacy "Webhooks" page
(https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhooks — "Legacy
webhooks"). Mailgun merges a message's user variables into those form fields, so for the
signature fields the *last* value counts and for the event's fields the first (as
django-anymail's handler reads them).

Mailgun's signature does not cover the body. The token is one-time: we keep each token with
the hash of the body it came with (:mod:`newsletter.webhooks.replay`), so an identical retry
is a 200 that changes nothing and the token with another body a 403. Mailgun retries a
webhook it got no 200 for "during 8 hours" ("Automatic Retries",
https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhook-retries),
possibly with the original signature, so a timestamp may be that old when the token is new.

Current payload ("Webhooks → event-data" and "Events",
https://documentation.mailgun.com/docs/mailgun/user-manual/events/events): ``event-data`` with
``event`` (``failed`` with ``severity`` ``permanent``/``temporary``, ``complained``,
``unsubscribed``, …), ``recipient``, ``id``, ``timestamp``, ``message.headers.message-id``,
``delivery-status`` (``attempt-no``, ``retry-seconds``, ``description``, ``message``). A
temporary failure is reported once per attempt; :func:`newsletter.events.apply_event` counts
soft bounces per message, so the attempts of one message count once.

Legacy events: ``bounced`` (a permanent failure), ``dropped`` (Mailgun gave up or refused:
``code`` 607 is an address that complained before, the others hard failures),
``complained``, ``unsubscribed``; ``Message-Id``/``message-id`` is the message's id.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta
from io import BytesIO
from typing import Any
from urllib.parse import parse_qs

from werkzeug.formparser import parse_form_data
from werkzeug.wrappers import Request

from newsletter.events import Event, Kind
from newsletter.webhooks.base import (
    Provider, Refused, Verified, WebhookContext, address, dedupe_key, event, mapping, parse_json, text, unix_time,
)
from newsletter.webhooks.times import signed_time

SIMPLE = {"complained": Kind.COMPLAINT, "unsubscribed": Kind.UNSUBSCRIBE}
LEGACY = {"bounced": Kind.HARD_BOUNCE, "dropped": Kind.HARD_BOUNCE, **SIMPLE}
LEGACY_CODES = {"607": Kind.COMPLAINT}  # "Not delivering to a user who marked your messages as spam"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class LegacyForm(dict):
    """A legacy webhook's form fields, each a list of its values in order."""

    def first(self, name: str) -> str:
        return text((self.get(name) or [""])[0])

    def last(self, name: str) -> str:
        return text((self.get(name) or [""])[-1])


def parse_form(body: bytes, request: Request) -> LegacyForm:
    if request.mimetype == "application/x-www-form-urlencoded":
        try:
            return LegacyForm(parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=1000))
        except (UnicodeDecodeError, ValueError):
            raise Refused(400, "body is not a UTF-8 form") from None
    environ = {"wsgi.input": BytesIO(body), "CONTENT_LENGTH": str(len(body)), "REQUEST_METHOD": "POST",
               "CONTENT_TYPE": request.headers.get("Content-Type", "")}
    try:
        _, form, _ = parse_form_data(environ, max_form_memory_size=len(body) + 1, max_form_parts=1000)
    except Exception:  # werkzeug raises its own errors for a broken multipart body
        raise Refused(400, "body is not a readable form") from None
    return LegacyForm({k: form.getlist(k) for k in form})


class MailgunWebhook(Provider):
    name = "mailgun"
    secret_setting = "MAILGUN_WEBHOOK_SIGNING_KEY"
    tolerance = timedelta(hours=8, minutes=30)

    def parse(self, body: bytes, request: Request) -> Any:
        return parse_form(body, request) if request.mimetype in FORM_TYPES else parse_json(body)

    def verify(self, request: Request, body: bytes, payload: Any, ctx: WebhookContext) -> Verified:
        if isinstance(payload, LegacyForm):
            timestamp, token, given = payload.last("timestamp"), payload.last("token"), payload.last("signature")
        else:
            sig = mapping(mapping(payload).get("signature"))
            stamp = sig.get("timestamp")  # documented as an int, shown as a string in the examples: take both
            timestamp = str(stamp) if type(stamp) is int else text(stamp, 20)
            token, given = text(sig.get("token"), 200), text(sig.get("signature"))
        if not timestamp or not token or not given:
            raise Refused(401, "missing signature")
        expected = hmac.new(str(self.secret).encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), given.lower().encode()):
            raise Refused(401, "bad signature")
        return Verified(nonce=f"{self.name}:{token[:200]}", signed_at=signed_time(timestamp))

    def events(self, payload: Any, request: Request) -> list[Event]:
        if isinstance(payload, LegacyForm):
            return self._legacy(payload)
        data = mapping(mapping(payload).get("event-data"))
        name = text(data.get("event"))
        if name == "failed":
            kind = Kind.HARD_BOUNCE if text(data.get("severity")) == "permanent" else Kind.SOFT_BOUNCE
        else:
            kind = SIMPLE.get(name)
        email = address(data.get("recipient"))
        mid = text(mapping(mapping(data.get("message")).get("headers")).get("message-id"), 300).strip("<>")
        if kind is None or not (email or mid):
            return []
        status = mapping(data.get("delivery-status"))
        ident = text(data.get("id"), 200) or f"{name}:{email}:{data.get('timestamp')}:{mid}"
        return [event(kind, self.name, dedupe_key(self.name, ident), email,
                      provider_id=f"<{mid}>" if mid else None, message_id=f"<{mid}>" if mid else None,
                      occurred_at=unix_time(data.get("timestamp")),
                      detail=text(status.get("description")) or text(status.get("message")) or text(data.get("reason")))]

    def _legacy(self, form: LegacyForm) -> list[Event]:
        name = form.first("event")
        kind = LEGACY_CODES.get(form.first("code"), LEGACY.get(name)) if name == "dropped" else LEGACY.get(name)
        email = address(form.first("recipient"))
        mid = (form.first("Message-Id") or form.first("message-id")).strip().strip("<>")[:300]
        if kind is None or not (email or mid):
            return []
        return [event(kind, self.name, dedupe_key(self.name, "legacy", form.last("token")), email,
                      provider_id=f"<{mid}>" if mid else None, message_id=f"<{mid}>" if mid else None,
                      occurred_at=unix_time(form.last("timestamp")),
                      detail=form.first("description") or form.first("error") or form.first("notification"))]
