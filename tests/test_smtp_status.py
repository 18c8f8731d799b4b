"""Real replies from the major MTAs and mailbox providers, and what each means (issue 22 #12).

The texts are those the software emits or the providers document: Postfix 3.7's smtpd and
anvil (smtpd_check.c, smtpd.c), Exim 4's default ACL and connection texts, Microsoft 365 /
Exchange Online's NDR reference ("Fix email delivery issues for error code …"), and Google's
"SMTP error reference" (support.google.com/a/answer/3726730).
"""

from __future__ import annotations

import pytest

from newsletter.smtp_status import (SAME_ANSWER_RUN, ReplyKind, enhanced_code, is_hard_bounce, reply_gist,
                                    reply_kind)
from newsletter.transports.base import Status
from newsletter.transports.smtp import classify

R, S, RATE, ERR = ReplyKind.READER, ReplyKind.SENDER, ReplyKind.RATE, ReplyKind.ERRORS

# (source, phase, code, text, kind, hard bounce)
REPLIES = [
    # Postfix
    ("postfix", "RCPT", 550, "5.1.1 <bob@mta.example>: Recipient address rejected: User unknown in virtual mailbox "
                             "table", R, True),
    ("postfix", "RCPT", 550, "5.1.1 <bob@example.org>: Recipient address rejected: User unknown in local recipient "
                             "table", R, True),
    ("postfix", "RCPT", 504, "5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname", S, False),
    ("postfix", "RCPT", 554, "5.7.1 <bob@example.com>: Relay access denied", S, False),
    ("postfix", "RCPT", 553, "5.7.1 <news@example.org>: Sender address rejected: not owned by user newsletter",
     S, False),
    ("postfix", "RCPT", 554, "5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
     S, False),
    ("postfix", "RCPT", 550, "5.7.1 <bob@example.org>: Recipient address rejected: Access denied", R, False),
    ("postfix", "MAIL", 450, "4.7.1 Error: too much mail from 192.0.2.1", RATE, False),
    ("postfix", "RCPT", 450, "4.7.1 Error: too many recipients from 192.0.2.1", RATE, False),
    ("postfix", "RCPT", 421, "4.7.0 mx.example.org Error: too many connections from 192.0.2.1", RATE, False),
    ("postfix", "RCPT", 421, "4.7.0 mx.example.org Error: too many errors", ERR, False),
    ("postfix", "RCPT", 450, "4.7.1 Client host rejected: cannot find your hostname, [192.0.2.1]", R, False),
    ("postfix", "RCPT", 450, "4.1.1 <bob@example.org>: Recipient address rejected: unverified address: host "
                             "mx.example.org said: 550 no such user", R, False),
    ("postfix", "RCPT", 452, "4.5.3 Error: too many recipients", R, False),
    ("postfix", "DATA", 451, "4.3.0 Error: queue file write error", R, False),
    ("postfix", "MAIL", 553, "5.1.8 <news@example.org>: Sender address rejected: Domain not found", S, False),
    # Exim
    ("exim", "RCPT", 550, "Unrouteable address", R, True),
    ("exim", "RCPT", 550, "relay not permitted", S, False),
    ("exim", "MAIL", 501, "Syntactically invalid HELO argument(s)", S, False),
    ("exim", "RCPT", 550, "Administrative prohibition", S, False),
    ("exim", "RCPT", 421, "Too many concurrent SMTP connections; please try again later.", RATE, False),
    ("exim", "RCPT", 451, "Temporary local problem - please try later", R, False),
    ("exim", "RCPT", 451, "Sender rate overlimit - 1200.0 / 1h / per_rcpt", RATE, False),
    # Microsoft 365 / Exchange Online
    ("microsoft", "RCPT", 550, "5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
     R, True),
    ("microsoft", "RCPT", 550, "5.7.1 Unable to relay", S, False),
    ("microsoft", "MAIL", 530, "5.7.57 Client not authenticated to send mail.", S, False),
    ("microsoft", "RCPT", 550, "5.7.606 Access denied, banned sending IP [192.0.2.1]", S, False),
    ("microsoft", "RCPT", 550, "5.7.708 Service unavailable. Access denied, traffic not accepted from this IP.",
     S, False),
    ("microsoft", "RCPT", 550, "5.7.1 RESOLVER.RST.NotAuthorized; not authorized", R, False),
    ("microsoft", "RCPT", 550, "5.4.1 Recipient address rejected: Access denied. AS(201806281)", R, False),
    ("microsoft", "RCPT", 451, "4.7.500 Server busy. Please try again later from [192.0.2.1]. (AS761)", RATE, False),
    ("microsoft", "RCPT", 451, "4.7.650 The mail server [192.0.2.1] has been temporarily rate limited due to IP "
                               "reputation.", RATE, False),
    ("microsoft", "RCPT", 421, "4.3.2 The maximum number of concurrent server connections has exceeded a limit, "
                               "closing transmission channel", RATE, False),
    ("microsoft", "DATA", 452, "4.3.1 Insufficient system resources", R, False),
    # Gmail
    ("gmail", "RCPT", 550, "5.1.1 The email account that you tried to reach does not exist. Please try "
                           "double-checking the recipient's email address for typos. - gsmtp", R, True),
    ("gmail", "RCPT", 452, "4.2.2 The recipient's inbox is out of storage space. - gsmtp", R, False),
    ("gmail", "RCPT", 450, "4.2.1 The user you are trying to contact is receiving mail at a rate that prevents "
                           "additional messages from being delivered. - gsmtp", R, False),
    ("gmail", "DATA", 421, "4.7.0 [192.0.2.1] Our system has detected an unusual rate of unsolicited mail "
                           "originating from your IP address. - gsmtp", RATE, False),
    ("gmail", "DATA", 421, "4.7.28 [192.0.2.1] Gmail has detected an unusual rate of mail originating from your "
                           "IP address. - gsmtp", RATE, False),
    ("gmail", "DATA", 421, "4.7.0 Try again later, closing connection. (EHLO) - gsmtp", RATE, False),
    ("gmail", "DATA", 550, "5.7.26 This mail has been blocked because the sender is unauthenticated. Gmail "
                           "requires all senders to authenticate with either SPF or DKIM. - gsmtp", S, False),
    ("gmail", "DATA", 550, "5.7.26 Unauthenticated email from example.org is not accepted due to domain's DMARC "
                           "policy. - gsmtp", S, False),
    # A content filter: this reader's, unless it repeats for readers in a row (the run rule).
    ("gmail", "DATA", 550, "5.7.1 [192.0.2.1] Our system has detected that this message is likely unsolicited "
                           "mail. - gsmtp", R, False),
    ("gmail", "DATA", 552, "5.2.2 The email account that you tried to reach is over quota. - gsmtp", R, False),
    ("gmail", "RCPT", 550, "5.2.1 The email account that you tried to reach is disabled. - gsmtp", R, True),
]


