"""The HTTP provider transports against a real local server that plays each provider.

Each provider's checker asserts the request as that provider documents it (the
doc section is cited above it) and answers with the documented reply shape.
Behaviour shared by all providers (splitting, retries, error mapping, secrets)
is tested once, parametrised over every provider.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from email import message_from_bytes, policy
from email.utils import formatdate, parseaddr
from typing import Any, Callable

import pytest

from newsletter.clock import FakeClock
from newsletter.errors import ConfigError, TransportError
from newsletter.transports import get_transport
from newsletter.transports.base import Status
from newsletter.transports.brevo import BrevoTransport
from newsletter.transports.http import HTTPTransport, parse_retry_after
from newsletter.transports.ratelimit import RETRIES
from tests.provider_emulator import substitute
from newsletter.transports.mailgun import MailgunTransport
from newsletter.transports.postmark import PostmarkTransport
from newsletter.transports.resend import ResendTransport
from newsletter.transports.sendgrid import SendGridTransport
from newsletter.transports.ses import SESTransport

KEY = "key-5ecret-9f8e7d6c5b4a3210"
AWS = {
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    "AWS_SESSION_TOKEN": "FwoGZXIvYXdzEXAMPLEsessionTOKEN",
    "AWS_REGION": "eu-west-1",
}
MAILGUN_DOMAIN = "mg.example.org"


# What the fake server (tests/transports/conftest.py) records and expects back.
Recorded = Any  # .method, .path, .headers, .body, .json(), .form()
Reply = tuple  # (status, body, headers): dict/list bodies go out as JSON, str/bytes as text


def reply(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Reply:
    return (status, body, headers or {})


def email_of(value: str) -> str:
    return parseaddr(value)[1]


def provider_id(recipient: str) -> str:
    """The id the fake provider assigns, derived from the recipient so the mapping is checkable."""
    return f"id-{recipient}"


# ---- Postmark -------------------------------------------------------------------------
# postmarkapp.com/developer/user-guide/send-email-with-api/batch-emails ("Send batch emails":
# POST /email/batch, JSON array of at most 500 messages, X-Postmark-Server-Token; the reply
# is a JSON array in request order with ErrorCode/Message/MessageID/SubmittedAt/To).
POSTMARK_FIELDS = {"From", "To", "Subject", "HtmlBody", "TextBody", "ReplyTo", "Headers", "MessageStream"}


def postmark_check(req: Recorded) -> list[dict[str, Any]]:
    assert (req.method, req.path) == ("POST", "/email/batch")
    assert req.headers["X-Postmark-Server-Token"] == KEY
    assert req.headers["Accept"] == "application/json"
    batch = req.json()
    assert isinstance(batch, list) and 1 <= len(batch) <= 500
    for item in batch:
        assert set(item) == POSTMARK_FIELDS
        assert all(set(h) == {"Name", "Value"} for h in item["Headers"])
    return batch


def postmark_ok(req: Recorded) -> Reply:
    return reply(200, [{"ErrorCode": 0, "Message": "OK", "MessageID": provider_id(email_of(m["To"])),
                        "SubmittedAt": "2010-11-26T12:01:05.1794748-05:00", "To": m["To"]}
                       for m in postmark_check(req)])


# ---- Resend ---------------------------------------------------------------------------
# resend.com/docs/api-reference/emails/send-batch-emails (POST /emails/batch, Bearer key,
# JSON array of at most 100 emails, reply {"data": [{"id"}]}) and
# resend.com/docs/dashboard/emails/batch-validation-modes (x-batch-validation: permissive,
# invalid emails come back in "errors" as {index, message}).
RESEND_FIELDS = {"from", "to", "subject", "html", "text", "reply_to", "headers"}


def resend_check(req: Recorded) -> list[dict[str, Any]]:
    assert (req.method, req.path) == ("POST", "/emails/batch")
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    assert req.headers["x-batch-validation"] == "permissive"
    batch = req.json()
    assert isinstance(batch, list) and 1 <= len(batch) <= 100
    for item in batch:
        assert set(item) == RESEND_FIELDS
        assert isinstance(item["to"], list) and len(item["to"]) == 1
    return batch


def resend_ok(req: Recorded) -> Reply:
    return reply(200, {"data": [{"id": provider_id(email_of(m["to"][0]))} for m in resend_check(req)]})


# ---- SendGrid -------------------------------------------------------------------------
# twilio.com/docs/sendgrid/api-reference/mail-send/mail-send (POST /v3/mail/send, Bearer key,
# personalizations/from/reply_to/subject/content; text/plain before text/html; reply 202
# Accepted, empty body, X-Message-Id header); .../sending-email/personalizations (each with its
# own to/headers/substitutions; at most 1000 a request, each address once, Mail Send errors).
SENDGRID_FIELDS = {"personalizations", "from", "reply_to", "subject", "content"}


def sendgrid_check(req: Recorded) -> list[dict[str, Any]]:
    assert (req.method, req.path) == ("POST", "/v3/mail/send")
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    body = req.json()
    assert set(body) == SENDGRID_FIELDS
    people = body["personalizations"]
    assert 1 <= len(people) <= 1000
    assert all(len(p["to"]) == 1 and set(p) <= {"to", "headers", "substitutions"} for p in people)
    assert len({p["to"][0]["email"] for p in people}) == len(people)  # each address once
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    return people


def sendgrid_ok(req: Recorded) -> Reply:
    people = sendgrid_check(req)
    return reply(202, None, {"X-Message-Id": provider_id(people[0]["to"][0]["email"])})


# ---- Mailgun --------------------------------------------------------------------------
# documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/messages ("Send an email":
# POST /v3/{domain_name}/messages, form fields from/to (repeated)/subject/text/html/h:<Header>/
# recipient-variables; basic auth api:<key>; reply {"id", "message": "Queued. Thank you."});
# .../user-manual/sending-messages/batch-sending (up to 1000 "to", %recipient.<key>%); "Send an
# email in MIME format" (POST .../messages.mime, multipart "to" plus the MIME as the "message" file).
def mailgun_check(req: Recorded) -> list[dict[str, Any]]:
    scheme, _, token = req.headers["Authorization"].partition(" ")
    assert scheme == "Basic" and base64.b64decode(token).decode() == f"api:{KEY}"
    if req.path == f"/v3/{MAILGUN_DOMAIN}/messages.mime":
        form = req.form()
        assert set(form) == {"to", "message"}
        assert form["message"][0].get_param("filename", header="content-disposition")
        to = form["to"][1].decode()
        raw = form["message"][1]
        assert email_of(message_from_bytes(raw, policy=policy.SMTP)["To"]) == to
        return [{"to": to, "message": raw}]
    assert (req.method, req.path) == ("POST", f"/v3/{MAILGUN_DOMAIN}/messages")
    fields = req.fields()
    names = {k for k, _ in fields}
    assert {"from", "to", "subject", "text", "html", "recipient-variables"} <= names
    assert all(n in {"from", "to", "subject", "text", "html", "recipient-variables"} or n.startswith("h:")
               for n in names)
    to = [email_of(v) for k, v in fields if k == "to"]
    assert 1 <= len(to) <= 1000
    variables = json.loads(dict(fields)["recipient-variables"])
    assert set(variables) == set(to)  # every reader has their own variables: one message each
    return [{"to": t, "fields": fields, "variables": variables[t]} for t in to]


def mailgun_ok(req: Recorded) -> Reply:
    items = mailgun_check(req)
    return reply(200, {"id": provider_id(items[0]["to"]), "message": "Queued. Thank you."})


# ---- Brevo ----------------------------------------------------------------------------
# developers.brevo.com/reference/sendtransacemail ("Send a transactional email": POST
# /v3/smtp/email, api-key header, sender/to/subject/htmlContent/textContent/replyTo/headers;
# reply 201 {"messageId"}).
BREVO_FIELDS = {"sender", "to", "subject", "htmlContent", "textContent", "replyTo", "headers"}


def brevo_check(req: Recorded) -> list[dict[str, Any]]:
    assert (req.method, req.path) == ("POST", "/v3/smtp/email")
    assert req.headers["api-key"] == KEY
    body = req.json()
    assert set(body) == BREVO_FIELDS
    assert len(body["to"]) == 1 and "email" in body["to"][0]
    return [body]


def brevo_ok(req: Recorded) -> Reply:
    (body,) = brevo_check(req)
    return reply(201, {"messageId": provider_id(body["to"][0]["email"])})


# ---- Amazon SES v2 --------------------------------------------------------------------
# docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html (POST
# /v2/email/outbound-emails, JSON with Content.Raw.Data base64 of the MIME, reply
# {"MessageId"}) and the SigV4 "Authorization header" format of the IAM user guide.
SIGV4 = re.compile(r"AWS4-HMAC-SHA256 Credential=(?P<akid>[A-Z0-9]+)/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)"
                   r"/ses/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<sig>[0-9a-f]{64})")


def sigv4_expected(req: Recorded, secret: str = AWS["AWS_SECRET_ACCESS_KEY"]) -> tuple[str, str]:
    """(signature sent, signature botocore computes here from what was received)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    match = SIGV4.fullmatch(req.headers["Authorization"])
    assert match, req.headers["Authorization"]
    assert match["akid"] == AWS["AWS_ACCESS_KEY_ID"] and match["region"] == AWS["AWS_REGION"]
    names = match["signed"].split(";")
    assert {"host", "x-amz-date", "x-amz-security-token", "content-type"} <= set(names)
    received = AWSRequest(method=req.method, url=f"http://{req.headers['Host']}{req.path}", data=req.body,
                          headers={n: req.headers[n] for n in names})
    received.context["timestamp"] = req.headers["X-Amz-Date"]
    assert req.headers["X-Amz-Date"][:8] == match["date"]
    signer = SigV4Auth(Credentials(AWS["AWS_ACCESS_KEY_ID"], secret, AWS["AWS_SESSION_TOKEN"]), "ses",
                       AWS["AWS_REGION"])
    return match["sig"], signer.signature(signer.string_to_sign(received, signer.canonical_request(received)),
                                          received)


