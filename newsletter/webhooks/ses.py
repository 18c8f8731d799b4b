"""Amazon SES notifications, delivered by Amazon SNS to an HTTPS subscription.

Authenticity ("Verifying the signatures of Amazon SNS messages",
https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html, and
"…when using HTTP query-based requests",
https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message-verify-message-signature.html):
the body is a JSON document whose ``Signature`` is an RSA signature (``SignatureVersion``
1 = SHA1, 2 = SHA256) over ``name\\nvalue\\n`` lines of fixed fields in a fixed order, made
with the certificate at ``SigningCertURL``. We fetch that certificate only from
``https://sns.<region>.amazonaws.com/…pem`` (:func:`is_sns_url`), cache it, check its dates,
and only for topics listed in ``SES_SNS_TOPIC_ARNS``, which we check first.
``SubscriptionConfirmation`` ("HTTP/HTTPS subscription confirmation JSON format",
https://docs.aws.amazon.com/sns/latest/dg/http-subscription-confirmation-json.html) is
confirmed by fetching ``SubscribeURL`` — only for listed topics, only on an SNS host.

Notification content ("Amazon SNS notification contents for Amazon SES",
https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html): ``Message`` is JSON
with ``notificationType`` (or ``eventType`` for event publishing) ``Bounce``/``Complaint``/…;
``bounce.bounceType`` ``Permanent`` (hard) or ``Transient``/``Undetermined`` (counted as
soft), ``bounce.bouncedRecipients[].emailAddress``, ``bounce.feedbackId``;
``complaint.complainedRecipients[]``, ``complaint.complaintFeedbackType`` (``not-spam`` is
not a complaint); ``mail.messageId`` (the SES MessageId our transport stored) and
``mail.commonHeaders.messageId`` (ours).
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from werkzeug.wrappers import Request

from newsletter.events import Event, Kind
from newsletter.webhooks.base import (
    TOLERANCE, Provider, Refused, Verified, WebhookContext, address, dedupe_key, event, items, iso_time, mapping,
    parse_json, text,
)
from newsletter.webhooks.times import is_fresh

SNS_HOST = re.compile(r"sns\.([a-z]{2}(?:-[a-z]+)+-\d{1,2})\.amazonaws\.com(\.cn)?")
CERT_PATH = re.compile(r"/SimpleNotificationService-[0-9A-Za-z]{1,64}\.pem")
TOPIC_REGION = re.compile(r"arn:aws(?:-cn|-us-gov)?:sns:([a-z]{2}(?:-[a-z]+)+-\d{1,2}):\d{12}:[\w-]{1,256}")
#: How old a signed Timestamp may be: SNS's longest retry span, plus clock skew.
SNS_RETRY_SPAN = timedelta(seconds=3600) + TOLERANCE
NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
TYPES = {"Notification": NOTIFICATION_FIELDS, "SubscriptionConfirmation": CONFIRMATION_FIELDS,
         "UnsubscribeConfirmation": CONFIRMATION_FIELDS}
HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}


def topic_region(arn: str) -> str | None:
    match = TOPIC_REGION.fullmatch(arn)
    return match.group(1) if match else None


def is_sns_url(url: str, *, pem: bool, region: str | None = None) -> bool:
    """True only for ``https://sns.<region>.amazonaws.com/…`` with nothing odd: no user
    info, no port, no look-alike host, and ``region`` when given; ``pem`` also requires
    SNS's certificate path ``/SimpleNotificationService-<id>.pem``."""
    if not isinstance(url, str) or len(url) > 2000 or any(c in url for c in "\\@ \t\r\n"):
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    host = SNS_HOST.fullmatch(parts.netloc)
    if parts.scheme != "https" or port is not None or not host or (region is not None and host.group(1) != region):
        return False
    if pem:
        return bool(CERT_PATH.fullmatch(parts.path)) and not parts.query and not parts.fragment
    return parse_qs(parts.query).get("Action") == ["ConfirmSubscription"]


def string_to_sign(message: dict) -> bytes:
    fields = TYPES[message["Type"]]
    return "".join(f"{k}\n{message[k]}\n" for k in fields if isinstance(message.get(k), str)).encode("utf-8")


