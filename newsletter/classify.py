"""What a message in the reply-to inbox is: pure, bytes in, a :class:`Classified` out.

Every message gets one class and a one-line reason, whatever its shape: a
malformed or truncated MIME tree, an unknown charset or a missing Message-ID
only change the reason, never raise. Matching against what we sent (which
issue, which reader, is the token genuine) needs the database and happens in
:mod:`newsletter.inbox`; this module only reads the message.

Bounces: RFC 3464 ``message/delivery-status`` parts are read field by field
(Final-Recipient, Action, Status: a failed status that says the address is bad is a
hard bounce, by :func:`newsletter.smtp_status.is_hard_bounce`, the definition the SMTP
transport uses too; any other failure — a full mailbox, a spam filter, a 4.x.x — is soft;
a "delayed" notice is no bounce, or a slow server's hourly notices would add up to a suppression);
bounces in older, non-standard formats from a mailer daemon are left to
flufl.bounce's detectors, which know dozens of MTAs' formats.
"""

from __future__ import annotations

import email
import email.header
import email.policy
import enum
import hashlib
import logging
import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.message import Message
from email.parser import HeaderParser
from email.utils import parseaddr, parsedate_to_datetime

from newsletter.errors import scrub
from newsletter.smtp_status import enhanced_code, is_hard_bounce
from newsletter.excerpt import excerpt, html_to_text, printable
from newsletter.tokens import token_from_request

MAX_PARTS = 200          # a MIME bomb of thousands of parts is not walked
MAX_TEXT_BYTES = 64_000  # of a reply's own text part, more than any digest shows


class Category(str, enum.Enum):
    REPLY = "reply"
    AUTO_REPLY = "auto-reply"
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    OTHER = "other"


@dataclass(frozen=True)
class Failure:
    """One recipient a DSN reports on."""

    address: str
    permanent: bool
    status: str = ""
    diagnostic: str = ""


@dataclass(frozen=True)
class Classified:
    """A message's class, the reason in one line, and what later steps need from it."""

    category: Category
    reason: str
    dedupe_key: str                        # a hash of the bytes read (and the full size): never a header
    sender: str = ""                       # From address, lower-cased
    sender_name: str = ""
    subject: str = ""
    date: datetime | None = None
    references: tuple[str, ...] = ()       # In-Reply-To then References, with angle brackets
    text: str = ""                         # a reply's own first lines
    failures: tuple[Failure, ...] = ()     # a bounce's recipients
    original_message_id: str = ""          # the Message-ID of our message a DSN or ARF report quotes
    complainant: str = ""                  # who complained (ARF Original-Rcpt-To or the original To)
    token: str = ""                        # a mailed unsubscribe's token, not yet verified
    notes: tuple[str, ...] = field(default=())  # what was odd about the message (charset, truncation)

    def line(self) -> str:
        """The reason, with what was odd, on one line (no control characters: it reaches a terminal)."""
        text = self.reason + (f" ({'; '.join(self.notes)})" if self.notes else "")
        return scrub(printable(text), 300)


def parse(raw: bytes) -> Message:
    """Parse without raising: the compat32 policy keeps malformed headers as text."""
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def header(msg: Message, name: str) -> str:
    """An unstructured header (Subject), RFC 2047-decoded (raw 8-bit read as UTF-8), on one line,
    control characters removed after decoding; '' when absent."""
    text = raw_header(msg, name)
    try:
        text = str(email.header.make_header(email.header.decode_header(text)))
    except Exception:  # noqa: BLE001 - broken encoded-words or unknown charsets: keep the raw text
        pass
    return _one_line(text)


def raw_header(msg: Message, name: str) -> str:
    """A structured header (addresses, Message-IDs, DSN fields) as written: no RFC 2047 decoding,
    which the RFC allows only in text and display names, and which would let an encoded word
    supply an address, an id or a line break of its own."""
    value = msg.get(name)
    if value is None:
        return ""
    if isinstance(value, email.header.Header):  # compat32's wrapper for raw 8-bit header bytes
        value = "".join(part.decode("utf-8", "replace") if isinstance(part, bytes) else part
                        for part, _ in email.header.decode_header(value))
    return _one_line(str(value))


def _one_line(text: str) -> str:
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return " ".join(printable(text).split())[:2000]


