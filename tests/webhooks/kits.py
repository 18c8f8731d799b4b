"""One kit per provider: build its documented payloads and sign them as it does.

``payload(kind, email, ident)`` with kind ``hard``, ``soft``, ``complaint`` or ``unknown``;
``sign(payload, at=…, forged=False)`` → :class:`Signed`. ``provider_id(ident)`` is the id
the ledger would hold for that message. Signing is written out here from the providers'
documentation, not borrowed from the code under test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-feedback"
OTHER_TOPIC = "arn:aws:sns:eu-west-1:999999999999:someone-else"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"
READERS = ("a@example.org", "b@example.org", "c@example.org")


# ---- keys made for this test session -----------------------------------------------------
@dataclass
class Keys:
    shared: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    mailgun: str = field(default_factory=lambda: secrets.token_hex(16))
    resend: str = field(default_factory=lambda: "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode())
    sendgrid: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    sns: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(public_exponent=65537,
                                                                                  key_size=2048))

    def sendgrid_public(self, key: ec.EllipticCurvePrivateKey | None = None) -> str:
        der = (key or self.sendgrid).public_key().public_bytes(serialization.Encoding.DER,
                                                              serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(der).decode()

    def sns_cert_pem(self) -> bytes:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.sns.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(NOW - timedelta(days=1))
                .not_valid_after(NOW + timedelta(days=365)).sign(self.sns, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM)

    def env(self) -> dict[str, str]:
        return {"NEWSLETTER_WEBHOOK_SECRET": self.shared, "MAILGUN_WEBHOOK_SIGNING_KEY": self.mailgun,
                "RESEND_WEBHOOK_SECRET": self.resend, "SENDGRID_WEBHOOK_PUBLIC_KEY": self.sendgrid_public(),
                "SES_SNS_TOPIC_ARNS": f"{TOPIC}, arn:aws:sns:us-east-1:123456789012:other",
                "NEWSLETTER_SOFT_BOUNCE_LIMIT": "2", "NEWSLETTER_SOFT_BOUNCE_WINDOW": "7"}


# ---- signing, as each provider documents it ------------------------------------------------
def hmac_hex(key: str, data: str) -> str:
    return hmac.new(key.encode(), data.encode(), hashlib.sha256).hexdigest()


def sns_string_to_sign(m: dict[str, str]) -> bytes:
    """AWS's documented canonical form, written out independently of newsletter.webhooks.ses."""
    if m["Type"] == "Notification":
        names = ["Message", "MessageId"] + (["Subject"] if "Subject" in m else []) + ["Timestamp", "TopicArn", "Type"]
    else:
        names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    return "".join(f"{n}\n{m[n]}\n" for n in names).encode()


def sign_sns(keys: Keys, message: dict[str, str], version: str = "2") -> bytes:
    digest = hashes.SHA256() if version == "2" else hashes.SHA1()
    signature = keys.sns.sign(sns_string_to_sign(message), padding.PKCS1v15(), digest)
    return json.dumps({**message, "SignatureVersion": version, "Signature": base64.b64encode(signature).decode(),
                       "SigningCertURL": CERT_URL}).encode()


@dataclass
class Signed:
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    query: str = ""


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Kit:
    """A provider kit holds the session's keys; each subclass builds and signs its payloads."""

    def __init__(self, keys: Keys):
        self.keys = keys


class SharedSecretKit(Kit):
    """Providers that do not sign (Postmark, Brevo): the request carries the shared secret."""

    def authorization(self, secret: str) -> str:
        raise NotImplementedError

    def sign(self, payload: Any, *, at: datetime, forged: bool = False) -> Signed:
        secret = "not-the-secret" if forged else self.keys.shared
        return Signed(json.dumps(payload).encode(), {"Authorization": self.authorization(secret),
                                                     "Content-Type": "application/json"})