def ses_check(req: Recorded) -> list[dict[str, Any]]:
    assert (req.method, req.path) == ("POST", "/v2/email/outbound-emails")
    sent, expected = sigv4_expected(req)
    assert sent == expected, "SigV4 signature does not verify"
    assert req.headers["X-Amz-Security-Token"] == AWS["AWS_SESSION_TOKEN"]
    body = req.json()
    assert set(body) == {"FromEmailAddress", "Destination", "Content"}
    assert set(body["Content"]) == {"Raw"} and len(body["Destination"]["ToAddresses"]) == 1
    return [body]


def ses_ok(req: Recorded) -> Reply:
    (body,) = ses_check(req)
    return reply(200, {"MessageId": provider_id(body["Destination"]["ToAddresses"][0])})


# ---- the table ------------------------------------------------------------------------
@dataclass
class Spec:
    cls: type[HTTPTransport]
    env: Callable[[str], dict[str, str]]
    ok: Callable[[Recorded], Reply]
    recipients: Callable[[Recorded], list[str]]
    #: A 401/403 as documented, echoing the secret so the test can catch a leak.
    unauthorized: Reply
    #: A validation error as documented, and a phrase of it the result must keep.
    invalid: Reply
    invalid_text: str
    secret: str = KEY
    reads_body: bool = True
    #: The provider answers one id for a whole request (its first reader's, in the fakes).
    one_id_per_request: bool = False

    @property
    def name(self) -> str:
        return self.cls.name


