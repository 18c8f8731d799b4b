"""Classifying inbox messages (pure): every class, with its reason, and hostile input."""

from __future__ import annotations

import pytest

from newsletter.classify import Category, classify, strip_reply_prefixes
from newsletter.excerpt import excerpt
from tests import inbox_messages as m

OURS = f"<global-governance-of-ai.0123456789abcdef01234567@{m.OUR_DOMAIN}>"


def test_reply_keeps_only_the_readers_own_lines():
    c = classify(m.reply("li@reader.example", OURS))
    assert c.category is Category.REPLY and "In-Reply-To" in c.reason
    assert c.references == (OURS,)
    assert c.sender == "li@reader.example" and c.sender_name == "Li Wei"
    assert c.text.startswith("Thank you for this issue.")
    assert "EU AI Act" in c.text
    assert "Fudan" not in c.text          # signature cut
    assert "sixth edition" not in c.text  # quoted history cut
    assert c.dedupe_key.startswith("sha256:")  # the content, never the Message-ID anyone can set


def test_reply_by_subject_only():
    c = classify(m.reply("li@reader.example", None))
    assert c.category is Category.REPLY and "Re: subject" in c.reason and c.references == ()


@pytest.mark.parametrize("headers, why", [
    ("Auto-Submitted: auto-replied", "RFC 3834"),
    ("X-Autoreply: yes", "X-Autoreply"),
    ("Precedence: auto_reply", "Precedence: auto_reply"),
    ("Precedence: bulk", "Precedence: bulk"),
    ("Auto-Submitted: no\r\nSubject: Automatic reply: away", "out-of-office subject"),
    ("Subject: 自动回复: 我在休假", "out-of-office subject"),
])
def test_auto_replies_are_recognised(headers, why):
    raw = (f"From: x@reader.example\r\n{headers}\r\nIn-Reply-To: {OURS}\r\nMessage-ID: <a@b>\r\n\r\nAway.\r\n")
    c = classify(raw.encode("utf-8"))
    assert c.category is Category.AUTO_REPLY and why in c.reason


def test_auto_reply_to_an_issue_is_not_a_reply():
    assert classify(m.auto_reply("li@reader.example", OURS)).category is Category.AUTO_REPLY


def test_dsn_hard_bounce():
    c = classify(m.dsn("gone@reader.example", OURS))
    assert c.category is Category.BOUNCE and "RFC 3464" in c.reason and "hard bounce" in c.reason
    (f,) = c.failures
    assert f.address == "gone@reader.example" and f.permanent and f.status == "5.1.1"
    assert "User unknown" in f.diagnostic
    assert c.original_message_id == OURS


def test_dsn_soft_bounce():
    c = classify(m.dsn("full@reader.example", OURS, status="4.2.2"))
    assert c.category is Category.BOUNCE and "soft bounce" in c.reason
    assert not c.failures[0].permanent


@pytest.mark.parametrize("status, hard", [
    ("5.1.1", True), ("5.1.10", True), ("5.2.1", True), ("5.1.2", True),
    ("5.2.2", False), ("5.7.1", False), ("5.3.4", False), ("5.0.0", False), ("4.4.1", False),
])
def test_dsn_hard_bounce_is_the_smtp_definition(status, hard):
    # Issue 19: the DSN path counted any non-4.x.x as hard while SMTP counted 5.1.x and 5.2.1 only.
    from newsletter.transports.smtp import classify as smtp_classify

    c = classify(m.dsn("x@reader.example", OURS, status=status))
    assert c.failures[0].permanent is hard
    assert smtp_classify("RCPT", 550 if status[0] == "5" else 450, f"{status} reply".encode())[1] is hard


def test_dsn_delay_notice_is_not_a_bounce():
    c = classify(m.dsn("slow@reader.example", OURS, status="4.4.7", action="delayed"))
    assert c.category is Category.BOUNCE and c.failures == () and "still trying" in c.reason


def test_dsn_delivered_report_changes_nobody():
    c = classify(m.dsn("ok@reader.example", OURS, status="2.0.0", action="delivered"))
    assert c.category is Category.BOUNCE and c.failures == () and "no failure" in c.reason