class Postmark(SharedSecretKit):
    name, timestamped, body_signed = "postmark", False, False

    def provider_id(self, ident: str) -> str:
        return f"pm-{ident}"

    def payload(self, kind: str, email: str, ident: str) -> Any:
        if kind == "unknown":
            return {"RecordType": "Open", "MessageID": self.provider_id(ident), "Recipient": email}
        record, typ = {"hard": ("Bounce", "HardBounce"), "soft": ("Bounce", "SoftBounce"),
                       "complaint": ("SpamComplaint", "SpamComplaint")}[kind]
        return {"RecordType": record, "ID": int(uuid.uuid5(uuid.NAMESPACE_URL, ident).int % 10**9), "Type": typ,
                "MessageID": self.provider_id(ident), "Email": email, "BouncedAt": "2026-03-01T11:59:00Z",
                "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist"}

    def authorization(self, secret: str) -> str:
        return _basic("postmark", secret)


class Brevo(SharedSecretKit):
    name, timestamped, body_signed = "brevo", False, False

    def provider_id(self, ident: str) -> str:
        return f"<{ident}@smtp-relay.mailin.fr>"

    def payload(self, kind: str, email: str, ident: str) -> Any:
        event = {"hard": "hard_bounce", "soft": "soft_bounce", "complaint": "spam", "unknown": "opened"}[kind]
        return {"event": event, "email": email, "id": 123, "date": "2026-03-01 12:59:00", "ts": 1772366340,
                "message-id": self.provider_id(ident), "ts_event": 1772366340, "subject": "Issue 6",
                "reason": "mailbox unavailable", "ts_epoch": 1772366340000}

    def authorization(self, secret: str) -> str:
        return f"Bearer {secret}"


class SendGrid(Kit):
    name, timestamped, body_signed = "sendgrid", True, True

    def provider_id(self, ident: str) -> str:
        return f"sg{ident}.dfd.64b469"

    def payload(self, kind: str, email: str, ident: str) -> Any:
        base = {"email": email, "timestamp": 1772366340, "smtp-id": f"<{ident}@ismtpd-555>",
                "sg_event_id": f"ev-{ident}", "sg_message_id": f"{self.provider_id(ident)}.filter0001.16648.0"}
        extra = {"hard": {"event": "bounce", "type": "bounce", "reason": "550 5.1.1 unknown user"},
                 "soft": {"event": "bounce", "type": "blocked", "reason": "421 try later"},
                 "complaint": {"event": "spamreport"}, "unknown": {"event": "open", "useragent": "x"}}[kind]
        return [{"email": "other@example.net", "timestamp": 1772366340, "event": "processed",
                 "sg_event_id": f"p-{ident}"}, {**base, **extra}]

    def sign(self, payload: Any, *, at: datetime, forged: bool = False) -> Signed:
        body, stamp = json.dumps(payload).encode(), str(int(at.timestamp()))
        key = ec.generate_private_key(ec.SECP256R1()) if forged else self.keys.sendgrid
        signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return Signed(body, {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
                             "X-Twilio-Email-Event-Webhook-Timestamp": stamp, "Content-Type": "application/json"})


class Mailgun(Kit):
    name, timestamped, body_signed = "mailgun", True, False  # the signature covers timestamp + token only

    def provider_id(self, ident: str) -> str:
        return f"<{ident}@mg.example.org>"

    def payload(self, kind: str, email: str, ident: str) -> Any:
        event = {"hard": {"event": "failed", "severity": "permanent", "reason": "bounce"},
                 "soft": {"event": "failed", "severity": "temporary", "reason": "generic"},
                 "complaint": {"event": "complained"}, "unknown": {"event": "opened"}}[kind]
        return {"event-data": {**event, "id": f"mg-{ident}", "timestamp": 1772366340.25, "recipient": email,
                               "message": {"headers": {"message-id": f"{ident}@mg.example.org"}},
                               "delivery-status": {"code": 550, "description": "No such user"}}}

    def sign(self, payload: Any, *, at: datetime, forged: bool = False, token: str | None = None) -> Signed:
        stamp, token = str(int(at.timestamp())), token or secrets.token_hex(25)
        key = "not-the-key" if forged else self.keys.mailgun
        signed = {"signature": {"timestamp": stamp, "token": token, "signature": hmac_hex(key, stamp + token)},
                  **payload}
        return Signed(json.dumps(signed).encode(), {"Content-Type": "application/json"})