SPECS = {s.name: s for s in [
    Spec(PostmarkTransport, lambda url: {"POSTMARK_SERVER_TOKEN": KEY, "POSTMARK_API_URL": url}, postmark_ok,
         lambda r: [email_of(m["To"]) for m in postmark_check(r)],
         reply(401, {"ErrorCode": 10, "Message": f"Bad or missing API token {KEY}"}),
         reply(422, {"ErrorCode": 402, "Message": "Received invalid JSON input."}), "ErrorCode 402: Received invalid"),
    Spec(ResendTransport, lambda url: {"RESEND_API_KEY": KEY, "RESEND_API_URL": url}, resend_ok,
         lambda r: [email_of(m["to"][0]) for m in resend_check(r)],
         reply(401, {"statusCode": 401, "name": "missing_api_key", "message": f"API key is invalid: {KEY}"}),
         reply(422, {"statusCode": 422, "name": "validation_error", "message": "Invalid `from` field."}),
         "Invalid `from` field"),
    Spec(SendGridTransport, lambda url: {"SENDGRID_API_KEY": KEY, "SENDGRID_API_URL": url}, sendgrid_ok,
         lambda r: [p["to"][0]["email"] for p in sendgrid_check(r)],
         reply(401, {"errors": [{"field": None, "message": f"The provided authorization grant is invalid, "
                                                            f"expired, or revoked ({KEY})"}]}),
         reply(400, {"errors": [{"field": "from.email", "message": "The from email does not contain a valid "
                                                                   "address.", "help": "http://sendgrid.com"}]}),
         "does not contain a valid address", reads_body=False, one_id_per_request=True),
    Spec(MailgunTransport, lambda url: {"MAILGUN_API_KEY": KEY, "MAILGUN_API_URL": url,
                                        "MAILGUN_DOMAIN": MAILGUN_DOMAIN}, mailgun_ok,
         lambda r: [m["to"] for m in mailgun_check(r)],
         reply(401, "Forbidden " + base64.b64encode(f"api:{KEY}".encode()).decode()),
         reply(400, {"message": "'to' parameter is not a valid address. please check documentation"}),
         "not a valid address", one_id_per_request=True),
    Spec(BrevoTransport, lambda url: {"BREVO_API_KEY": KEY, "BREVO_API_URL": url}, brevo_ok,
         lambda r: [b["to"][0]["email"] for b in brevo_check(r)],
         reply(401, {"code": "unauthorized", "message": f"Key not found: {KEY}"}),
         reply(400, {"code": "invalid_parameter", "message": "email is not valid in to"}), "email is not valid"),
    Spec(SESTransport, lambda url: {**AWS, "SES_API_URL": url}, ses_ok,
         lambda r: [b["Destination"]["ToAddresses"][0] for b in ses_check(r)],
         reply(403, {"message": f"The request signature we calculated does not match ({AWS['AWS_SECRET_ACCESS_KEY']})"},
               {"x-amzn-ErrorType": "InvalidSignatureException:http://internal.amazon.com/coral/com.amazon.coral/"}),
         reply(400, {"message": "Email address is not verified. The following identities failed the check in "
                                "region EU-WEST-1: news@example.org"}, {"x-amzn-ErrorType": "MessageRejected:"}),
         "MessageRejected: Email address is not verified", secret=AWS["AWS_SECRET_ACCESS_KEY"]),
]}

each_provider = pytest.mark.parametrize("spec", list(SPECS.values()), ids=list(SPECS))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.fromtimestamp(time.time(), timezone.utc))


@pytest.fixture
def build(fake_api, make_settings, clock):
    """``build(spec, url=None, env=None, **options)``: the transport as ``from_settings`` makes it,
    aimed at the fake API (or ``url``), with ``env`` added to the provider's settings, on the
    test's fake clock (rate-limit pauses take no wall time)."""
    made: list[HTTPTransport] = []

    def _build(spec: Spec, url: str | None = None, env: dict[str, str] | None = None,
               **options: Any) -> HTTPTransport:
        options.setdefault("clock", clock)
        options.setdefault("concurrency", 1)  # Brevo's pool is tested on its own
        transport = spec.cls.from_settings(make_settings({**spec.env(url or fake_api.url), **(env or {})}),
                                           **options)
        made.append(transport)
        return transport

    yield _build
    for transport in made:
        transport.close()


def two_chunks(spec: Spec) -> int:
    """Messages that need exactly two requests: the documented limit plus one."""
    return spec.cls.per_request + 1


def expected_ids(spec: Spec, messages: list, per_request: int | None = None) -> list[str]:
    """The ids the fakes hand out: per reader, or the first reader's for a whole request."""
    size = per_request or spec.cls.per_request
    if not spec.one_id_per_request:
        return [provider_id(m.to_email) for m in messages]
    return [provider_id(messages[i - i % size].to_email) for i in range(len(messages))]


