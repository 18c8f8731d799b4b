"""The message builder: standards-correct, private, and equal to the slow reference build."""

from __future__ import annotations

import email
import email.utils
import re
from email import policy
from dataclasses import replace

import pytest

from newsletter.config import Publication
from newsletter.errors import HeaderInjectionError, InputError
from newsletter.addresses import validate_address
from newsletter.dkim import dkim_signer
from newsletter.message import PreparedIssue, Recipient, build_email_message

PUB = Publication(name="ChinAffairs+", from_email="newsletter@chinaffairs.example", reply_to="editors@chinaffairs.example",
                  base_url="https://chinaffairs.example", postal_address="Beijing")


def prepared(rendered, **kw) -> PreparedIssue:
    return PreparedIssue(rendered=rendered, publication=kw.pop("publication", PUB), secret_key="s3cret", **kw)


def parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=policy.default)


RECIPIENTS = [
    Recipient("reader@example.org", "", "1.abc"),
    Recipient("zoë.li@example.org".replace("ë", "e"), "Zoë Lǐ 李", "2.def"),
    Recipient("o'brien+news@example.org", "O'Brien, Pat", "3.ghi"),
    Recipient("a&b@example.org", "A & B <co>", "4.jkl"),
]


@pytest.mark.parametrize("recipient", RECIPIENTS, ids=lambda r: r.email)
def test_fast_build_equals_reference_build(rendered6, recipient):
    p = prepared(rendered6)
    fast = parse(p.personalise(recipient).as_bytes())
    slow = parse(build_email_message(p, recipient).as_bytes())
    assert fast["Date"].datetime.tzinfo is not None and slow["Date"].datetime.tzinfo is not None
    for name in ("From", "To", "Subject", "Message-ID", "Reply-To", "List-Id", "List-Unsubscribe",
                 "List-Unsubscribe-Post"):
        # The reference folds long headers right after the colon, which Python's parser
        # reads back with one leading space; the header's content is what must match.
        assert str(fast[name]) == str(slow[name]).lstrip(), name
    fast_parts = [(part.get_content_type(), part.get_content()) for part in fast.iter_parts()]
    slow_parts = [(part.get_content_type(), part.get_content()) for part in slow.iter_parts()]
    assert fast_parts == slow_parts
    assert [t for t, _ in fast_parts] == ["text/plain", "text/html"]


def test_wire_format(rendered6):
    data = prepared(rendered6).personalise(RECIPIENTS[1]).as_bytes()
    assert b"\n" not in data.replace(b"\r\n", b"")  # CRLF everywhere
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    assert max(len(line) for line in data.split(b"\r\n")) <= 78 + 20  # QP keeps lines short in practice
    msg = parse(data)
    assert msg.get_content_type() == "multipart/alternative"
    for part in msg.iter_parts():
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert data.isascii()


def test_headers(rendered6):
    p = prepared(rendered6)
    msg = parse(p.personalise(RECIPIENTS[1]).as_bytes())
    assert msg["From"].addresses[0].addr_spec == "newsletter@chinaffairs.example"
    assert msg["From"].addresses[0].display_name == "ChinAffairs+"
    assert msg["To"].addresses[0].display_name == "Zoë Lǐ 李"
    assert msg["Subject"] == rendered6.subject
    assert msg["Reply-To"] == "sunchenghao@tsinghua.edu.cn"  # the issue's reply_to wins
    assert re.fullmatch(r"<global-governance-of-ai\.[0-9a-f]{24}@chinaffairs\.example>", msg["Message-ID"])
    assert msg["Date"].datetime.tzinfo is not None
    assert msg["List-Id"] == "ChinAffairs+ <newsletter.chinaffairs.example>"
    assert msg["List-Unsubscribe"] == ("<https://chinaffairs.example/unsubscribe/2.def>, "
                                       "<mailto:editors@chinaffairs.example?subject=unsubscribe%202.def>")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_message_id_is_deterministic_per_issue_and_recipient(rendered6):
    a, b = prepared(rendered6), prepared(rendered6)
    assert a.message_id("x@example.org") == b.message_id("X@example.org")
    assert a.message_id("x@example.org") != a.message_id("y@example.org")
    # A test send gets fresh ids, so a second test is not deduplicated by the inbox.
    assert prepared(rendered6, test=True).message_id("x@example.org") != a.message_id("x@example.org")


def test_test_prefix(rendered6):
    msg = parse(prepared(rendered6, test=True).personalise(RECIPIENTS[0]).as_bytes())
    assert msg["Subject"] == "[TEST] " + rendered6.subject


def test_without_https_base_url_there_is_no_one_click(rendered6):
    p = prepared(rendered6, publication=PUB._replace(base_url=""))
    msg = parse(p.personalise(RECIPIENTS[0]).as_bytes())
    assert msg["List-Unsubscribe"] == "<mailto:editors@chinaffairs.example?subject=unsubscribe%201.abc>"
    assert msg["List-Unsubscribe-Post"] is None
    html = msg.get_body(("html",)).get_content()
    assert 'href="mailto:editors@chinaffairs.example?subject=unsubscribe%201.abc"' in html


