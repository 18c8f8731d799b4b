"""Every request the HTTP adapters make, checked against the provider's own published API
description (tests/provider_specs/, sources and licences in its README): single sends, batches
with awkward names and values, and the largest batch each provider takes.

The requests are the bytes the provider emulator received; :mod:`tests.transports.spec_check`
validates them with openapi-core, jsonschema or botocore. The checker itself is shown to refuse
requests the descriptions do not allow (the old url-encoded Mailgun body among them).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from email.message import Message

import pytest

from newsletter.clock import FakeClock
from newsletter.message import PreparedIssue, Recipient
from newsletter.transports import get_transport
from newsletter.transports.base import Status
from tests.provider_emulator import PROVIDERS, ProviderEmulator, env
from tests.transports import spec_check
from tests.transports.conftest import PUBLICATION, RENDERED, Recorded

START = datetime(2031, 3, 4, 9, 0, tzinfo=timezone.utc)
#: Names a reader may have: non-ASCII, RFC 5322 specials, quotes, a backslash, an emoji, a name
#: that looks like an address, and none.
NAMES = ["Bob Müller", "Müller, Bob", 'Ann "Nan" O\'Neil', "back\\slash", "😀 emoji", "x@y.org", "", "李 雷"]


def messages(count: int, *, start: int = 0) -> list:
    prepared = PreparedIssue(rendered=RENDERED, publication=PUBLICATION, secret_key="k")
    return [prepared.personalise(Recipient(f"reader{i}@example.com", NAMES[i % len(NAMES)], f"tok{i}"))
            for i in range(start, start + count)]


def send_through_emulator(provider: str, batch: list, make_settings) -> tuple[list, list[Recorded]]:
    with ProviderEmulator(provider, FakeClock(START)) as api:
        transport = get_transport(make_settings(env(provider, api.url)), provider, clock=api.clock, concurrency=1)
        try:
            results = transport.send(batch, idempotency_key="nl-abc-1-0")
        finally:
            transport.close()
        assert api.counters.bad == 0, api.counters.errors
    return results, [spec_check.recorded(r) for r in api.received]


def largest(provider: str) -> int:
    from newsletter.transports import transport_class

    return transport_class(provider).max_batch


CASES = {
    "single": lambda p: messages(1, start=1),
    "batch": lambda p: messages(len(NAMES) * 2),
    "largest batch": lambda p: messages(largest(p)),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("provider", PROVIDERS)
def test_every_request_is_valid_for_the_providers_own_description(provider, case, make_settings):
    batch = CASES[case](provider)
    results, requests = send_through_emulator(provider, batch, make_settings)
    assert [r.status for r in results] == [Status.SENT] * len(batch), [r.error for r in results if r.error]
    assert requests
    for req in requests:
        spec_check.check(provider, req)


def test_readers_sent_alone_are_valid_too(make_settings):
    # Mailgun sends a reader alone through messages.mime (a mixed-case address), SendGrid with the
    # personalised body (a value that cannot be substituted): those requests are checked as well.
    batch = messages(4)
    batch[1] = batch[1].prepared.personalise(Recipient("Mixed.Case@Example.com", "Müller, Bob", "tokX"))
    batch[2] = batch[2].prepared.personalise(Recipient("pct@example.com", "100%% sure", "tokY"))
    for provider in ("mailgun", "sendgrid"):
        results, requests = send_through_emulator(provider, batch, make_settings)
        assert all(r.status is Status.SENT for r in results)
        assert len(requests) > 1  # someone went alone
        for req in requests:
            spec_check.check(provider, req)


def test_display_names_travel_as_utf8_text_not_encoded_words(make_settings):
    batch = messages(len(NAMES))
    for provider in ("postmark", "resend", "mailgun", "sendgrid", "brevo"):
        _, requests = send_through_emulator(provider, batch, make_settings)
        req = requests[0]
        for each in requests:
            assert "=?utf-8?" not in each.body.decode("utf-8").lower(), provider
        if provider == "brevo":
            assert json.loads(req.body)["to"] == [{"email": "reader0@example.com", "name": "Bob Müller"}]
        if provider in ("postmark", "resend"):
            field = "To" if provider == "postmark" else "to"
            tos = [e[field] if provider == "postmark" else e[field][0] for e in json.loads(req.body)]
            assert tos[0] == "Bob Müller <reader0@example.com>"
            assert tos[1] == '"Müller, Bob" <reader1@example.com>'  # a comma is quoted: one mailbox
            assert tos[2] == '"Ann \\"Nan\\" O\'Neil" <reader2@example.com>'
            assert tos[6] == "reader6@example.com"
        if provider == "mailgun":
            tos = [v for k, v in req.fields() if k == "to"]
            assert tos[0] == "Bob Müller <reader0@example.com>" and tos[1] == '"Müller, Bob" <reader1@example.com>'


def test_sendgrid_leaves_out_a_name_its_api_refuses(make_settings):
    # "The to.name ... personalizations cannot include either the ; or , characters."
    _, (req,) = send_through_emulator("sendgrid", messages(3), make_settings)
    people = json.loads(req.body)["personalizations"]
    assert people[0]["to"] == [{"email": "reader0@example.com", "name": "Bob Müller"}]
    assert people[1]["to"] == [{"email": "reader1@example.com"}]


def test_brevo_headers_carry_no_standard_message_id(make_settings):
    _, (req,) = send_through_emulator("brevo", messages(1), make_settings)
    headers = json.loads(req.body)["headers"]
    assert "Message-ID" not in headers and "List-Unsubscribe" in headers and "idempotencyKey" in headers


# ---- the checker is not vacuous ---------------------------------------------------------
def valid_request(provider: str, make_settings) -> Recorded:
    return send_through_emulator(provider, messages(2), make_settings)[1][0]


def edited(req: Recorded, body: bytes | None = None, content_type: str | None = None,
           drop: str | None = None, path: str | None = None) -> Recorded:
    headers = Message()
    for name, value in req.headers.items():
        if name.lower() == (drop or "").lower():
            continue
        if content_type and name.lower() == "content-type":
            value = content_type
        headers[name] = value
    return Recorded(req.method, path or req.path, headers, req.body if body is None else body)


def json_edit(req: Recorded, change) -> Recorded:
    data = json.loads(req.body)
    change(data)
    return edited(req, json.dumps(data).encode())


BROKEN = {
    "postmark": [lambda r: json_edit(r, lambda d: d[0].update(To=["a@b.org"])),
                 lambda r: edited(r, drop="X-Postmark-Server-Token"),
                 lambda r: edited(r, path="/email/batchy")],
    "resend": [lambda r: json_edit(r, lambda d: d[0].update(to=[])),
               lambda r: json_edit(r, lambda d: d[0].pop("subject")),
               lambda r: edited(r, drop="Authorization")],
    "sendgrid": [lambda r: json_edit(r, lambda d: d.update(personalizations=[{"to": [{"name": "x"}]}])),
                 lambda r: edited(r, content_type="text/plain")],
    "mailgun": [lambda r: edited(r, body=b"from=a%40b.org&to=c%40d.org&subject=s&text=t",
                                 content_type="application/x-www-form-urlencoded"),
                lambda r: edited(r, drop="Authorization")],
    "brevo": [lambda r: json_edit(r, lambda d: d.update(to="reader@example.com")),
              lambda r: edited(r, drop="api-key")],
    "ses": [lambda r: json_edit(r, lambda d: d.update(Unknown=1)),
            lambda r: json_edit(r, lambda d: d["Content"]["Raw"].pop("Data")),
            lambda r: edited(r, path="/v1/email/outbound-emails")],
}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_check_refuses_what_the_description_does_not_allow(provider, make_settings):
    req = valid_request(provider, make_settings)
    spec_check.check(provider, req)
    for breaking in BROKEN[provider]:
        with pytest.raises(spec_check.SpecViolation):
            spec_check.check(provider, breaking(req))
