"""Hand-made messages of every class the reply-to inbox sees, as raw bytes (CRLF).

The DSN is laid out as Postfix writes one (RFC 3464: multipart/report with a
human part, message/delivery-status and text/rfc822-headers); the ARF report as
the mailbox providers' feedback loops send it (RFC 5965: multipart/report;
report-type=feedback-report with message/feedback-report and message/rfc822).
"""

from __future__ import annotations

OUR_DOMAIN = "chinaffairs.example.org"


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def reply(sender: str, in_reply_to: str | None, *, subject: str = "Re: The Global Governance of AI",
          body: str = "", msgid: str = "<r1@reader.example>", name: str = "Li Wei") -> bytes:
    body = body or ("Thank you for this issue. The section on the UN's role was the clearest I have read.\n"
                    "Could you cover the EU AI Act next?\n\nBest,\nLi\n-- \nLi Wei, Fudan University\n\n"
                    "On Mon, 10 Mar 2025 at 09:00, ChinAffairs+ <newsletter@example.org> wrote:\n"
                    "> Welcome to the sixth edition\n> of China Scholar Insights\n")
    refs = f"In-Reply-To: {in_reply_to}\nReferences: {in_reply_to}\n" if in_reply_to else ""
    return _crlf(f"From: {name} <{sender}>\nTo: newsletter@{OUR_DOMAIN}\nSubject: {subject}\n"
                 f"Date: Tue, 11 Mar 2025 08:15:00 +0800\nMessage-ID: {msgid}\n{refs}MIME-Version: 1.0\n"
                 f"Content-Type: text/plain; charset=utf-8\n\n{body}")


def auto_reply(sender: str, in_reply_to: str, msgid: str = "<ooo@reader.example>") -> bytes:
    return _crlf(f"From: <{sender}>\nTo: newsletter@{OUR_DOMAIN}\nSubject: Out of office: The Global Governance\n"
                 f"Date: Tue, 11 Mar 2025 08:00:00 +0000\nMessage-ID: {msgid}\nIn-Reply-To: {in_reply_to}\n"
                 "Auto-Submitted: auto-replied\nContent-Type: text/plain; charset=us-ascii\n\n"
                 "I am away until 20 March with limited access to email.\n")


def dsn(recipient: str, original_id: str, *, status: str = "5.1.1", action: str = "failed",
        msgid: str = "<20250310090102.4C1B2@mx.example.net>") -> bytes:
    """A Postfix delivery status notification for one recipient."""
    diag = ("smtp; 550 5.1.1 <{0}>: Recipient address rejected: User unknown in virtual mailbox table"
            if status.startswith("5") else "smtp; 452 4.2.2 <{0}>: Mailbox full").format(recipient)
    return _crlf(f"""Return-Path: <>
From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: bounces@{OUR_DOMAIN}
Auto-Submitted: auto-replied
Date: Mon, 10 Mar 2025 09:01:02 +0800 (CST)
Message-Id: {msgid}
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="4C1B2.1741568462/mx.example.net"

This is a MIME-encapsulated message.

--4C1B2.1741568462/mx.example.net
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.net.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<{recipient}>: host mx.example.net[192.0.2.10] said: 550 5.1.1 User unknown

--4C1B2.1741568462/mx.example.net
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
X-Postfix-Queue-ID: 4C1B2
X-Postfix-Sender: rfc822; newsletter@{OUR_DOMAIN}
Arrival-Date: Mon, 10 Mar 2025 09:01:01 +0800 (CST)

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Remote-MTA: dns; mx.example.net
Diagnostic-Code: {diag}

--4C1B2.1741568462/mx.example.net
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

From: ChinAffairs+ <newsletter@{OUR_DOMAIN}>
To: <{recipient}>
Subject: #6 China Scholar Insights: The Global Governance of Artificial Intelligence
Message-ID: {original_id}

--4C1B2.1741568462/mx.example.net--
""")


def arf(recipient: str, original_id: str, *, msgid: str = "<arf-1@fbl.example.com>",
        feedback_type: str = "abuse", redact: bool = False) -> bytes:
    """An RFC 5965 abuse report as a feedback loop sends it (the recipient may be redacted)."""
    rcpt = "" if redact else f"Original-Rcpt-To: {recipient}\n"
    to = "redacted@example.com" if redact else recipient
    return _crlf(f"""From: Feedback Loop <fbl@fbl.example.com>
To: abuse@{OUR_DOMAIN}
Subject: Email Feedback Report for IP 198.51.100.7
Date: Wed, 12 Mar 2025 10:00:00 +0000
Message-ID: {msgid}
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="part1_13d"

--part1_13d
Content-Type: text/plain; charset="US-ASCII"
Content-Transfer-Encoding: 7bit

This is an email abuse report for an email message received from IP 198.51.100.7.

--part1_13d
Content-Type: message/feedback-report

Feedback-Type: {feedback_type}
User-Agent: ExampleFBL/1.0
Version: 1
Original-Mail-From: <bounces@{OUR_DOMAIN}>
{rcpt}Arrival-Date: Mon, 10 Mar 2025 09:01:03 +0800
Source-IP: 198.51.100.7
Reported-Domain: {OUR_DOMAIN}

--part1_13d
Content-Type: message/rfc822
Content-Disposition: inline

From: ChinAffairs+ <newsletter@{OUR_DOMAIN}>
To: {to}
Subject: #6 China Scholar Insights: The Global Governance of Artificial Intelligence
Message-ID: {original_id}
Content-Type: text/plain; charset=utf-8

Welcome to the sixth edition.

--part1_13d--
""")