def test_personalised_bodies_carry_visible_unsubscribe_and_escaped_values(rendered6):
    msg = parse(prepared(rendered6).personalise(RECIPIENTS[3]).as_bytes())
    html = msg.get_body(("html",)).get_content()
    text = msg.get_body(("plain",)).get_content()
    assert '<a href="https://chinaffairs.example/unsubscribe/4.jkl"' in html and ">Unsubscribe</a>" in html
    assert "a&amp;b@example.org subscribed" in html and "a&b@example.org subscribed" in text
    assert "Unsubscribe: https://chinaffairs.example/unsubscribe/4.jkl" in text
    assert "%%" not in html and "%%" not in text


@pytest.mark.parametrize("field, value", [
    ("email", "victim@example.org\r\nBcc: everyone@example.org"),
    ("name", "Evil\nBcc: x@example.org"),
    ("name", "Bell\x07"),
    ("name", "Line\u2028sep"),
])
def test_header_injection_is_refused(rendered6, field, value):
    r = Recipient(**{"email": "ok@example.org", "name": "", "token": "1.a", field: value})
    with pytest.raises(HeaderInjectionError):
        prepared(rendered6).personalise(r).as_bytes()


def test_header_injection_in_subject_is_refused(rendered6):
    with pytest.raises(HeaderInjectionError, match="Subject"):
        prepared(replace(rendered6, subject="Hi\r\nBcc: x@example.org"))


@pytest.mark.parametrize("address", ["no-at-sign", "a@b", "two@@example.org", "sp ace@example.org"])
def test_invalid_addresses_are_refused(address):
    with pytest.raises(InputError, match="invalid"):
        validate_address(address)


def test_dkim_signature_verifies(rendered6):
    dkim = pytest.importorskip("dkim")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
    public_der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    import base64

    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public_der)
    p = prepared(rendered6, signer=dkim_signer("news", "chinaffairs.example", private_pem))
    data = p.personalise(RECIPIENTS[0]).as_bytes()
    assert data.startswith(b"DKIM-Signature:")
    signed = parse(data)["DKIM-Signature"]
    for h in ("from", "subject", "date", "message-id", "to", "list-unsubscribe", "list-unsubscribe-post"):
        assert h in signed.lower()

    def dnsfunc(name, timeout=5):
        assert name == b"news._domainkey.chinaffairs.example."
        return record

    assert dkim.verify(data, dnsfunc=dnsfunc)
    tampered = data.replace(b"Subject: #6", b"Subject: #7", 1)
    assert tampered != data
    assert not dkim.verify(tampered, dnsfunc=dnsfunc)


def _dkim_keys():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    import base64

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
    public_der = key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    return private_pem, lambda name, timeout=5: b"v=DKIM1; k=rsa; p=" + base64.b64encode(public_der)


def _edit_header(data: bytes, name: bytes, new_value: bytes) -> bytes:
    import re as _re

    head, body = data.split(b"\r\n\r\n", 1)
    edited, n = _re.subn(rb"(?m)^" + name + rb":[^\r]*(\r\n[ \t][^\r]*)*", name + b": " + new_value, head, count=1)
    assert n == 1, name
    return edited + b"\r\n\r\n" + body


def _add_header(data: bytes, line: bytes) -> bytes:
    # A copy added on top, where relays add fields: a verifier reads the bottom-most copy of
    # each name first, so only a field signed once more than it occurs notices it.
    return line + b"\r\n" + data


def test_dkim_signs_list_and_mime_fields_and_oversigns_the_ones_readers_see(rendered6):
    # Issue 22: List-Id, Reply-To, MIME-Version and Content-Type were unsigned, so an edited
    # List-Id still verified; and a second From or List-Unsubscribe could be added unnoticed.
    dkim = pytest.importorskip("dkim")
    private_pem, dnsfunc = _dkim_keys()
    rendered = replace(rendered6, reply_to="letters@chinaffairs.example")
    data = prepared(rendered, signer=dkim_signer("news", "chinaffairs.example", private_pem)).personalise(
        RECIPIENTS[0]).as_bytes()
    assert dkim.verify(data, dnsfunc=dnsfunc)
    signed = [h.strip().lower() for h in parse(data)["DKIM-Signature"].split("h=")[1].split(";")[0].split(":")]
    for field in ("list-id", "reply-to", "mime-version", "content-type", "message-id", "date", "to"):
        assert field in signed
    for field in ("from", "subject", "list-unsubscribe", "list-unsubscribe-post"):
        assert signed.count(field) == 2, field  # present once, signed twice: one more copy breaks it
    edits = [(b"List-Id", b"Other list <other.example.net>"), (b"Reply-To", b"evil@example.net"),
             (b"MIME-Version", b"1.1"), (b"Content-Type", b'multipart/mixed; boundary="x"')]
    for name, value in edits:
        assert not dkim.verify(_edit_header(data, name, value), dnsfunc=dnsfunc), name
    for line in (b"From: Someone Else <ceo@example.net>", b"Subject: urgent",
                 b"List-Unsubscribe: <https://evil.example.net/u>", b"List-Unsubscribe-Post: List-Unsubscribe=One-Click"):
        assert not dkim.verify(_add_header(data, line), dnsfunc=dnsfunc), line
    # A trace field a relay adds on top (Received) leaves it valid, as it must.
    assert dkim.verify(b"Received: from x by y; Mon, 7 Dec 2026 04:00:00 +0000\r\n" + data, dnsfunc=dnsfunc)


