"""What an SMTP reply, or a delivery status notification's status code, says — and about whom.

One definition for the SMTP transport and for bounces read from the inbox (RFC 3464 DSNs):

* :func:`is_hard_bounce`: the *address* is bad — stop mailing it. Enhanced status 5.1.x
  (bad mailbox, domain or syntax) or 5.2.1 (mailbox disabled), RFC 3463. Every other
  permanent failure (a full mailbox 5.2.2, spam filtering 5.7.x, a message too big 5.3.4)
  says nothing about whether the address works, so it is at most a soft bounce.
* :func:`reply_kind`: what one reply during a send means:

  - ``RATE``: the server asks us to slow down (a pacing signal, not a failure);
  - ``SENDER``: a permanent refusal of *us* — our envelope sender, HELO name, login, relay
    permission, IP reputation or authentication (RFC 3463 5.5.x protocol codes, and 5.7.x
    security/policy answers that say so, also from servers that give no enhanced code):
    charging it to readers would fail the whole list for a setting. Any other 5.7.x (a
    content filter) is this reader's unless it repeats for readers in a row (:data:`SAME_ANSWER_RUN`);
  - ``ERRORS``: the server is closing a session that collected too many errors
    (Postfix's ``421 4.7.0 … Error: too many errors``): reconnect, do not slow down;
  - ``READER``: anything else is about this reader and this message.

Texts are the documented ones of the major MTAs and mailbox providers; tests/test_smtp_status.py
holds a table of real replies (Postfix, Exim, Microsoft 365/Exchange, Gmail) with their meaning.
"""

from __future__ import annotations

import enum
import re

_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})(?!\d)")

# A 4xx that asks the sender to slow down, in the words servers use:
#   Postfix anvil(8): "450 4.7.1 Error: too much mail from 192.0.2.1",
#     "… too many recipients from …", "421 4.7.0 host Error: too many connections from …",
#     "… too many new TLS sessions from …", "… too many AUTH commands from …";
#   Exim (smtp_accept_max, ratelimit ACLs): "421 Too many concurrent SMTP connections",
#     "451 … rate limit exceeded", "sender rate overlimit";
#   Microsoft 365: "451 4.7.500 Server busy. Please try again later",
#     "4.7.650 … has been temporarily rate limited", "421 4.3.2 … concurrent connections … limit";
#   Gmail: "421 4.7.28 … unusual rate of unsolicited mail", "421 4.7.0 Try again later, closing connection".
_RATE = re.compile(r"too much mail|too many (?:connections|recipients from|new tls|auth commands|messages|"
                   r"concurrent)|\brate\b|ratelimit|rate[- ]limit|overlimit|throttl|slow down|server busy|"
                   r"try again later,? closing connection|4\.7\.650|4\.3\.2", re.IGNORECASE)
# A 4xx that is about this recipient, even when it mentions a rate (Gmail's "4.2.1 The user you
# are trying to contact is receiving mail at a rate that prevents additional messages").
_RECIPIENT_RATE = re.compile(r"^\s*4\.2\.\d|user you are trying to contact", re.IGNORECASE)
# Postfix's hard error limit: smtpd_hard_error_limit (and the junk command limit) end the session.
_TOO_MANY_ERRORS = re.compile(r"too many errors|too many (?:invalid|unknown|bad|junk) commands", re.IGNORECASE)
# Permanent refusals of the sender, in servers' words where no enhanced code is given:
#   Postfix: "Helo command rejected", "Client host rejected", "Sender address rejected",
#     "Relay access denied"; Exim: "relay not permitted", "Syntactically invalid HELO argument",
#     "HELO/EHLO required", "Administrative prohibition"; Microsoft: "Unable to relay",
#     "Client was not authenticated", "banned sending IP", "traffic not accepted from this IP";
#     Gmail: "DMARC", "the sender is unauthenticated".
_SENDER_TEXT = re.compile(r"helo command rejected|client host rejected|sender address rejected|relay access denied|"
                          r"relay(?:ing)? not permitted|relaying denied|unable to relay|invalid helo|"
                          r"helo/ehlo required|administrative prohibition|not authenticated|authentication required|"
                          r"banned sending ip|not accepted from this ip|blocked using|dmarc|unauthenticated|\bspf\b",
                          re.IGNORECASE)
