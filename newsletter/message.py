"""The message builder: one rendered issue in, one private MIME message per recipient out.

The expensive work (header folding, quoted-printable encoding of ~60 KB of HTML)
happens once in :class:`PreparedIssue`. Each recipient's bytes are then joined
from prepared segments plus a few short encoded values, which is what makes
personalisation cheap. :func:`build_email_message` builds the same message the
slow, obvious way with :class:`email.message.EmailMessage`; the tests hold the
two equal and the benchmark measures the gap.
"""

from __future__ import annotations

import hashlib
import hmac
import html as htmllib
import re
import time
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email import quoprimime
from email.header import Header
from email.headerregistry import Address
from email.utils import formataddr, formatdate
from functools import cached_property
from typing import Callable
from urllib.parse import quote

from newsletter.config import Publication
from newsletter.errors import ConfigError, HeaderInjectionError, InputError
from newsletter.render import PLACEHOLDERS, RenderedEmail
from newsletter.tokens import make_token

# Control characters (C0 except TAB, DEL, C1) and Unicode line/paragraph separators.
_UNSAFE_HEADER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_PLACEHOLDER_RE = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS.values()))
_KEY_BY_MARKER = {marker: key for key, marker in PLACEHOLDERS.items()}
_EOL = "\r\n"
_SMTP = policy.SMTP.clone(max_line_length=78)
MAX_NAME = 100  # display names are cosmetic; a longer one is cut rather than break a header line
DKIM_HEADERS = (b"From", b"Subject", b"Date", b"Message-ID", b"To", b"List-Unsubscribe", b"List-Unsubscribe-Post")


def check_header(name: str, value: str) -> str:
    """Refuse header injection: any CR, LF or control character in a header value."""
    if _UNSAFE_HEADER.search(value):
        raise HeaderInjectionError(f"{name} contains a line break or control character: {value[:60]!r}")
    return value


def validate_address(address: str, what: str = "address") -> str:
    """Syntax-check an address offline; returns it normalised (domain lower-cased)."""
    check_header(what, address)
    from email_validator import EmailNotValidError, validate_email

    try:
        info = validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise InputError(f"invalid {what} {address!r}: {exc}") from None
    return info.normalized


@dataclass(frozen=True)
class Recipient:
    """Who one message goes to, and the per-recipient values substituted into it."""

    email: str
    name: str = ""
    token: str = ""
    subscriber_id: int | None = None


@dataclass(frozen=True)
class HeaderValues:
    """Every header's *value*, decided once: both builders encode these same values."""

    from_: str
    subject: str
    reply_to: str
    list_id: str
    list_unsubscribe_post: str | None
    feedback_id: str | None


def _qp(text: str) -> str:
    """Quoted-printable for UTF-8 text, CRLF line ends, lines of at most 75 characters,
    so the soft break added at a placeholder join keeps every line within RFC 2045's 76."""
    return quoprimime.body_encode(text.encode("utf-8").decode("latin-1"), maxlinelen=75, eol=_EOL)


def _segments(body: str) -> list[str]:
    """Split a body into alternating literal/placeholder pieces, literals QP-encoded.

    Even indexes are encoded literals, odd ones placeholder keys. Each value is
    later encoded on its own between soft line breaks, so no line can grow past
    the limit and decoding gives back exactly the substituted text.
    """
    out: list[str] = []
    pos = 0
    for m in _PLACEHOLDER_RE.finditer(body):
        out.append(_qp(body[pos:m.start()]))
        out.append(_KEY_BY_MARKER[m.group()])
        pos = m.end()
    out.append(_qp(body[pos:]))
    return out


def _join(segments: list[str], values: dict[str, str]) -> str:
    parts: list[str] = []
    for i, seg in enumerate(segments):
        if i % 2 == 0:
            parts.append(seg)
        else:
            if parts and parts[-1] and not parts[-1].endswith(_EOL):
                parts.append("=" + _EOL)
            parts.append(_qp(values[seg]))
            parts.append("=" + _EOL)
    return "".join(parts)