class SesWebhook(Provider):
    name = "ses"
    secret_setting = "SES_SNS_TOPIC_ARNS"

    def verify(self, request: Request, body: bytes, payload: Any, ctx: WebhookContext) -> Verified:
        m = mapping(payload)
        if text(m.get("Type")) not in TYPES:
            raise Refused(400, "not an SNS message")
        topic = text(m.get("TopicArn"))
        if topic not in self.settings.ses_topic_arns:
            raise Refused(403, "unknown topic")
        sent_at = iso_time(m.get("Timestamp"))  # 400 when malformed or out of range
        if sent_at is None:
            raise Refused(400, "SNS message without a Timestamp")
        digest = HASHES.get(text(m.get("SignatureVersion")))
        url = text(m.get("SigningCertURL"), 2000)
        region = topic_region(topic) or "-"
        if digest is None or not is_sns_url(url, pem=True, region=region):
            raise Refused(401, "unsupported signature version or certificate URL")
        if not is_fresh(sent_at, ctx.clock, past=SNS_RETRY_SPAN):  # before any fetch: a replay costs nothing
            raise Refused(403, "stale or future SNS Timestamp")
        key = self._public_key(url, ctx)
        try:
            signature = base64.b64decode(text(m.get("Signature"), 2000), validate=True)
            key.verify(signature, string_to_sign(m), padding.PKCS1v15(), digest())
        except (InvalidSignature, binascii.Error, ValueError):
            raise Refused(401, "bad signature") from None
        return Verified()

    def _public_key(self, url: str, ctx: WebhookContext) -> rsa.RSAPublicKey:
        def load() -> x509.Certificate:
            ctx.fetches.spend(ctx.clock)  # 503 with Retry-After beyond the budget
            try:
                return x509.load_pem_x509_certificate(ctx.fetch(url))
            except Exception:  # network, HTTP status or PEM errors alike: we could not check
                raise Refused(503, "could not fetch the SNS signing certificate") from None

        cert = ctx.cached(url, load)
        now = ctx.clock.now()
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise Refused(401, "SNS signing certificate is not valid now")
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise Refused(401, "SNS signing certificate has no RSA key")
        return key

    def acknowledge(self, payload: Any, ctx: WebhookContext) -> None:
        if payload.get("Type") != "SubscriptionConfirmation":
            return
        url = text(payload.get("SubscribeURL"), 2000)
        if not is_sns_url(url, pem=False, region=topic_region(text(payload.get("TopicArn"))) or "-"):
            raise Refused(400, "SubscribeURL is not an SNS confirmation URL")
        ctx.fetches.spend(ctx.clock)
        try:
            ctx.fetch(url)
        except Exception:
            raise Refused(503, "could not confirm the subscription") from None

    def events(self, payload: Any, request: Request) -> list[Event]:
        if payload.get("Type") != "Notification":
            return []
        try:
            note = mapping(parse_json(text(payload.get("Message"), 1 << 20).encode("utf-8")))
        except Refused:
            return []  # an authentic message that is not SES JSON: nothing for us
        kind_name = text(note.get("notificationType")) or text(note.get("eventType"))
        mail = mapping(note.get("mail"))
        common = dict(provider_id=text(mail.get("messageId"), 200) or None,
                      message_id=text(mapping(mail.get("commonHeaders")).get("messageId"), 300) or None)
        if kind_name == "Bounce":
            b = mapping(note.get("bounce"))
            kind = Kind.HARD_BOUNCE if text(b.get("bounceType")) == "Permanent" else Kind.SOFT_BOUNCE
            people, feedback, when = b.get("bouncedRecipients"), text(b.get("feedbackId"), 200), b.get("timestamp")
        elif kind_name == "Complaint":
            c = mapping(note.get("complaint"))
            if text(c.get("complaintFeedbackType")) == "not-spam":
                return []
            kind, people, feedback, when = Kind.COMPLAINT, c.get("complainedRecipients"), text(c.get("feedbackId"), 200), c.get("timestamp")
        else:
            return []
        feedback = feedback or text(payload.get("MessageId"), 200)
        out = []
        for i, r in enumerate(items(people)):  # every recipient; more than base.MAX_EVENTS is refused whole, never cut
            r = mapping(r)
            email = address(r.get("emailAddress"))
            if email or common["provider_id"]:  # no address: found by the SES MessageId we stored
                out.append(event(kind, self.name, dedupe_key(self.name, feedback, email or i), email,
                                 occurred_at=iso_time(when), detail=text(r.get("diagnosticCode")), **common))
        return out
