"""JSON providers post bodies escaped once per issue; the decoded requests equal the plain ones."""

from __future__ import annotations

import json
from typing import Any

import pytest

from newsletter.message import PreparedIssue, Recipient
from newsletter.transports.brevo import BrevoTransport
from newsletter.transports.http import RawJSON, json_body
from newsletter.transports.postmark import PostmarkTransport
from newsletter.transports.resend import ResendTransport
from newsletter.transports.sendgrid import SendGridTransport
from tests.transports.conftest import PUBLICATION, RENDERED

KEY = "key-5ecret-9f8e7d6c5b4a3210"
HOSTILE = ['Zoë "Q" \\ Lǐ 李', "</script><!--", "Müller, Bob", "😀 emoji", "\\u0000raw0\\u0000", ""]
#: Names no request carries: a control character is refused (the reader's message fails alone).
CONTROL = ["tab\there", "\u2028sep\u2029", "\x00raw0\x00", "CR\r\nBcc: x@y.org"]


def messages():
    prepared = PreparedIssue(rendered=RENDERED, publication=PUBLICATION, secret_key="k")
    return [prepared.personalise(Recipient(f"r{i}@example.com", name, f"tok{i}")) for i, name in enumerate(HOSTILE)]


def plain(value: Any) -> Any:
    """The payload as the providers built it before: every RawJSON decoded to its string."""
    if isinstance(value, RawJSON):
        return json.loads(b"".join(value.parts))
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def payloads(name: str, make_settings) -> list[tuple[Any, list]]:
    msgs = messages()
    env = {"POSTMARK_SERVER_TOKEN": KEY, "RESEND_API_KEY": KEY, "BREVO_API_KEY": KEY, "SENDGRID_API_KEY": KEY}
    if name == "postmark":
        return [(PostmarkTransport.from_settings(make_settings(env)).build_payload(msgs, None).json, msgs)]
    if name == "resend":
        return [(ResendTransport.from_settings(make_settings(env)).build_payload(msgs, "k").json, msgs)]
    if name == "brevo":
        t = BrevoTransport.from_settings(make_settings(env))
        return [(t.message_payload(m, "k").json, [m]) for m in msgs]
    t = SendGridTransport.from_settings(make_settings(env))
    return [(t.message_payload(m, None).json, [m]) for m in msgs]


FIELDS = {"postmark": ("HtmlBody", "TextBody"), "resend": ("html", "text"),
          "brevo": ("htmlContent", "textContent"), "sendgrid": None}


@pytest.mark.parametrize("name", list(FIELDS))
def test_decoded_request_equals_the_payload_with_plain_bodies(name, make_settings):
    for payload, msgs in payloads(name, make_settings):
        body = json_body(payload)
        assert json.loads(body) == plain(payload)
        entries = plain(payload) if isinstance(plain(payload), list) else [plain(payload)]
        for entry, m in zip(entries, msgs, strict=True):
            if FIELDS[name]:
                html, text = FIELDS[name]
                assert (entry[html], entry[text]) == (m.html, m.text)
            else:
                assert entry["content"] == [{"type": "text/plain", "value": m.text},
                                            {"type": "text/html", "value": m.html}]


@pytest.mark.parametrize("name", CONTROL)
def test_a_name_with_a_control_character_is_refused_not_sent(name):
    from newsletter.errors import InputError
    from newsletter.transports.http import address, mailbox

    for build in (address, mailbox):
        with pytest.raises(InputError):
            build(name, "r@example.com")


def test_a_value_shaped_like_a_marker_is_not_replaced():
    raw = RawJSON([b'"<p>', b'body</p>"'])
    payload = [{"Name": "\x00raw0\x00", "HtmlBody": raw}, {"Name": "\x000:0\x00", "HtmlBody": raw}]
    assert json.loads(json_body(payload)) == [{"Name": "\x00raw0\x00", "HtmlBody": "<p>body</p>"},
                                              {"Name": "\x000:0\x00", "HtmlBody": "<p>body</p>"}]


@pytest.mark.parametrize("size", [-1, 1, 100])
def test_a_body_streamed_from_its_pieces_is_the_joined_body(size, monkeypatch):
    """Requests are sent block by block from the pieces, never joined whole: same bytes, and
    ``complete`` only once the last byte has been handed out."""
    from newsletter.transports import http

    monkeypatch.setattr(http, "_SEND_BLOCK", 7)  # many blocks, each spanning pieces or cutting one
    payload = [{"To": name, "HtmlBody": RawJSON(m.html_json)} for name, m in zip(HOSTILE, messages())]
    pieces = http.json_pieces(payload)
    body = http._TrackedBody(pieces)
    assert len(body) == len(json_body(payload))
    blocks = []
    while block := body.read(size):
        assert not body.complete
        blocks.append(bytes(block))
    assert body.complete and b"".join(blocks) == json_body(payload)
    assert size < 0 or len(blocks) > 1