@dataclass
class PreparedIssue:
    """An issue made ready to send: render once, then :meth:`personalise` per recipient."""

    rendered: RenderedEmail
    publication: Publication
    secret_key: str
    test: bool = False
    signer: Callable[[bytes], bytes] | None = None
    base_url: str = ""
    headers: HeaderValues = field(init=False)

    def __post_init__(self) -> None:
        pub, r = self.publication, self.rendered
        subject = ("[TEST] " if self.test else "") + r.subject
        self.base_url = self.base_url or pub.base_url
        reply_to = r.reply_to or pub.reply_to_address
        validate_address(pub.from_email, "From address (newsletter.toml from_email)")
        validate_address(reply_to, f"Reply-To address ({r.source or 'newsletter.toml'})")
        self.headers = HeaderValues(
            from_=check_header("From", formataddr((pub.from_name or pub.name, pub.from_email))),
            subject=check_header("Subject", subject),
            reply_to=check_header("Reply-To", reply_to),
            list_id=check_header("List-Id", pub.list_id_header),
            list_unsubscribe_post="List-Unsubscribe=One-Click" if self.base_url.startswith("https://") else None,
            feedback_id=check_header("Feedback-ID", pub.feedback_id) if pub.feedback_id else None,
        )
        # Salt test Message-IDs with the time so a second test send is not deduplicated.
        self._id_salt = f"{r.slug}:{r.content_hash[:12] if self.test else ''}:{time.time_ns() if self.test else ''}"
        self._date_second, self._date = -1, ""
        self._boundary = "=_nl_" + hashlib.sha256(r.content_hash.encode()).hexdigest()[:24]

    # ---- per-recipient values ----------------------------------------------------
    def message_id(self, email: str) -> str:
        """Deterministic per (issue, recipient), so retries and resumes reuse it."""
        digest = hmac.new(self.secret_key.encode(), f"{self._id_salt}:{email.lower()}".encode(), hashlib.sha256)
        return f"<{self.rendered.slug}.{digest.hexdigest()[:24]}@{self.publication.sender_domain}>"

    def unsubscribe_url(self, token: str) -> str:
        if self.base_url:
            return f"{self.base_url}/unsubscribe/{token}"
        return self.unsubscribe_mailto(token)

    def unsubscribe_mailto(self, token: str) -> str:
        return f"mailto:{self.publication.unsubscribe_address}?subject=" + quote(f"unsubscribe {token}".strip())

    def list_unsubscribe(self, token: str) -> str:
        links = [self.unsubscribe_mailto(token)]
        if self.base_url.startswith("https://"):
            links.insert(0, self.unsubscribe_url(token))
        return ", ".join(f"<{u}>" for u in links)

    def to_header(self, recipient: Recipient) -> str:
        """``Name <address>``, the name RFC 2047-encoded when it is not ASCII."""
        check_header("To", recipient.email)
        if not recipient.email.isascii():
            # RFC 2047 cannot encode an address; that needs SMTPUTF8, which we do not use.
            raise InputError(f"{recipient.email!r} is not an ASCII address; internationalised addresses are not supported")
        name = check_header("name", recipient.name)[:MAX_NAME]
        if not name:
            return recipient.email
        if name.isascii():
            return formataddr((name, recipient.email))
        # RFC 2047 encoded-words of at most 75 characters, which the folder may put on separate lines.
        encoded = Header(name, "utf-8", maxlinelen=70).encode(splitchars=" ").replace("\n ", " ")
        return f"{encoded} <{recipient.email}>"

    def date(self) -> str:
        """The Date header, taken when each message is made: a paced send can last hours."""
        now = int(time.time())
        if now != self._date_second:
            self._date_second, self._date = now, formatdate(now, localtime=True)
        return self._date

    def values(self, recipient: Recipient) -> dict[str, str]:
        """Placeholder values in plain text; HTML escaping happens per part."""
        return {
            "unsubscribe_url": self.unsubscribe_url(recipient.token),
            "email": recipient.email,
            "name": recipient.name,
        }

    def personalise(self, recipient: Recipient) -> "OutgoingMessage":
        return OutgoingMessage(self, recipient)

    def for_subscriber(self, subscriber_id: int, email: str, name: str = "") -> "OutgoingMessage":
        """A subscriber's message, with the unsubscribe token signed by this issue's key."""
        token = make_token(self.secret_key, subscriber_id, email)
        return OutgoingMessage(self, Recipient(email, name, token, subscriber_id))

    # ---- prepared encodings (computed once) ----------------------------------------
    @cached_property
    def _static_header_block(self) -> tuple[str, str]:
        h = self.headers
        before = _fold("From", h.from_) + _fold("Subject", h.subject)
        after = _fold("Reply-To", h.reply_to) + _fold("List-Id", h.list_id)
        if h.list_unsubscribe_post:
            after += _fold("List-Unsubscribe-Post", h.list_unsubscribe_post)
        if h.feedback_id:
            after += _fold("Feedback-ID", h.feedback_id)
        after += (
            "MIME-Version: 1.0" + _EOL
            + f'Content-Type: multipart/alternative; boundary="{self._boundary}"' + _EOL + _EOL
        )
        return before, after

    @cached_property
    def _text_segments(self) -> list[str]:
        return _segments(self.rendered.text)

    @cached_property
    def _html_segments(self) -> list[str]:
        return _segments(self.rendered.html)

    @cached_property
    def _part_heads(self) -> tuple[str, str, str]:
        b = self._boundary
        head = lambda sub: (f"--{b}{_EOL}Content-Type: text/{sub}; charset=\"utf-8\"{_EOL}"
                            f"Content-Transfer-Encoding: quoted-printable{_EOL}{_EOL}")
        return head("plain"), _EOL + head("html"), f"{_EOL}--{b}--{_EOL}"