@pytest.mark.parametrize("source, phase, code, text, kind, hard", REPLIES,
                         ids=[f"{r[0]}-{r[2]}-{i}" for i, r in enumerate(REPLIES)])
def test_real_replies(source, phase, code, text, kind, hard):
    assert reply_kind(code, text, phase) is kind
    status, bounce = classify(phase, code, text.encode())
    assert bounce is hard
    assert status is (Status.FAILED_PERMANENT if code >= 500 else Status.FAILED_TEMPORARY)


def test_every_source_and_kind_is_covered():
    assert {r[0] for r in REPLIES} == {"postfix", "exim", "microsoft", "gmail"}
    assert {r[4] for r in REPLIES} == set(ReplyKind)


@pytest.mark.parametrize("status, hard", [("5.1.1", True), ("5.1.10", True), ("5.2.1", True), ("5.2.2", False),
                                          ("5.7.1", False), ("4.1.1", False), ("2.0.0", False), ("", False)])
def test_one_hard_bounce_definition(status, hard):
    assert is_hard_bounce(status) is hard
    assert is_hard_bounce(enhanced_code(status)) is hard if status else True


def test_basic_codes_without_an_enhanced_code_bounce_only_at_rcpt():
    assert is_hard_bounce(None, basic=550, phase="RCPT") and is_hard_bounce(None, basic=553, phase="RCPT")
    assert not is_hard_bounce(None, basic=550, phase="DATA") and not is_hard_bounce(None, basic=554, phase="RCPT")


def test_gist_strips_the_reader_and_ids_so_the_same_answer_groups():
    a = "RCPT 550 5.1.1 <ann@example.org>: Recipient address rejected: User unknown in virtual mailbox table"
    b = "RCPT 550 5.1.1 <bob.smith+news@mail.example.net>: Recipient address rejected: User unknown in virtual " \
        "mailbox table"
    assert reply_gist(a) == reply_gist(b) and "ann" not in reply_gist(a) and reply_gist(a).startswith("RCPT 550 5.1.1")
    q1 = "DATA 451 4.3.0 Error: queue file write error for 3F1A2B4C5D (attempt 2) to dan@example.org"
    q2 = "DATA 451 4.3.0 Error: queue file write error for 9E8D7C6B5A (attempt 17) to eve@example.com"
    assert reply_gist(q1) == reply_gist(q2)
    assert reply_gist(a) != reply_gist("RCPT 550 5.7.1 <ann@example.org>: Relay access denied")
    assert SAME_ANSWER_RUN >= 2
