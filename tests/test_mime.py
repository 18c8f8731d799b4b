"""SMTP bytes from pieces stuffed once per issue equal the whole message stuffed per recipient."""

from __future__ import annotations

import email
import smtplib
from email import policy

import pytest

from newsletter.config import Publication
from newsletter.message import PreparedIssue, Recipient, build_email_message
from newsletter.mime import dot_stuff, stuff_lines
from newsletter.render import RenderedEmail

PUB = Publication(name="Dots", from_email="news@example.org", base_url="https://news.example.org")


def dotted_issue() -> RenderedEmail:
    """Dots at line starts in both parts, at QP soft breaks, and placeholders at line starts."""
    text = (".Starts with a dot\n..two dots\n%%NAME%%\n.%%EMAIL%%\n" + ("x" * 74 + ".") * 40
            + "\n.\n\nUnsubscribe: %%UNSUBSCRIBE_URL%%\n")
    html = ('<p>.lead</p>\n.<b>%%NAME%%</b>\n' + ("y" * 73 + ".z") * 40
            + '\n<a href="%%UNSUBSCRIBE_URL%%">.Unsubscribe</a>\n')
    return RenderedEmail(slug="dots", number=1, title="Dots", subject="Dots", preheader="", lang="en",
                         reply_to=None, content_hash="d0" * 32, html=html, text=text)


RECIPIENTS = [
    Recipient("plain@example.org", "Plain", "1.a"),
    Recipient("dot@example.org", ".Leading dot", "2.b"),
    Recipient("dots@example.org", "..", "3.c"),
    Recipient("wrap@example.org", "w" * 74 + "." + "v" * 74 + ".end", "4.d"),
    Recipient("utf@example.org", ".é" * 60, "5.e"),
    Recipient("empty@example.org", "", ".6"),
]


@pytest.mark.parametrize("recipient", RECIPIENTS, ids=lambda r: r.email)
@pytest.mark.parametrize("issue", ["dotted", "issue6"])
def test_smtp_bytes_equal_the_whole_message_stuffed(rendered6, recipient, issue):
    rendered = dotted_issue() if issue == "dotted" else rendered6
    prepared = PreparedIssue(rendered=rendered, publication=PUB, secret_key="k")
    msg = prepared.personalise(recipient)
    data = msg.as_bytes()
    if issue == "dotted":
        assert b"\r\n." in data  # precondition: there is something to stuff
    assert msg.smtp_bytes() == dot_stuff(data) == smtplib._quote_periods(data)
    # and the unstuffed bytes still decode to what the reference build holds
    slow = build_email_message(prepared, recipient)
    fast = email.message_from_bytes(data, policy=policy.default)
    for kind in ("plain", "html"):
        content = (fast.get_body((kind,)).get_content(), slow.get_body((kind,)).get_content())
        assert content[0].replace("\r\n", "\n") == content[1].replace("\r\n", "\n")


def test_signed_messages_are_stuffed_after_signing(monkeypatch):
    from newsletter import message

    monkeypatch.setattr(message.time, "time", lambda: 1_700_000_000.0)  # one Date for both builds
    signer_calls: list[bytes] = []

    def signer(data: bytes) -> bytes:
        signer_calls.append(data)
        return b"X-Signed: yes\r\n" + data

    prepared = PreparedIssue(rendered=dotted_issue(), publication=PUB, secret_key="k", signer=signer)
    msg = prepared.personalise(RECIPIENTS[1])
    assert msg.smtp_bytes() == dot_stuff(msg.as_bytes())
    assert signer_calls and not signer_calls[0].startswith(b"X-Signed")  # signed before stuffing
    unsigned = PreparedIssue(rendered=dotted_issue(), publication=PUB, secret_key="k").personalise(RECIPIENTS[1])
    assert signer_calls[0] == unsigned.as_bytes() != unsigned.smtp_bytes()  # the signer saw the unstuffed bytes


@pytest.mark.parametrize("text", ["", ".", "..", ".\r\n", "a\r\n.\r\n", "a\r\n..b", ".x\r\n.y\r\nz.", "a\n.b"])
def test_stuff_lines_matches_smtplib(text):
    assert stuff_lines(text).encode() == smtplib._quote_periods(text.encode())


@pytest.mark.parametrize("recipient", [*RECIPIENTS, Recipient("q@example.org", 'Q "uote" \\ back</script>\u2028é😀', "7")],
                         ids=lambda r: r.email)
@pytest.mark.parametrize("issue", ["dotted", "issue6"])
def test_json_bodies_equal_json_dumps_of_the_bodies(rendered6, recipient, issue):
    import json

    rendered = dotted_issue() if issue == "dotted" else rendered6
    msg = PreparedIssue(rendered=rendered, publication=PUB, secret_key="k").personalise(recipient)
    assert b"".join(msg.html_json) == json.dumps(msg.html).encode()
    assert b"".join(msg.text_json) == json.dumps(msg.text).encode()
    assert json.loads(b"".join(msg.html_json)) == msg.html