# ---- shared behaviour, every provider ---------------------------------------------------
@each_provider
def test_success_maps_provider_ids_in_order(spec, fake_api, build, make_messages):
    # Each checker above asserts its provider's documented request; ids come from the documented reply.
    fake_api.handler = spec.ok
    messages = make_messages(3)
    results = build(spec).send(messages)
    assert [r.recipient for r in results] == [m.to_email for m in messages]
    assert all(r.status is Status.SENT and r.error is None and not r.bounce for r in results)
    assert [r.provider_id for r in results] == expected_ids(spec, messages)
    assert len(fake_api.requests) == -(-3 // spec.cls.per_request)


@each_provider
def test_batch_is_split_at_the_documented_limit(spec, fake_api, build, make_messages):
    # Limits: Postmark batch 500, Resend batch 100 (batch docs above); the others send one message a request.
    fake_api.handler = spec.ok
    messages = make_messages(two_chunks(spec))
    results = build(spec).send(messages)
    assert [len(spec.recipients(r)) for r in fake_api.requests] == [spec.cls.per_request, 1]
    assert [e for r in fake_api.requests for e in spec.recipients(r)] == [m.to_email for m in messages]
    assert [r.provider_id for r in results] == expected_ids(spec, messages)


@each_provider
def test_one_request_per_message_apis_still_take_a_batch(spec, fake_api, build, make_messages):
    # SendGrid/Mailgun/Brevo/SES take one message a request (see each module's docstring for why).
    fake_api.handler = spec.ok
    transport = build(spec)
    assert spec.cls.max_batch >= spec.cls.per_request
    results = transport.send(make_messages(min(transport.max_batch, 7)))
    assert all(r.status is Status.SENT for r in results)


@each_provider
def test_persistent_429_is_waited_out_then_reported_as_rate_limited(spec, fake_api, build, make_messages, clock):
    # RFC 9110 10.2.3 Retry-After (delay-seconds); rate limits: Postmark API overview "429", Resend
    # "Rate limit", SendGrid errors "429", Mailgun response codes "429", SESv2 TooManyRequestsException.
    # A 429 is a pacing signal: the same request goes again after Retry-After, a bounded number of times.
    fake_api.handler = lambda req: reply(429, {"message": "Too many requests"}, {"Retry-After": "30"})
    results = build(spec).send(make_messages(two_chunks(spec)))
    assert len(fake_api.requests) == RETRIES + 1  # the same first request; the second never attempted
    assert len({tuple(spec.recipients(r)) for r in fake_api.requests}) == 1
    assert sum(s for s in clock.sleeps) >= 30 * RETRIES  # each Retry-After honoured (on the fake clock)
    assert {r.status for r in results} == {Status.FAILED_TEMPORARY}
    assert all(r.rate_limited for r in results)  # the engine defers them without counting an attempt
    assert {r.retry_after for r in results} == {30.0}
    assert "429" in results[0].error and "Too many requests" in results[0].error
    assert "not attempted" in results[-1].error and not results[-1].attempted and results[0].attempted


@each_provider
def test_429_then_success_is_absorbed(spec, fake_api, build, make_messages, clock):
    # A rate limit that clears within the bounded waits never reaches the engine.
    answers = iter([reply(429, {"message": "slow down"}, {"Retry-After": "2"})])
    fake_api.handler = lambda req: next(answers, None) or spec.ok(req)
    results = build(spec).send(make_messages(1))
    assert [r.status for r in results] == [Status.SENT] and not results[0].rate_limited
    assert [spec.recipients(r) for r in fake_api.requests] == [["reader0@example.com"]] * 2
    assert clock.monotonic() >= 2.0


@each_provider
def test_429_asking_for_a_long_wait_is_handed_to_the_engine(spec, fake_api, build, make_messages, clock):
    # RFC 9110 10.2.3: Retry-After may be an HTTP-date instead of seconds. Longer than the
    # transport's bounded pause: reported at once, for the engine to defer the readers.
    when = formatdate(clock.now().timestamp() + 120, usegmt=True)
    fake_api.handler = lambda req: reply(429, None, {"Retry-After": when})
    (result,) = build(spec).send(make_messages(1))
    assert len(fake_api.requests) == 1
    assert result.status is Status.FAILED_TEMPORARY and result.rate_limited
    assert 100 <= result.retry_after <= 121


@each_provider
@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_temporary(spec, status, fake_api, build, make_messages):
    # Every provider's error docs: 5xx is a server-side error worth retrying (Mailgun: "Retries are recommended").
    fake_api.handler = lambda req: reply(status, {"message": "Internal Server Error"})
    results = build(spec).send(make_messages(2))
    assert {r.status for r in results} == {Status.FAILED_TEMPORARY}
    assert results[0].retry_after is None and f"HTTP {status}" in results[0].error


@each_provider
def test_unauthorized_raises_transport_error_and_never_shows_the_secret(spec, fake_api, build, make_messages):
    # 401 bodies as documented (Postmark ErrorCode 10, SendGrid "authorization grant is invalid", Brevo
    # "Key not found", Mailgun "Forbidden", SES InvalidSignatureException 403), here echoing the secret.
    # A refused login is the account's problem: no recipient may be marked failed for it.
    fake_api.handler = lambda req: spec.unauthorized
    transport = build(spec)
    with pytest.raises(TransportError) as err:
        transport.send(make_messages(two_chunks(spec)))
    assert len(fake_api.requests) == 1  # a refused login refuses the rest too
    message = err.value.format_message()
    assert str(spec.unauthorized[0]) in message and "***" in message  # the echoed secret was scrubbed
    for text in (message, repr(transport), repr(vars(transport))):
        assert spec.secret not in text


@each_provider
def test_unauthorized_after_a_sent_chunk_keeps_the_sent_ones(spec, fake_api, build, make_messages):
    calls = []

    def first_ok_then_refused(req):
        calls.append(req)
        return spec.ok(req) if len(calls) == 1 else spec.unauthorized

    fake_api.handler = first_ok_then_refused
    results = build(spec).send(make_messages(two_chunks(spec)))
    statuses = [r.status for r in results]
    assert Status.SENT in statuses and Status.FAILED_PERMANENT not in statuses
    assert statuses[-1] is Status.FAILED_TEMPORARY


@each_provider
def test_validation_error_is_permanent_with_the_providers_message(spec, fake_api, build, make_messages):
    # Validation errors as documented: Postmark 422 {ErrorCode, Message}, Resend 422 validation_error,
    # SendGrid 400 {errors: [{field, message}]}, Mailgun 400 {message}, Brevo 400 {code, message}, SES MessageRejected.
    fake_api.handler = lambda req: spec.invalid
    (alone,) = build(spec).send(make_messages(1))
    assert alone.status is Status.FAILED_PERMANENT and spec.invalid_text in alone.error and not alone.bounce
    fake_api.requests.clear()
    from newsletter.smtp_status import SAME_ANSWER_RUN

    count = max(two_chunks(spec), SAME_ANSWER_RUN)
    results = build(spec).send(make_messages(count))
    per = spec.cls.per_request
    assert len(fake_api.requests) == -(-count // per)  # a bad request says nothing about the next one
    # ...but the same refusal for every reader is about what we send, not about them (review):
    # charged to nobody, the provider's words kept, and the engine holds the delivery.
    assert {(r.status, r.about_sender) for r in results} == {(Status.FAILED_TEMPORARY, True)}
    assert spec.invalid_text in results[0].error and "readers in a row" in results[0].error
    assert not any(r.bounce for r in results)


def test_a_providers_error_text_reaches_us_without_control_characters(fake_api, build, make_messages):
    # A test send prints the transport's error as it is: a reply with terminal escapes or line
    # breaks must come out as one plain line (README: control characters never appear).
    fake_api.handler = lambda req: reply(422, {"name": "validation_error",
                                               "message": "bad\x1b[2J address\r\nX-Injected: yes"})
    results = build(SPECS["resend"]).send(make_messages(1))
    assert results[0].status is Status.FAILED_PERMANENT
    assert "bad" in results[0].error and "X-Injected" in results[0].error
    assert not any(c in results[0].error for c in "\x1b\r\n")


@each_provider
def test_read_timeout_is_uncertain_and_bounded(spec, fake_api, build, make_messages):
    # Not a provider's doc: our contract (connect 10 s, read 30 s by default; never hang a send).
    # The request went out, so the provider may have accepted it: uncertain, for the ledger's policy;
    # the requests never attempted after it are plainly not sent yet.
    def slow(req: Recorded) -> Reply:
        time.sleep(0.1)
        return spec.ok(req)

    fake_api.handler = slow
    messages = make_messages(two_chunks(spec))
    results = build(spec, timeout=(1.0, 0.02)).send(messages)
    first = spec.cls.per_request
    assert {r.status for r in results[:first]} == {Status.UNCERTAIN}
    assert {r.status for r in results[first:]} == {Status.FAILED_TEMPORARY}
    assert "timeout" in results[0].error
    for _ in range(100):  # the server records a request once it has read it, maybe after we gave up
        if fake_api.requests:
            break
        time.sleep(0.05)
    assert len(fake_api.requests) == 1


@each_provider
def test_connection_refused_is_temporary(spec, build, make_messages, closed_port_url):
    # Not a provider's doc: a refused connection is a network failure, retried later.
    results = build(spec, url=closed_port_url).send(make_messages(2))
    assert {r.status for r in results} == {Status.FAILED_TEMPORARY}
    assert "ConnectionError" in results[0].error and spec.secret not in results[0].error


@each_provider
def test_unreadable_success_reply_is_not_counted_as_sent(spec, fake_api, build, make_messages):
    # Each provider documents a JSON 2xx reply; a proxy's HTML page in its place proves nothing was accepted.
    if not spec.reads_body:
        pytest.skip(f"{spec.name} reads its id from a header, not the body")
    fake_api.handler = lambda req: reply(200, "<html>gateway says hi</html>")
    results = build(spec).send(make_messages(2))
    assert {r.status for r in results} == {Status.UNCERTAIN}  # never counted as sent, never blindly resent
    assert "unreadable" in results[0].error


@each_provider
def test_empty_batch_sends_nothing(spec, fake_api, build):
    # Transport contract (base.py): one result per message, none for none.
    assert build(spec).send([]) == []
    assert fake_api.requests == []


@each_provider
def test_default_url_and_lookup_by_name(spec, make_settings):
    # Base URLs: api.postmarkapp.com (Postmark API overview "Endpoint URL"), api.resend.com, api.sendgrid.com,
    # api.mailgun.net (Mailgun "Servers"), api.brevo.com/v3, email.<region>.amazonaws.com (SES endpoints).
    env = {k: v for k, v in spec.env("unused").items() if not k.endswith("_API_URL")}
    transport = get_transport(make_settings(env), spec.name)
    assert type(transport) is spec.cls
    default = "https://email.eu-west-1.amazonaws.com" if spec.cls is SESTransport else spec.cls.default_api_url
    assert transport.url == default + spec.cls.path.format(self=transport)
    assert transport.url.startswith("https://")


@each_provider
def test_missing_secret_is_a_config_error_naming_the_setting(spec, make_settings):
    # Our settings contract (config.Settings.require): name the key, never its value.
    env = spec.env("http://127.0.0.1:9")
    secret_setting = next(k for k, v in env.items() if v == spec.secret)
    del env[secret_setting]
    with pytest.raises(ConfigError, match=secret_setting):
        spec.cls.from_settings(make_settings(env))


def test_retry_after_parsing():
    # RFC 9110 10.2.3 Retry-After: HTTP-date / delay-seconds.
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 60) == 60.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 + 60) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None and parse_retry_after("inf") is None
    assert parse_retry_after(None) is None