def test_non_standard_bounce_goes_to_flufl_bounce():
    raw = ("From: MAILER-DAEMON@old.example\r\nSubject: failure notice\r\nMessage-ID: <q1@old.example>\r\n\r\n"
           "Hi. This is the qmail-send program at old.example.\r\n"
           "I'm afraid I wasn't able to deliver your message to the following addresses.\r\n"
           "This is a permanent error; I've given up. Sorry it didn't work out.\r\n\r\n"
           "<gone@reader.example>:\r\nSorry, no mailbox here by that name. (#5.1.1)\r\n\r\n"
           "--- Below this line is a copy of the message.\r\n\r\n"
           f"From: us@{m.OUR_DOMAIN}\r\nMessage-ID: {OURS}\r\n").encode()
    c = classify(raw)
    assert c.category is Category.BOUNCE and "flufl.bounce" in c.reason
    assert c.original_message_id == OURS  # pasted as text: found anyway
    assert [f.address for f in c.failures] == ["gone@reader.example"] and c.failures[0].permanent


def test_arf_complaint():
    c = classify(m.arf("angry@reader.example", OURS))
    assert c.category is Category.COMPLAINT and "RFC 5965" in c.reason and "abuse" in c.reason
    assert c.complainant == "angry@reader.example" and c.original_message_id == OURS


def test_arf_with_redacted_recipient_falls_back_to_nobody_named():
    c = classify(m.arf("angry@reader.example", OURS, redact=True))
    assert c.category is Category.COMPLAINT and c.complainant == "redacted@example.com"


def test_arf_not_abuse_is_not_a_complaint():
    c = classify(m.arf("x@reader.example", OURS, feedback_type="not-spam"))
    assert c.category is Category.OTHER and "not a complaint" in c.reason


def test_mailed_unsubscribe_carries_the_token_unverified():
    token = "AbCdEf_-" * 4  # a token's exact shape (32 URL-safe characters), signed by nobody
    c = classify(m.mailed_unsubscribe("u@reader.example", token))
    assert c.category is Category.UNSUBSCRIBE and c.token == token
    legacy = "1f." + "AbCdEf_-12" * 2 + "xy"  # the pre-2028 form, still accepted until the cut-off
    assert classify(m.mailed_unsubscribe("u@reader.example", legacy)).token == legacy


def test_other():
    c = classify(m.other())
    assert c.category is Category.OTHER and "not a reply" in c.reason


# ---- bad input: one line each, never an exception -----------------------------------------------
def test_malformed_mime_gets_a_reason():
    c = classify(m.malformed_mime(OURS, "x@reader.example"))
    assert c.category is Category.REPLY and "malformed MIME" in c.line()
    assert "\n" not in c.line()


def test_wrong_charset_is_read_anyway():
    c = classify(m.wrong_charset(OURS, "x@reader.example"))
    assert c.category is Category.REPLY and "not valid utf-8" in c.line() and c.text


def test_unknown_charset_is_read_as_utf8():
    c = classify(m.unknown_charset(OURS, "x@reader.example"))
    assert "unknown charset 'x-klingon-9'" in c.line() and c.text == "Qapla! Great issue."


def test_no_message_id_is_keyed_by_content():
    raw = m.no_message_id(OURS, "x@reader.example")
    c = classify(raw)
    assert c.category is Category.REPLY and "no Message-ID" in c.line()
    assert c.dedupe_key.startswith("sha256:") and classify(raw).dedupe_key == c.dedupe_key


def test_html_only_reply_is_turned_into_text_without_the_quote():
    c = classify(m.html_only(OURS, "ana@reader.example"))
    assert c.category is Category.REPLY and "HTML only" in c.line()
    assert c.text == "Great issue, thank you!\nMore on Africa please."


def test_forwarded_issue_is_not_a_reply():
    c = classify(m.forwarded_issue("x@reader.example"))
    assert c.category is Category.OTHER and "forwarded" in c.reason


def test_truncated_message_says_so():
    raw = m.huge_attachment(OURS, "x@reader.example")
    c = classify(raw[:256 * 1024], truncated_from=len(raw))
    assert c.category is Category.REPLY and "only the first 256 KB" in c.line()
    assert c.text == "My slides are attached."