def _fold(name: str, value: str) -> str:
    """One header, RFC 2047-encoded where needed and folded to 78 columns, CRLF-terminated."""
    if not value.isascii():
        return _SMTP.header_factory(name, value).fold(policy=_SMTP)
    # ASCII: fold at spaces ourselves. The email package folds a long value right
    # after the colon, which its own parser then reads back with a leading space.
    lines, line = [], f"{name}:"
    for word in value.split(" "):
        if len(line) + 1 + len(word) > 78 and line != f"{name}:":
            lines.append(line)
            line = ""
        line += " " + word
    lines.append(line)
    if max(map(len, lines)) > 998:  # a word too long even for RFC 5322's hard limit: encode and split it
        return _SMTP.header_factory(name, value).fold(policy=_SMTP)
    return _EOL.join(lines) + _EOL


class OutgoingMessage:
    """One recipient's message. Parts are built lazily: SMTP needs only bytes,
    JSON providers need only the personalised HTML, text and headers."""

    __slots__ = ("prepared", "recipient", "__dict__")

    def __init__(self, prepared: PreparedIssue, recipient: Recipient):
        self.prepared = prepared
        self.recipient = recipient

    # Convenience views used by the HTTP providers ----------------------------------
    @property
    def to_email(self) -> str:
        return self.recipient.email

    @cached_property
    def message_id(self) -> str:
        return self.prepared.message_id(self.recipient.email)

    @property
    def subject(self) -> str:
        return self.prepared.headers.subject

    @property
    def from_email(self) -> str:
        return self.prepared.publication.from_email

    @property
    def from_name(self) -> str:
        pub = self.prepared.publication
        return pub.from_name or pub.name

    @property
    def reply_to(self) -> str:
        return self.prepared.headers.reply_to

    @cached_property
    def _values(self) -> dict[str, str]:
        return self.prepared.values(self.recipient)

    @property
    def placeholder_values(self) -> dict[str, str]:
        """This reader's value for each placeholder key of :data:`~newsletter.render.PLACEHOLDERS`,
        in plain text (escape for HTML): for providers that substitute them server-side."""
        return dict(self._values)

    @cached_property
    def text(self) -> str:
        return _substitute(self.prepared.rendered.text, self._values, escape=False)

    @cached_property
    def html(self) -> str:
        return _substitute(self.prepared.rendered.html, self._values, escape=True)

    @cached_property
    def extra_headers(self) -> dict[str, str]:
        """Headers beyond From/To/Subject/Reply-To, for providers that take JSON."""
        h = self.prepared.headers
        out = {
            "Message-ID": self.message_id,
            "List-Id": h.list_id,
            "List-Unsubscribe": self.prepared.list_unsubscribe(self.recipient.token),
        }
        if h.list_unsubscribe_post:
            out["List-Unsubscribe-Post"] = h.list_unsubscribe_post
        if h.feedback_id:
            out["Feedback-ID"] = h.feedback_id
        return out

    def as_bytes(self) -> bytes:
        """The full RFC 5322 message, CRLF line ends, DKIM-signed when configured."""
        cached = self.__dict__.get("_bytes")
        if cached is not None:
            return cached
        p = self.prepared
        before, after = p._static_header_block
        text_head, html_head, tail = p._part_heads
        per_recipient = (
            _fold("Date", p.date())
            + _fold("To", p.to_header(self.recipient))
            + _fold("Message-ID", self.message_id)
            + _fold_list_unsubscribe(p.list_unsubscribe(self.recipient.token))
        )
        text_values = self._values
        html_values = {k: htmllib.escape(v) for k, v in text_values.items()}
        data = (
            before + per_recipient + after + text_head + _join(p._text_segments, text_values)
            + html_head + _join(p._html_segments, html_values) + tail
        ).encode("ascii")
        if p.signer is not None:
            data = p.signer(data)
        self.__dict__["_bytes"] = data
        return data