def test_internationalised_address_is_refused_not_mangled(rendered6):
    with pytest.raises(InputError, match="not an ASCII address"):
        prepared(rendered6).personalise(Recipient("zoë@exämple.org")).as_bytes()


def _display_name(data: bytes) -> str:
    from email.header import decode_header, make_header

    raw = email.message_from_bytes(data, policy=policy.compat32)["To"]
    raw = re.sub(r"\r?\n[ \t]", " ", raw)
    phrase = raw.rpartition("<")[0].strip() if "<" in raw else ""
    text = str(make_header(decode_header(phrase)))
    return email.utils.parseaddr(f"{text} <x@y>")[0] if text.startswith('"') else text


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n")


@pytest.mark.parametrize("recipient", [
    Recipient("a" * 64 + "@example.org", "", "1.a"),
    Recipient("long-ascii@example.org", "X" * 1200, "2.b"),
    Recipient("long-words@example.org", "Dr " + "Y" * 300 + " Z", "3.c"),
    Recipient("long-utf8@example.org", "é" * 400, "4.d"),
    Recipient("mixed@example.org", "李" * 60 + ", \"Jr\"", "5.e"),
], ids=["long-local-part", "ascii-1200", "ascii-long-word", "utf8-400", "cjk-quotes"])
@pytest.mark.parametrize("base_url", ["https://news.example.org/pppppppppppppp", "https://chinaffairs.example"])
def test_adversarial_recipients_stay_within_line_limits_and_match_the_reference(rendered6, recipient, base_url):
    p = prepared(rendered6, publication=PUB._replace(base_url=base_url))
    data = p.personalise(recipient).as_bytes()
    head, _, body = data.partition(b"\r\n\r\n")
    assert max(len(line) for line in _lines(head)) <= 998
    assert max(len(line) for line in _lines(body)) <= 76  # RFC 2045 quoted-printable lines
    slow_data = build_email_message(p, recipient).as_bytes()
    fast, slow = parse(data), parse(slow_data)
    assert fast["To"].addresses[0].addr_spec == recipient.email
    # Decoded by RFC 2047's rules (whitespace between encoded-words is not content); Python's
    # own address parser keeps that whitespace, so it cannot be the judge here.
    assert _display_name(data) == _display_name(slow_data) == recipient.name[:100]
    for kind in ("plain", "html"):
        assert fast.get_body((kind,)).get_content() == slow.get_body((kind,)).get_content()


def test_very_long_subject_is_encoded_not_overlong(rendered6):
    data = prepared(replace(rendered6, subject="S" * 1100)).personalise(RECIPIENTS[0]).as_bytes()
    head = data.partition(b"\r\n\r\n")[0]
    assert max(len(line) for line in _lines(head)) <= 998
    assert parse(data)["Subject"] == "S" * 1100


def test_date_is_taken_per_message(rendered6, monkeypatch):
    import newsletter.message as message

    p = prepared(rendered6)
    monkeypatch.setattr(message.time, "time", lambda: 1_700_000_000.0)
    first = parse(p.personalise(RECIPIENTS[0]).as_bytes())["Date"].datetime
    monkeypatch.setattr(message.time, "time", lambda: 1_700_003_600.0)
    later = parse(p.personalise(RECIPIENTS[0]).as_bytes())["Date"].datetime
    assert (later - first).total_seconds() == 3600


def test_one_message_keeps_one_date_however_often_it_is_rendered(rendered6, monkeypatch):
    """SMTP sends smtp_bytes(); a copy for the editor or a signature uses as_bytes(): the same Date."""
    import newsletter.message as message
    from newsletter.mime import dot_stuff

    msg = prepared(rendered6).personalise(RECIPIENTS[0])
    monkeypatch.setattr(message.time, "time", lambda: 1_700_000_000.0)
    sent = msg.smtp_bytes()
    monkeypatch.setattr(message.time, "time", lambda: 1_700_000_001.0)  # a second boundary passes
    assert dot_stuff(msg.as_bytes()) == sent


@pytest.mark.parametrize("key, selector, setting", [
    (b"not a key", "news", "NEWSLETTER_DKIM_KEY_FILE"),
    (b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n", "news", "NEWSLETTER_DKIM_KEY_FILE"),
    (None, "news\r\nBcc: x@example.org", "NEWSLETTER_DKIM_SELECTOR"),
])
def test_a_bad_dkim_key_or_selector_is_refused_when_the_signer_is_made(key, selector, setting):
    # The issue: a bad DKIM key failed only after a batch was claimed, leaving it in 'sending'.
    pytest.importorskip("dkim")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from newsletter.errors import ConfigError

    if key is None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    with pytest.raises(ConfigError, match=setting) as err:
        dkim_signer(selector, "chinaffairs.example", key)
    assert "\n" not in err.value.format_message().strip()