# A policy code (5.7.x) that a server gives about one recipient, not about us: Postfix's
# check_recipient_access ("Recipient address rejected: Access denied"), Microsoft's restricted
# groups ("RESOLVER.RST.*"), a mailbox that accepts mail from listed senders only.
_RECIPIENT_POLICY = re.compile(r"recipient address rejected|resolver\.rst|not authorized to send to|"
                               r"recipient not authorized|mailbox unavailable|user unknown|no such user",
                               re.IGNORECASE)


class ReplyKind(str, enum.Enum):
    READER = "reader"
    SENDER = "sender"
    RATE = "rate"
    ERRORS = "errors"


def enhanced_code(text: str) -> tuple[int, int, int] | None:
    """The RFC 3463 enhanced status code a reply's text (or a DSN's Status field) starts with."""
    m = _ENHANCED.match(text or "")
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def is_hard_bounce(status: str | tuple[int, int, int] | None, *, basic: int | None = None,
                   phase: str = "RCPT") -> bool:
    """The address itself is bad: 5.1.x or 5.2.1. Without an enhanced code (``status`` None),
    an SMTP server's 550/551/553 answer to RCPT (RFC 5321 4.2.2: mailbox unavailable, user
    not local, mailbox name not allowed) counts."""
    code = enhanced_code(status) if isinstance(status, str) else status
    if code is not None:
        return code[0] == 5 and (code[1] == 1 or code[1:] == (2, 1))
    return phase == "RCPT" and basic in (550, 551, 553)


def reply_kind(code: int, text: str, phase: str = "RCPT") -> ReplyKind:
    """What one SMTP reply (``code`` and its text, enhanced code first) is about; see the module."""
    if code < 400 or code >= 600:
        return ReplyKind.READER
    enhanced = enhanced_code(text)
    if code < 500:
        if _TOO_MANY_ERRORS.search(text):
            return ReplyKind.ERRORS
        if _RATE.search(text) and not _RECIPIENT_RATE.search(text):
            return ReplyKind.RATE
        return ReplyKind.READER
    if phase == "MAIL":  # MAIL FROM refused for good: our envelope sender, whatever the code says
        return ReplyKind.SENDER
    if enhanced is not None and is_hard_bounce(enhanced):
        return ReplyKind.READER
    if _RECIPIENT_POLICY.search(text):
        return ReplyKind.READER
    if enhanced is not None and enhanced[1] == 5:  # 5.5.x: our command or HELO was refused
        return ReplyKind.SENDER
    if _SENDER_TEXT.search(text):
        return ReplyKind.SENDER
    # Any other 5.7.x (content filtering, a generic "policy") may be one reader's own filter:
    # charged to that reader, unless the same answer repeats for readers in a row (SAME_ANSWER_RUN).
    return ReplyKind.READER


#: The same permanent answer (reader's address and ids stripped) for this many different readers
#: in a row is about the sender, whatever its code says.
SAME_ANSWER_RUN = 3
# What a stored reply starts with, kept as is: "rate limited: RCPT 450 4.7.1", "451 4.3.0", "5.7.1".
_HEAD = re.compile(r"\s*(?:[a-z][a-z ]{0,40}: )?(?:(?:MAIL|RCPT|DATA|HTTP)\s+)?(?:\d{3}[ -])?\s*(?:[245]\.\d{1,3}\.\d{1,3}(?!\d))?")
_ADDRESS = re.compile(r"<[^<>\s]*>|[^\s<>()\[\]\"';,]+@[^\s<>()\[\]\"';,]+")
_IDS = re.compile(r"\b(?=[0-9A-Za-z._-]*\d)[0-9A-Za-z_-]{8,}(?:\.[0-9A-Za-z_-]+)*\b|\b\d+\b")


def reply_gist(text: str) -> str:
    """A reply without the reader's address, queue ids, timestamps or numbers: what is the same
    when a server gives the same answer to many readers (for grouping, and the run rule)."""
    text = text or ""
    m = _HEAD.match(text)
    head, text = text[:m.end()], text[m.end():]
    text = _IDS.sub("#", _ADDRESS.sub("<…>", text))
    return " ".join((head + text).split())