def _fold_list_unsubscribe(value: str) -> str:
    # Fold after each comma: URLs must never be broken, and each stays far under 998.
    return "List-Unsubscribe: " + ("," + _EOL + " ").join(v.strip() for v in value.split(",")) + _EOL


def _substitute(body: str, values: dict[str, str], *, escape: bool) -> str:
    def repl(m: re.Match[str]) -> str:
        v = values[_KEY_BY_MARKER[m.group()]]
        return htmllib.escape(v) if escape else v

    return _PLACEHOLDER_RE.sub(repl, body)


def build_email_message(prepared: PreparedIssue, recipient: Recipient) -> EmailMessage:
    """The reference build: the same message through :class:`EmailMessage`, the slow way.

    Used as the oracle in tests and the baseline in benchmarks; never on the send path.
    """
    h = prepared.headers
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = h.from_
    prepared.to_header(recipient)  # the same checks as the fast path
    msg["To"] = Address(display_name=recipient.name[:MAX_NAME], addr_spec=recipient.email)
    msg["Subject"] = h.subject
    msg["Date"] = prepared.date()
    msg["Message-ID"] = prepared.message_id(recipient.email)
    msg["Reply-To"] = h.reply_to
    msg["List-Id"] = h.list_id
    msg["List-Unsubscribe"] = prepared.list_unsubscribe(recipient.token)
    if h.list_unsubscribe_post:
        msg["List-Unsubscribe-Post"] = h.list_unsubscribe_post
    if h.feedback_id:
        msg["Feedback-ID"] = h.feedback_id
    values = prepared.values(recipient)
    msg.set_content(_substitute(prepared.rendered.text, values, escape=False), cte="quoted-printable")
    msg.add_alternative(_substitute(prepared.rendered.html, values, escape=True), subtype="html",
                        cte="quoted-printable")
    return msg


def dkim_signer(selector: str, domain: str, private_key: bytes) -> Callable[[bytes], bytes]:
    """A signer for :attr:`PreparedIssue.signer` using dkimpy (relaxed/relaxed, rsa-sha256).

    The key is tried once here, on a tiny message, so a bad key, selector or domain is a
    one-line error before any reader is claimed, never an exception in the middle of a send.
    """
    import dkim

    for what, value in (("NEWSLETTER_DKIM_SELECTOR", selector), ("NEWSLETTER_DKIM_DOMAIN", domain)):
        if not value or not value.isascii() or _UNSAFE_HEADER.search(value) or any(c in value for c in " ;="):
            raise ConfigError(f"{what} is not a plain DNS label (letters, digits, dots, hyphens)")
    try:
        dkim.sign(b"From: a@example.org\r\nSubject: key check\r\n\r\nx\r\n", selector.encode(), domain.encode(),
                  private_key, include_headers=[b"From"])
    except (dkim.DKIMException, ValueError, TypeError, IndexError) as exc:
        raise ConfigError(f"NEWSLETTER_DKIM_KEY_FILE is not a usable RSA private key in PEM form "
                          f"({type(exc).__name__})") from None

    def sign(data: bytes) -> bytes:
        sig = dkim.sign(data, selector.encode(), domain.encode(), private_key,
                        include_headers=list(DKIM_HEADERS), canonicalize=(b"relaxed", b"relaxed"))
        return sig.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + data

    return sign