def send_with_keys(fake_api, build, make_messages, name: str, count: int, keys: list[str]) -> list[Recorded]:
    """Send the same ``count`` messages once per idempotency key; the requests the server saw."""
    spec = SPECS[name]
    fake_api.handler = spec.ok
    transport = build(spec)
    messages = make_messages(count)
    for key in keys:
        transport.send(messages, idempotency_key=key)
    return fake_api.requests


# ---- Postmark ---------------------------------------------------------------------------
def test_postmark_request_fields(fake_api, build, make_messages):
    # Postmark "Send batch emails" request example: From/To/Subject/HtmlBody/TextBody/MessageStream;
    # "Send a single email" body fields for ReplyTo and Headers [{Name, Value}].
    fake_api.handler = postmark_ok
    messages = make_messages(2)
    build(SPECS["postmark"]).send(messages)
    sent = fake_api.requests[0].json()
    for item, m in zip(sent, messages, strict=True):
        assert item == {
            "From": "Test Weekly <news@example.org>",
            "To": "Reader 1 <reader1@example.com>" if m.recipient.name else m.to_email,
            "Subject": "First issue: hello",
            "HtmlBody": m.html,
            "TextBody": m.text,
            "ReplyTo": "editor@example.org",
            "Headers": [{"Name": k, "Value": v} for k, v in m.extra_headers.items()],
            "MessageStream": "broadcast",
        }
        assert "https://news.example.org/unsubscribe/tok" in item["HtmlBody"]
        assert {h["Name"] for h in item["Headers"]} >= {"Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post"}


def test_postmark_message_stream_setting(fake_api, build, make_messages):
    # Postmark batch docs: "use the MessageStream field to set your sending Stream".
    fake_api.handler = postmark_ok
    build(SPECS["postmark"], env={"POSTMARK_MESSAGE_STREAM": "weekly-digest"}).send(make_messages(1))
    assert fake_api.requests[0].json()[0]["MessageStream"] == "weekly-digest"


def test_postmark_per_message_errors_in_a_200_reply(fake_api, build, make_messages):
    # Batch docs: "the /batch endpoint will return a 200-level http status, even when validation
    # for individual messages may fail"; API overview error codes: 300 Invalid email request,
    # 406 Inactive recipient, 429 Rate limit exceeded, 405 Not allowed to send.
    errors = {
        1: {"ErrorCode": 406, "Message": "You tried to send to a recipient that has been marked as inactive. "
                                         "Found inactive addresses: reader1@example.com."},
        2: {"ErrorCode": 300, "Message": "Invalid 'Headers' value: header 'X-Bad' is not allowed."},
        3: {"ErrorCode": 429, "Message": "Rate limit exceeded."},
        4: {"ErrorCode": 405, "Message": "Not allowed to send: account has run out of credits."},
    }

    def answer(req: Recorded) -> Reply:
        ok = postmark_ok(req)[1]
        return reply(200, [errors.get(i, entry) for i, entry in enumerate(ok)])

    fake_api.handler = answer
    results = build(SPECS["postmark"]).send(make_messages(6))
    assert [r.status for r in results] == [Status.SENT, Status.FAILED_PERMANENT, Status.FAILED_PERMANENT,
                                           Status.FAILED_TEMPORARY, Status.FAILED_PERMANENT, Status.SENT]
    # 300 "Invalid email request" is the message's fault, not the reader's: never a bounce.
    assert [r.bounce for r in results] == [False, True, False, False, False, False]
    assert [r.rate_limited for r in results] == [False, False, False, True, False, False]
    assert "ErrorCode 406" in results[1].error and "inactive" in results[1].error
    assert "ErrorCode 300" in results[2].error
    assert [results[0].provider_id, results[5].provider_id] == [provider_id("reader0@example.com"),
                                                                provider_id("reader5@example.com")]
    assert all(results[i].provider_id is None for i in errors)