def mailbox(msg: Message, name: str) -> tuple[str, str]:
    """(display name, address) of an address header, parsed BEFORE RFC 2047 decoding.

    Decoding first let an encoded display name (``=?utf-8?q?Evil=0D=0ABcc=3A_x=40y?=``) add
    structure, a line break and an address of its own, that the parser then took for the sender.
    Only the display name is decoded, as untrusted text: control characters removed."""
    display, address = parseaddr(raw_header(msg, name))
    try:
        display = str(email.header.make_header(email.header.decode_header(display)))
    except Exception:  # noqa: BLE001 - broken encoded-words or unknown charsets: keep the raw text
        pass
    return _one_line(display), address


def message_ids(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(re.findall(r"<[^<>\s]{1,250}>", text)))[:50]


def _date(msg: Message) -> datetime | None:
    value = raw_header(msg, "Date")
    try:
        return parsedate_to_datetime(value) if value else None
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _parts(msg: Message) -> list[Message]:
    out = []
    for part in msg.walk():
        out.append(part)
        if len(out) >= MAX_PARTS:
            break
    return out


def decode_part(part: Message, notes: list[str]) -> str:
    """A text part's content as str: its charset, else UTF-8, else what charset-normalizer
    detects (a GB 2312 reply labelled UTF-8 is common), else Latin-1; never raises."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    payload = payload[:MAX_TEXT_BYTES]
    charset = part.get_content_charset() or ""
    for cs in (charset, "utf-8"):
        if not cs:
            continue
        try:
            return payload.decode(cs)
        except LookupError:
            notes.append(f"unknown charset {charset[:30]!r}")
        except UnicodeDecodeError:
            if cs == charset:
                notes.append(f"not valid {charset[:30]}")
    from charset_normalizer import from_bytes

    found = from_bytes(payload)
    best = found.best()
    if best is not None:
        # A short GB 2312 line often decodes just as cleanly as Korean CP949 (charset-normalizer
        # 3.4 ranks that first): on an exact tie, GB 18030, what Chinese mail clients send.
        best = next((m for m in found if m.encoding == "gb18030" and m.chaos == best.chaos
                     and m.coherence == best.coherence), best)
        notes.append(f"read as {best.encoding}")
        return str(best)
    return payload.decode("latin-1")


# ---- reports: DSN (RFC 3464) and ARF (RFC 5965) -------------------------------------------
def _report_part(parts: list[Message], ctype: str) -> Message | None:
    return next((p for p in parts if p.get_content_type() == ctype), None)


def _fields(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status or message/feedback-report part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    if isinstance(payload, str):  # some senders put the fields in as text
        return [HeaderParser().parsestr(block) for block in re.split(r"\r?\n\r?\n", payload) if block.strip()]
    return []


def _original_headers(parts: list[Message]) -> Message | None:
    """The headers of our message, quoted in a report (message/rfc822 or text/rfc822-headers)."""
    for p in parts:
        ctype = p.get_content_type()
        if ctype == "message/rfc822":
            inner = p.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                return inner[0]
        if ctype == "text/rfc822-headers":
            text = p.get_payload(decode=True) or b""
            return HeaderParser().parsestr(text.decode("utf-8", "replace")[:MAX_TEXT_BYTES])
    return None


_QUOTED_ID = re.compile(r"^Message-ID:[ \t]*(<[^<>\s]{1,250}>)", re.IGNORECASE | re.MULTILINE)


def _original_id(parts: list[Message]) -> str:
    """The Message-ID of our message a report quotes: from its headers part, else (older
    bounce formats paste the message as text) from a ``Message-ID:`` line in a text part."""
    original = _original_headers(parts)
    if original is not None:
        return (message_ids(raw_header(original, "Message-ID")) or ("",))[0]
    for p in parts:  # bodies only: the report's own Message-ID header is not searched
        if p.get_content_maintype() == "text" and (m := _QUOTED_ID.search(decode_part(p, []))):
            return m.group(1)
    return ""


def _address(field_value: str) -> str:
    """``rfc822; user@example.org`` → ``user@example.org``."""
    value = field_value.partition(";")[2] if ";" in field_value else field_value
    return parseaddr(value.strip())[1].lower()


def _dsn_failures(report: Message) -> list[Failure]:
    out = []
    for block in _fields(report)[1:]:  # the first block is per-message
        address = _address(raw_header(block, "Final-Recipient") or raw_header(block, "Original-Recipient"))
        action = raw_header(block, "Action").lower()
        status = raw_header(block, "Status").split(" ")[0]
        if not address or action != "failed":  # "delayed": the MTA is still trying; not a bounce yet
            continue
        # No readable status (RFC 3464 requires one): the daemon said "failed", so hard, as before.
        permanent = is_hard_bounce(status) if enhanced_code(status) else True
        out.append(Failure(address, permanent, status, header(block, "Diagnostic-Code")[:300]))
    return out


def _flufl_failures(msg: Message) -> list[Failure]:
    """Bounces in non-standard formats, through flufl.bounce's per-MTA detectors."""
    from flufl.bounce import all_failures

    # flufl.bounce logs a detector's exception with its traceback before re-raising it;
    # ours is a one-line reason, so its log stays quiet here.
    log = logging.getLogger("flufl.bounce")
    log.propagate = False
    if not log.handlers:
        log.addHandler(logging.NullHandler())
    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # a detector choking on a malformed message: no failures found
        return []
    out = [Failure(a.decode("utf-8", "replace").lower(), True) for a in sorted(permanent)]
    out += [Failure(a.decode("utf-8", "replace").lower(), False) for a in sorted(temporary - permanent)]
    return [f for f in out if "@" in f.address]