class Resend(Kit):
    name, timestamped, body_signed = "resend", True, True

    def provider_id(self, ident: str) -> str:
        return f"re-{ident}"

    def payload(self, kind: str, email: str, ident: str) -> Any:
        typ, data = {"hard": ("email.bounced", {"bounce": {"type": "Permanent", "subType": "General",
                                                            "message": "The recipient's mailbox does not exist"}}),
                     "soft": ("email.bounced", {"bounce": {"type": "Transient", "subType": "MailboxFull",
                                                           "message": "Mailbox full"}}),
                     "complaint": ("email.complained", {}), "unknown": ("email.opened", {})}[kind]
        return {"type": typ, "created_at": "2026-03-01T11:59:00.000Z",
                "data": {"email_id": self.provider_id(ident), "from": "ChinAffairs+ <news@example.org>",
                         "to": [email], "subject": "Issue 6", **data}, "_ident": ident}

    def sign(self, payload: Any, *, at: datetime, forged: bool = False) -> Signed:
        body, stamp, msg_id = json.dumps(payload).encode(), str(int(at.timestamp())), f"msg_{payload['_ident']}"
        key = secrets.token_bytes(24) if forged else base64.b64decode(self.keys.resend.removeprefix("whsec_"))
        mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
        return Signed(body, {"svix-id": msg_id, "svix-timestamp": stamp, "Content-Type": "application/json",
                             "svix-signature": "v1,bm90LXRoaXMtb25l v1," + base64.b64encode(mac).decode()})


class Ses(Kit):
    name, timestamped, body_signed = "ses", False, True

    def provider_id(self, ident: str) -> str:
        return f"0102018e-{ident}-000000"

    def payload(self, kind: str, email: str, ident: str) -> Any:
        mail = {"timestamp": "2026-03-01T11:58:00.000Z", "messageId": self.provider_id(ident),
                "destination": [email], "commonHeaders": {"messageId": f"<global-governance-of-ai.{ident}@example.org>"}}
        if kind in ("hard", "soft"):
            note = {"notificationType": "Bounce", "mail": mail, "bounce": {
                "bounceType": "Permanent" if kind == "hard" else "Transient", "bounceSubType": "General",
                "bouncedRecipients": [{"emailAddress": email, "action": "failed", "status": "5.1.1",
                                       "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
                "timestamp": "2026-03-01T11:59:00.000Z", "feedbackId": f"fb-{ident}"}}
        elif kind == "complaint":
            note = {"notificationType": "Complaint", "mail": mail, "complaint": {
                "complainedRecipients": [{"emailAddress": email}], "complaintFeedbackType": "abuse",
                "timestamp": "2026-03-01T11:59:00.000Z", "feedbackId": f"fb-{ident}"}}
        else:
            note = {"notificationType": "Delivery", "mail": mail, "delivery": {"recipients": [email]}}
        return {"Type": "Notification", "MessageId": str(uuid.uuid5(uuid.NAMESPACE_URL, ident)), "TopicArn": TOPIC,
                "Message": json.dumps(note), "Timestamp": "2026-03-01T11:59:01.000Z"}

    def sign(self, payload: Any, *, at: datetime, forged: bool = False, version: str = "2") -> Signed:
        keys = Keys(sns=rsa.generate_private_key(public_exponent=65537, key_size=2048)) if forged else self.keys
        return Signed(sign_sns(keys, payload, version), {"Content-Type": "text/plain; charset=UTF-8",
                                                        "x-amz-sns-message-type": payload["Type"]})


KITS = {k.name: k for k in (Postmark, Brevo, SendGrid, Mailgun, Resend, Ses)}