def test_postmark_reply_of_the_wrong_length_is_not_trusted(fake_api, build, make_messages):
    # Postmark batch docs: the reply is "a matching JSON array"; one that does not match is not trusted.
    fake_api.handler = lambda req: reply(200, postmark_ok(req)[1][:-1])
    results = build(SPECS["postmark"]).send(make_messages(3))
    assert {r.status for r in results} == {Status.UNCERTAIN}


# ---- Resend -----------------------------------------------------------------------------
def test_resend_request_fields(fake_api, build, make_messages):
    # Resend "Send Batch Emails" body parameters: from, to, subject, html, text, reply_to, headers.
    fake_api.handler = resend_ok
    messages = make_messages(2)
    build(SPECS["resend"]).send(messages)
    for item, m in zip(fake_api.requests[0].json(), messages, strict=True):
        assert item == {
            "from": "Test Weekly <news@example.org>",
            "to": ["Reader 1 <reader1@example.com>" if m.recipient.name else m.to_email],
            "subject": "First issue: hello",
            "html": m.html,
            "text": m.text,
            "reply_to": "editor@example.org",
            "headers": m.extra_headers,
        }
    assert "Idempotency-Key" not in fake_api.requests[0].headers


def test_resend_idempotency_key_per_chunk_is_stable_across_retries(fake_api, build, make_messages):
    # Resend "Idempotency Keys": Idempotency-Key header, up to 256 characters, POST /emails/batch too.
    sent = send_with_keys(fake_api, build, make_messages, "resend", 101,
                          ["issue-7/batch-3", "issue-7/batch-3", "issue-7/batch-4"])
    keys = [r.headers["Idempotency-Key"] for r in sent]
    assert keys == ["issue-7/batch-3-0", "issue-7/batch-3-1"] * 2 + ["issue-7/batch-4-0", "issue-7/batch-4-1"]


def test_resend_permissive_errors_map_to_their_recipients(fake_api, build, make_messages):
    # Batch validation modes, permissive: "data" holds the created emails, "errors" [{index, message}].
    def answer(req: Recorded) -> Reply:
        batch = resend_check(req)
        return reply(200, {
            "data": [{"id": provider_id(email_of(m["to"][0]))} for i, m in enumerate(batch) if i not in (1, 3)],
            "errors": [{"index": 1, "message": "The `to` field must be a valid email address."},
                       {"index": 3, "message": "The `html` field is too large."}],
        })

    fake_api.handler = answer
    results = build(SPECS["resend"]).send(make_messages(5))
    assert [r.status for r in results] == [Status.SENT, Status.FAILED_PERMANENT, Status.SENT,
                                           Status.FAILED_PERMANENT, Status.SENT]
    assert [r.provider_id for r in results] == [provider_id("reader0@example.com"), None,
                                                provider_id("reader2@example.com"), None,
                                                provider_id("reader4@example.com")]
    assert "`to` field" in results[1].error and "`html` field" in results[3].error


# ---- SendGrid ---------------------------------------------------------------------------
def tricky_messages(make_messages) -> list:
    """Readers whose names need HTML escaping, and one whose name is itself a placeholder."""
    messages = make_messages(3)
    names = ["Tom & Jerry <3", 'Ann "A" O\'Neil', "%%EMAIL%%"]
    return [m.prepared.personalise(replace(m.recipient, name=n)) for m, n in zip(messages, names)]


def test_sendgrid_batch_keeps_each_readers_own_message(fake_api, build, make_messages):
    # Personalizations doc: each personalization has its own to, headers and substitutions;
    # substitution-tags doc: values replace tags in the body (and subject), strings only.
    fake_api.handler = sendgrid_ok
    messages = make_messages(4, start=1)
    results = build(SPECS["sendgrid"]).send(messages)
    (req,) = fake_api.requests
    body = req.json()
    assert body["from"] == {"email": "news@example.org", "name": "Test Weekly"}
    assert body["reply_to"] == {"email": "editor@example.org"} and body["subject"] == "First issue: hello"
    text, html = (c["value"] for c in body["content"])
    assert "%%NAME%%" not in text + html  # our placeholders became SendGrid tags
    for person, m in zip(body["personalizations"], messages, strict=True):
        assert person["to"] == [{"email": m.to_email, "name": m.recipient.name} if m.recipient.name
                                else {"email": m.to_email}]
        assert person["headers"] == m.extra_headers  # own Message-ID and List-Unsubscribe
        assert all(isinstance(v, str) for v in person["substitutions"].values())
        assert substitute(text, person["substitutions"]) == m.text
        assert substitute(html, person["substitutions"]) == m.html
    assert {r.provider_id for r in results} == {provider_id(messages[0].to_email)}


def test_sendgrid_builds_each_readers_merge_values_once(fake_api, build, make_messages, monkeypatch):
    # The size check (plan) and the personalization (payload) share one computation per reader.
    import newsletter.transports.sendgrid as sendgrid

    built: list[str] = []
    real = sendgrid.merge_values

    def counting(msg, tag):
        built.append(msg.to_email)
        return real(msg, tag)

    monkeypatch.setattr(sendgrid, "merge_values", counting)
    fake_api.handler = sendgrid_ok
    messages = [*tricky_messages(make_messages), *make_messages(4, start=3)]  # the third reader goes alone
    results = build(SPECS["sendgrid"]).send(messages)
    assert [r.status for r in results] == [Status.SENT] * 7
    assert sorted(built) == sorted(m.to_email for m in messages)
    assert [len(sendgrid_check(r)) for r in fake_api.requests] == [2, 1, 4]


def test_sendgrid_escapes_html_values_and_sends_an_unsafe_value_alone(fake_api, build, make_messages):
    # A value holding a tag delimiter could be substituted again: that reader goes alone, with
    # the body personalised here (Mail Send: one personalization, plain content).
    fake_api.handler = sendgrid_ok
    messages = tricky_messages(make_messages)
    results = build(SPECS["sendgrid"]).send(messages)
    assert [len(sendgrid_check(r)) for r in fake_api.requests] == [2, 1]
    batch, alone = (r.json() for r in fake_api.requests)
    text, html = (c["value"] for c in batch["content"])
    for person, m in zip(batch["personalizations"], messages[:2], strict=True):
        assert substitute(html, person["substitutions"]) == m.html
        assert substitute(text, person["substitutions"]) == m.text
    assert "Tom &amp; Jerry &lt;3" in messages[0].html
    assert "substitutions" not in alone["personalizations"][0]
    assert [c["value"] for c in alone["content"]] == [messages[2].text, messages[2].html]
    assert all(r.status is Status.SENT for r in results)