def mailed_unsubscribe(sender: str, token: str, msgid: str = "<unsub-1@reader.example>") -> bytes:
    return _crlf(f"From: <{sender}>\nTo: newsletter@{OUR_DOMAIN}\nSubject: unsubscribe {token}\n"
                 f"Date: Wed, 12 Mar 2025 11:00:00 +0000\nMessage-ID: {msgid}\n\n\n")


def other(msgid: str = "<hello@someone.example>") -> bytes:
    return _crlf(f"From: Someone <someone@example.net>\nTo: newsletter@{OUR_DOMAIN}\nSubject: Conference invitation\n"
                 f"Date: Wed, 12 Mar 2025 12:00:00 +0000\nMessage-ID: {msgid}\n\nWould you speak at our event?\n")


# ---- bad input -------------------------------------------------------------------------------
def malformed_mime(in_reply_to: str, sender: str) -> bytes:
    """A multipart without its boundary, a header without a colon, and no end."""
    return _crlf(f"From: {sender}\nSubject: Re: The Global Governance\nMessage-ID: <bad-mime@reader.example>\n"
                 f"In-Reply-To: {in_reply_to}\nThis header has no colon\nContent-Type: multipart/mixed\n\n"
                 "--nowhere\nContent-Type: text/plain\n\nhalf a part")


def wrong_charset(in_reply_to: str, sender: str) -> bytes:
    """Declares utf-8, is GB2312; and a second one declaring a charset nobody knows."""
    head = (f"From: {sender}\nSubject: Re: issue 6\nMessage-ID: <wrong-cs@reader.example>\n"
            f"In-Reply-To: {in_reply_to}\nContent-Type: text/plain; charset=utf-8\n\n").replace("\n", "\r\n")
    return head.encode() + "谢谢你们的通讯，很有帮助。\r\n".encode("gb2312")


def unknown_charset(in_reply_to: str, sender: str) -> bytes:
    return _crlf(f"From: {sender}\nSubject: Re: issue 6\nMessage-ID: <unknown-cs@reader.example>\n"
                 f"In-Reply-To: {in_reply_to}\nContent-Type: text/plain; charset=x-klingon-9\n\nQapla! Great issue.\n")


def no_message_id(in_reply_to: str, sender: str) -> bytes:
    return _crlf(f"From: {sender}\nSubject: Re: issue 6\nIn-Reply-To: {in_reply_to}\n"
                 "Content-Type: text/plain\n\nNo id on this one, but I liked it.\n")


def html_only(in_reply_to: str, sender: str) -> bytes:
    return _crlf(f"From: Ana <{sender}>\nSubject: RE: issue 6\nMessage-ID: <html-only@reader.example>\n"
                 f"In-Reply-To: {in_reply_to}\nContent-Type: text/html; charset=utf-8\n\n"
                 "<html><body><p>Great <b>issue</b>, thank you!</p><p>More on Africa please.</p>"
                 "<blockquote>Welcome to the sixth edition</blockquote></body></html>\n")


def forwarded_issue(sender: str) -> bytes:
    return _crlf(f"From: {sender}\nSubject: Fwd: #6 China Scholar Insights\nMessage-ID: <fwd@reader.example>\n"
                 "Content-Type: text/plain; charset=utf-8\n\nFYI\n\n---------- Forwarded message ---------\n"
                 f"From: ChinAffairs+ <newsletter@{OUR_DOMAIN}>\nWelcome to the sixth edition\n")


def huge_attachment(in_reply_to: str, sender: str, megabytes: int = 3) -> bytes:
    """A reply with a large base64 attachment, far past what the inbox reads of a message."""
    line = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB\r\n"
    blob = line * (megabytes * 1024 * 1024 // len(line))
    head = _crlf(f"From: {sender}\nSubject: Re: issue 6\nMessage-ID: <huge@reader.example>\n"
                 f"In-Reply-To: {in_reply_to}\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n"
                 "--b\nContent-Type: text/plain; charset=utf-8\n\nMy slides are attached.\n"
                 "--b\nContent-Type: application/pdf\nContent-Disposition: attachment; filename=slides.pdf\n"
                 "Content-Transfer-Encoding: base64\n\n")
    return head + blob.encode() + b"--b--\r\n"