def _bounce(msg: Message, parts: list[Message], base: dict) -> Classified | None:
    report = _report_part(parts, "message/delivery-status")
    sender = base["sender"].partition("@")[0]
    daemon = sender in ("mailer-daemon", "postmaster", "mail-daemon") or msg.get_content_type() == "multipart/report"
    if report is None and not daemon:
        return None
    failures = _dsn_failures(report) if report is not None else _flufl_failures(msg)
    orig_id = _original_id(parts)
    how = "RFC 3464 delivery status" if report is not None else "a non-standard bounce (flufl.bounce)"
    if not failures:
        if report is None:
            return None
        return Classified(Category.BOUNCE, f"{how} reporting no failure (delivered, relayed or still trying)",
                          original_message_id=orig_id, **base)
    hard = [f for f in failures if f.permanent]
    kind = "hard" if hard else "soft"
    first = (hard or failures)[0]
    reason = f"{how}: {kind} bounce for {first.address}" + (f" ({first.status})" if first.status else "")
    if len(failures) > 1:
        reason += f" and {len(failures) - 1} more"
    return Classified(Category.BOUNCE, reason, failures=tuple(failures), original_message_id=orig_id, **base)


def _complaint(msg: Message, parts: list[Message], base: dict) -> Classified | None:
    report = _report_part(parts, "message/feedback-report")
    if report is None:
        return None
    blocks = _fields(report)
    fields_ = blocks[0] if blocks else Message()
    ftype = raw_header(fields_, "Feedback-Type").lower() or "unknown"
    original = _original_headers(parts)
    rcpt = _address(raw_header(fields_, "Original-Rcpt-To"))
    if not rcpt and original is not None:
        rcpt = mailbox(original, "To")[1].lower()
    orig_id = _original_id(parts)
    if ftype not in ("abuse", "fraud", "virus", "other"):
        return Classified(Category.OTHER, f"an RFC 5965 feedback report of type {ftype!r}, not a complaint",
                          original_message_id=orig_id, complainant=rcpt, **base)
    who = rcpt or "an unnamed recipient"
    return Classified(Category.COMPLAINT, f"an RFC 5965 abuse report ({ftype}) about {who}",
                      original_message_id=orig_id, complainant=rcpt, **base)


# ---- auto-replies (RFC 3834 and the conventions before it) ---------------------------------
_OOO_SUBJECT = re.compile(
    r"^\s*(?:out of (?:the )?office|automatic reply|auto(?:matic)?[- ]?(?:reply|response)|autoreply|"
    r"abwesenheitsnotiz|réponse automatique|respuesta automática|自动回复|自動回覆|away from)\b|^\s*auto:",
    re.IGNORECASE)


def _auto_reply_reason(msg: Message) -> str:
    auto = header(msg, "Auto-Submitted").lower()
    if auto and auto != "no":
        return f"Auto-Submitted: {auto[:40]} (RFC 3834)"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponse"):
        if header(msg, name):
            return f"{name} header"
    precedence = header(msg, "Precedence").lower()
    if precedence in ("auto_reply", "bulk", "junk", "list"):
        return f"Precedence: {precedence}"
    if header(msg, "X-Auto-Response-Suppress") and _OOO_SUBJECT.search(header(msg, "Subject")):
        return "an Exchange automatic reply"
    if _OOO_SUBJECT.search(header(msg, "Subject")):
        return "an out-of-office subject"
    return ""