# ---- Mailgun ----------------------------------------------------------------------------
def test_mailgun_batch_keeps_each_readers_own_message(fake_api, build, make_messages):
    # Batch sending: one "to" per reader, recipient-variables keyed by address, %recipient.<key>%
    # replaced in the body and in h: header values.
    fake_api.handler = mailgun_ok
    messages = make_messages(3, start=1)
    results = build(SPECS["mailgun"]).send(messages)
    (req,) = fake_api.requests
    fields = req.fields()
    single = dict(fields)
    assert single["from"] == "Test Weekly <news@example.org>" and single["subject"] == "First issue: hello"
    assert single["h:Reply-To"] == "editor@example.org"
    assert [v for k, v in fields if k == "to"] == [address_of(m) for m in messages]
    variables = json.loads(single["recipient-variables"])
    for m in messages:
        subs = {f"%recipient.{k}%": v for k, v in variables[m.to_email].items()}
        assert substitute(single["text"], subs) == m.text
        assert substitute(single["html"], subs) == m.html
        headers = {k[2:]: substitute(v, subs) for k, v in fields if k.startswith("h:")}
        assert {k: headers[k] for k in m.extra_headers} == m.extra_headers
    assert {r.provider_id for r in results} == {provider_id(messages[0].to_email)}


def address_of(m) -> str:
    from email.utils import formataddr

    return formataddr((m.recipient.name, m.to_email)) if m.recipient.name else m.to_email


def test_mailgun_sends_an_unsafe_reader_alone_as_our_exact_mime(fake_api, build, make_messages):
    # "Send an email in MIME format": the "message" part is our MIME, sent as a file.
    fake_api.handler = mailgun_ok
    messages = make_messages(2)
    odd = messages[1].prepared.personalise(replace(messages[1].recipient, name="%recipient.text_email%"))
    build(SPECS["mailgun"]).send([messages[0], odd])
    assert [r.path.rsplit("/", 1)[1] for r in fake_api.requests] == ["messages", "messages.mime"]
    form = fake_api.requests[1].form()
    assert form["to"][1] == odd.to_email.encode()
    assert form["message"][1] == odd.as_bytes()
    assert form["message"][0].get_content_type() == "application/octet-stream"  # a file part, as curl -F sends it


def test_mailgun_needs_its_domain(make_settings):
    # Mailgun messages.mime path: /v3/{domain_name}/messages.mime needs the sending domain.
    with pytest.raises(ConfigError, match="MAILGUN_DOMAIN"):
        MailgunTransport.from_settings(make_settings({"MAILGUN_API_KEY": KEY}))


# ---- Brevo ------------------------------------------------------------------------------
def test_brevo_request_fields(fake_api, build, make_messages):
    # Brevo "Send a transactional email" body parameters.
    fake_api.handler = brevo_ok
    (m,) = make_messages(1, start=1)
    (result,) = build(SPECS["brevo"]).send([m])
    assert fake_api.requests[0].json() == {
        "sender": {"email": "news@example.org", "name": "Test Weekly"},
        "to": [{"email": "reader1@example.com", "name": "Reader 1"}],
        "subject": "First issue: hello",
        "htmlContent": m.html,
        "textContent": m.text,
        "replyTo": {"email": "editor@example.org"},
        "headers": {k: v for k, v in m.extra_headers.items() if k != "Message-ID"},  # standard: Brevo makes its own
    }
    assert result.provider_id == provider_id("reader1@example.com")


def test_brevo_idempotency_key_is_a_stable_uuid_per_request(fake_api, build, make_messages):
    # Brevo "Idempotency for batch emails": an idempotencyKey entry in the JSON "headers",
    # which must be a UUID; there is no idempotency HTTP header.
    sent = send_with_keys(fake_api, build, make_messages, "brevo", 2, ["issue-7/batch-3", "issue-7/batch-3"])
    keys = [r.json()["headers"]["idempotencyKey"] for r in sent]
    assert all(str(uuid.UUID(k)) == k for k in keys)
    assert keys[:2] == keys[2:] and keys[0] != keys[1]
    assert not any(name.lower().startswith("idempotency") for name in fake_api.requests[0].headers.keys())


# ---- Amazon SES -------------------------------------------------------------------------
@pytest.fixture
def fixed_clock(monkeypatch):
    import botocore.auth

    fixed = datetime(2024, 5, 17, 9, 30, 0, tzinfo=timezone.utc)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: fixed.replace(tzinfo=None))
    return fixed


def test_ses_is_sigv4_signed_and_carries_our_raw_bytes(fake_api, build, make_messages, fixed_clock):
    # SESv2 SendEmail "Request Syntax" (Content.Raw.Data, Destination.ToAddresses, FromEmailAddress);
    # IAM user guide "Signature Version 4": Authorization and X-Amz-Date headers.
    fake_api.handler = ses_ok
    messages = make_messages(2)
    results = build(SPECS["ses"]).send(messages)
    assert [r.status for r in results] == [Status.SENT, Status.SENT]
    for req, m in zip(fake_api.requests, messages, strict=True):
        assert req.headers["X-Amz-Date"] == "20240517T093000Z"
        assert "/20240517/eu-west-1/ses/aws4_request" in req.headers["Authorization"]
        body = req.json()
        assert base64.b64decode(body["Content"]["Raw"]["Data"]) == m.as_bytes()
        assert body["Destination"] == {"ToAddresses": [m.to_email]}
        assert body["FromEmailAddress"] == "news@example.org"


def test_ses_signature_check_is_not_vacuous(fake_api, build, make_messages):
    # The server-side SigV4 check must reject a changed body or a wrong secret.
    fake_api.handler = ses_ok
    build(SPECS["ses"]).send(make_messages(1))
    (req,) = fake_api.requests
    sent, expected = sigv4_expected(req)
    assert sent == expected
    tampered = replace(req, body=req.body.replace(b"reader0", b"reader9"))
    assert sigv4_expected(tampered)[0] != sigv4_expected(tampered)[1]
    assert sigv4_expected(req, secret="not-the-secret")[1] != sent