@pytest.mark.parametrize("raw", [b"", b"\x00\xff\xfe" * 100, b"From: \r\n\r\n", b"Subject: =?x?Q?bad?=\r\n\r\n",
                                 b"Content-Type: multipart/report; report-type=delivery-status\r\n\r\n--",
                                 b"Content-Type: message/rfc822\r\n\r\nnot a message",
                                 ("Subject: Re: x\r\n" + "References: " + "<a@b> " * 10000 + "\r\n\r\n").encode()])
def test_garbage_never_raises(raw):
    c = classify(raw)
    assert c.category in Category and c.line() and "\n" not in c.line() and len(c.references) <= 50


def test_subject_prefixes():
    assert strip_reply_prefixes("Re: AW: Fwd: 回复：Title") == "Title"


def test_excerpt_cuts_outlook_history_and_limits_size():
    text = "Line one\nLine two\n\n-----Original Message-----\nFrom: us\n"
    assert excerpt(text) == "Line one\nLine two"
    assert excerpt("x" * 5000).endswith("…") and len(excerpt("x" * 5000)) == 600
    assert excerpt("\n".join(f"l{i}" for i in range(30))).count("\n") == 7


def test_read_receipt_is_an_auto_reply():
    raw = (b"From: x@reader.example\r\nSubject: Read: issue 6\r\nMessage-ID: <mdn@x>\r\n"
           b"Content-Type: multipart/report; report-type=disposition-notification; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: message/disposition-notification\r\n\r\nDisposition: manual-action/MDN-sent-manually; displayed\r\n--b--\r\n")
    c = classify(raw)
    assert c.category is Category.AUTO_REPLY and "read receipt" in c.reason


def test_terminal_escapes_never_reach_the_output():
    raw = (f"From: \x1b[2J Evil <e@x.example>\r\nSubject: Re: hi\r\nIn-Reply-To: {OURS}\r\n"
           "Content-Type: text/plain\r\n\r\nHello \x1b]0;pwned\x07 world \u202eevil\r\n").encode()
    c = classify(raw)
    for text in (c.sender_name, c.text, c.line()):
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert c.text.startswith("Hello") and c.text.endswith("evil")


def test_mangled_messages_of_every_class_never_raise():
    """Truncations and byte flips of every hand-made message (fixed seed): a class and one line each."""
    import random

    rng = random.Random(6)
    originals = [m.reply("a@x.example", OURS), m.auto_reply("a@x.example", OURS), m.dsn("a@x.example", OURS),
                 m.arf("a@x.example", OURS), m.mailed_unsubscribe("a@x.example", "1.abc"), m.other(),
                 m.html_only(OURS, "a@x.example"), m.malformed_mime(OURS, "a@x.example")]
    for _ in range(300):
        raw = bytearray(rng.choice(originals))
        for _ in range(rng.randint(1, 20)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        raw = bytes(raw[:rng.randint(0, len(raw))])
        c = classify(raw)
        assert c.category in Category and "\n" not in c.line() and "\r" not in c.line()


@pytest.mark.parametrize("body, expected", [("Très bien, merci.", "Très bien, merci."),
                                            ("谢谢你们的通讯，很有帮助。", "谢谢你们的通讯，很有帮助。")])
def test_missing_charset_is_guessed(body, expected):
    encoding = "utf-8" if body.startswith("Très") else "gb18030"
    raw = (f"From: x@reader.example\r\nSubject: Re: issue\r\nIn-Reply-To: {OURS}\r\nMessage-ID: <nc@x>\r\n"
           "Content-Type: text/plain\r\n\r\n").encode() + body.encode(encoding) + b"\r\n"
    assert classify(raw).text == expected


def test_excerpt_cuts_a_wrapped_gmail_attribution_and_outlook_html():
    text = ("Good point about the UN.\n\nOn Mon, Mar 10, 2025 at 9:00 AM ChinAffairs+ <\n"
            "newsletter@chinaffairs.example> wrote:\n\n> Welcome\n")
    assert excerpt(text) == "Good point about the UN."
    html = ('<div>Agreed.</div><hr><div id="divRplyFwdMsg"><b>From:</b> ChinAffairs+<br><b>Sent:</b> Monday'
            "</div><div>Welcome to the sixth edition</div>")
    from newsletter.excerpt import html_to_text

    assert excerpt(html_to_text(html)) == "Agreed."