# ---- the reader's text ----------------------------------------------------------------------
def reply_text(parts: list[Message], notes: list[str]) -> str:
    """The first lines of the reader's own text: text/plain, else the HTML as text."""
    body = [p for p in parts if not p.is_multipart() and p.get_content_disposition() != "attachment"]
    plain = next((p for p in body if p.get_content_type() == "text/plain"), None)
    if plain is not None:
        return excerpt(decode_part(plain, notes))
    html = next((p for p in body if p.get_content_type() == "text/html"), None)
    if html is not None:
        notes.append("HTML only")
        return excerpt(html_to_text(decode_part(html, notes)))
    notes.append("no text part")
    return ""


_REPLY_SUBJECT = re.compile(r"^\s*(?:re|aw|sv|vs|antw|回复|答复|回覆)\s*[:：]", re.IGNORECASE)
_FORWARD_SUBJECT = re.compile(r"^\s*(?:fwd?|wg|tr|转发|轉寄)\s*[:：]", re.IGNORECASE)


def strip_reply_prefixes(subject: str) -> str:
    """``Re: RE: Fwd: Title`` → ``Title``, to compare with what we sent."""
    prev = None
    while prev != subject:
        prev = subject
        subject = _REPLY_SUBJECT.sub("", _FORWARD_SUBJECT.sub("", subject)).strip()
    return subject


def content_key(raw: bytes, size: int | None = None) -> str:
    """What identifies a message: its bytes (and its full size when only its start was read).
    Never its Message-ID, which anyone can set: a second, different message reusing an id
    would otherwise be dropped as already read."""
    digest = hashlib.sha256(raw)
    if size is not None:
        digest.update(f"\0{size}".encode())
    return "sha256:" + digest.hexdigest()


def _base(msg: Message, raw: bytes, notes: list[str], size: int | None = None) -> dict:
    if not message_ids(raw_header(msg, "Message-ID")):
        notes.append("no Message-ID")
    key = content_key(raw, size)
    name, addr = mailbox(msg, "From")
    return dict(dedupe_key=key, sender=addr.lower()[:320], sender_name=name[:100],
                subject=header(msg, "Subject")[:300], date=_date(msg),
                references=message_ids(raw_header(msg, "In-Reply-To") + " " + raw_header(msg, "References")))


def classify(raw: bytes, *, truncated_from: int | None = None) -> Classified:
    """Classify one message. ``truncated_from`` is its full size when only its start was read."""
    notes: list[str] = []
    if truncated_from is not None:
        notes.append(f"only the first {len(raw) // 1024} KB of {truncated_from // 1024} KB read")
    try:
        msg = parse(raw)
        base = _base(msg, raw, notes, truncated_from)
    except Exception as exc:  # the parser is lenient; this is a last resort, never a traceback
        key = content_key(raw, truncated_from)
        return Classified(Category.OTHER, f"unreadable message ({type(exc).__name__})", key, notes=tuple(notes))
    try:
        found = _classify(msg, base, notes)
    except Exception as exc:
        found = Classified(Category.OTHER, f"unreadable message ({type(exc).__name__})", **base)
    if msg.defects:
        notes.append(f"malformed MIME: {type(msg.defects[0]).__name__}")
    return replace(found, notes=tuple(dict.fromkeys(notes)))


def _classify(msg: Message, base: dict, notes: list[str]) -> Classified:
    parts = _parts(msg)
    if msg.get_content_type() == "multipart/report" and msg.get_param("report-type") == "disposition-notification":
        return Classified(Category.AUTO_REPLY, "a read receipt (RFC 8098 disposition notification)", **base)
    found = _complaint(msg, parts, base) or _bounce(msg, parts, base)
    if found is not None:
        return found
    auto = _auto_reply_reason(msg)
    if auto:
        return Classified(Category.AUTO_REPLY, f"an auto-reply: {auto}", **base)
    token = token_from_request(base["subject"])
    if token:
        return Classified(Category.UNSUBSCRIBE, "a mailed unsubscribe (List-Unsubscribe mailto subject)",
                          token=token, **base)
    if _FORWARD_SUBJECT.match(base["subject"]):
        return Classified(Category.OTHER, "a forwarded message (Fwd: subject), not a reply", **base)
    if base["references"] or _REPLY_SUBJECT.match(base["subject"]):
        how = "In-Reply-To/References" if base["references"] else "a Re: subject"
        return Classified(Category.REPLY, f"a reply ({how})", text=reply_text(parts, notes), **base)
    return Classified(Category.OTHER, "not a reply, report, auto-reply or unsubscribe", **base)