def test_ses_debug_logs_do_not_show_credentials(fake_api, build, make_messages, caplog):
    # botocore.auth logs the canonical request (with X-Amz-Security-Token) at DEBUG; we filter it.
    fake_api.handler = ses_ok
    with caplog.at_level(logging.DEBUG):
        build(SPECS["ses"]).send(make_messages(1))
    assert fake_api.requests and caplog.records  # debug logging really was on
    assert AWS["AWS_SESSION_TOKEN"] not in caplog.text
    assert AWS["AWS_SECRET_ACCESS_KEY"] not in caplog.text


@pytest.mark.parametrize("error_type, status", [("LimitExceededException", Status.FAILED_TEMPORARY),
                                                ("SendingPausedException", Status.FAILED_PERMANENT)])
def test_ses_error_types(error_type, status, fake_api, build, make_messages):
    # SESv2 SendEmail "Errors": both are HTTP 400; a quota is worth retrying, a paused account is not.
    fake_api.handler = lambda req: reply(400, {"message": "Daily message quota exceeded."},
                                         {"x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/"})
    (result,) = build(SPECS["ses"]).send(make_messages(1))
    assert result.status is status and error_type in result.error


def test_ses_without_session_token_signs_without_it(fake_api, make_settings, make_messages):
    # SigV4: X-Amz-Security-Token only with temporary credentials (AWS_SESSION_TOKEN).
    env = {**AWS, "SES_API_URL": fake_api.url}
    del env["AWS_SESSION_TOKEN"]
    fake_api.handler = lambda req: reply(200, {"MessageId": "x"})
    with SESTransport.from_settings(make_settings(env)) as transport:
        (result,) = transport.send(make_messages(1))
    assert result.status is Status.SENT
    assert "X-Amz-Security-Token" not in fake_api.requests[0].headers
    assert "x-amz-security-token" not in fake_api.requests[0].headers["Authorization"]


def test_session_is_reused_across_requests(fake_api, build, make_messages):
    # requests "Session Objects": connection pooling across requests; close() is safe twice.
    fake_api.handler = ses_ok
    transport = build(SPECS["ses"])
    transport.send(make_messages(3))
    session = transport.session
    transport.send(make_messages(1))
    assert transport.session is session
    transport.close()
    transport.close()  # safe twice
    assert [r.status for r in transport.send(make_messages(1))] == [Status.SENT]  # a new session after close


def test_a_request_that_cannot_be_built_keeps_the_other_results(fake_api, build, make_messages, monkeypatch):
    # Whatever raises while a request is built (before any byte of it left), the results of the
    # requests already answered must come back: losing them would resend those readers.
    spec = SPECS["resend"]
    fake_api.handler = spec.ok
    transport = build(spec)
    original = transport.build_payload
    calls = []

    def second_fails(chunk, key):
        calls.append(key)
        if len(calls) == 2:
            raise ValueError(f"header value refused: {KEY}")
        return original(chunk, key)

    monkeypatch.setattr(transport, "build_payload", second_fails)
    results = transport.send(make_messages(two_chunks(spec)), idempotency_key="nl-1-1")
    assert [r.status for r in results[:100]] == [Status.SENT] * 100
    assert results[100].status is Status.FAILED_TEMPORARY and "could not build" in results[100].error
    assert KEY not in results[100].error and len(fake_api.requests) == 1


def test_mailgun_sends_a_mixed_case_address_alone(fake_api, build, make_messages):
    # recipient-variables are keyed by address; a reader whose address has capitals goes alone
    # (our exact MIME), so no spelling mismatch can leave their unsubscribe link unfilled.
    fake_api.handler = mailgun_ok
    first, second = make_messages(2)
    upper = second.prepared.personalise(replace(second.recipient, email="Reader.One@example.com"))
    build(SPECS["mailgun"]).send([first, upper])
    assert [r.path.rsplit("/", 1)[1] for r in fake_api.requests] == ["messages", "messages.mime"]


def test_brevo_key_follows_the_reader_across_batches_not_across_deliveries(fake_api, build, make_messages):
    # A reader whose answer was lost may be retried in another batch (the engine regroups partial
    # retries): Brevo must still see the same key for them, and a different one in another delivery.
    fake_api.handler = brevo_ok
    transport = build(SPECS["brevo"])
    a, b = make_messages(2)
    for key, batch in (("nl-f00d-7-3", [a, b]), ("nl-f00d-7-9", [b]), ("nl-beef-8-3", [a])):
        transport.send(batch, idempotency_key=key)
    keys = [(r.json()["to"][0]["email"], r.json()["headers"]["idempotencyKey"]) for r in fake_api.requests]
    assert keys[1][1] == keys[2][1]  # reader b, batches 3 and 9 of delivery 7: one key
    assert keys[0][1] != keys[1][1]  # readers a and b differ
    assert keys[3][1] != keys[0][1]  # reader a in another delivery (another nonce): another key


def test_an_oversized_success_reply_is_not_trusted_nor_held(fake_api, build, make_messages):
    # Bounded memory: a reply larger than any provider sends (a broken proxy) is read only up to
    # a limit, and a 2xx we cannot read proves nothing about which messages were accepted.
    from newsletter.transports.http import MAX_REPLY

    fake_api.handler = lambda req: reply(200, {"data": [{"id": "x" * (MAX_REPLY + 10)}]})
    results = build(SPECS["resend"]).send(make_messages(1))
    assert [r.status for r in results] == [Status.UNCERTAIN]


@pytest.mark.parametrize("name", ["ses", "mailgun"])
def test_a_reader_whose_message_cannot_be_built_fails_alone(name, fake_api, build, make_messages):
    # An address stored before imports checked it (an IDNA domain) cannot be put in our MIME
    # (SES and Mailgun's lone-message path send it): that reader fails for good, by themselves;
    # the readers after them in the call are still sent.
    spec = SPECS[name]
    fake_api.handler = spec.ok
    messages = make_messages(3)
    bad = messages[1].prepared.personalise(replace(messages[1].recipient, email="idn@bücher.example",
                                                   name="%recipient.x%"))
    results = build(spec).send([messages[0], bad, messages[2]])
    assert [r.recipient for r in results] == [messages[0].to_email, bad.to_email, messages[2].to_email]
    assert [r.status for r in results] == [Status.SENT, Status.FAILED_PERMANENT, Status.SENT]
    assert "not an ASCII address" in (results[1].error or "") and results[1].attempted
    assert not any(bad.to_email in r.body.decode("utf-8", "replace") for r in fake_api.requests)
