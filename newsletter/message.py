"""The message builder: one rendered issue in, one private MIME message per recipient out.

The expensive work (header folding, quoted-printable encoding of ~60 KB of HTML)
happens once in :class:`PreparedIssue`. Each recipient's bytes are then joined
from prepared segments plus a few short encoded values, which is what makes
personalisation cheap. :func:`build_email_message` builds the same message the
slow, obvious way with :class:`email.message.EmailMessage`; the tests hold the
two equal and the benchmark measures the gap.

Address checks live in :mod:`newsletter.addresses`, the QP and header encoding in
:mod:`newsletter.mime`, DKIM in :mod:`newsletter.dkim`. The renderer is a type only, so importing this module (as the
ledger and delivery engine do) never loads Jinja2 or markdown-it.
"""

from __future__ import annotations

import hashlib
import html as htmllib
import json
import time
from dataclasses import dataclass, field
from email import policy
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formataddr, formatdate
from functools import cached_property
from typing import TYPE_CHECKING, Callable
from urllib.parse import quote

from newsletter.addresses import check_header, validate_address
from newsletter.config import Publication
from newsletter.errors import InputError
from newsletter.message_ids import make_message_id, real_send_salt
from newsletter.mime import (EOL, add_segments, dot_stuff, fold, fold_list_unsubscribe, json_parts, json_segments,
                             segments, stuff_lines, substitute)
from newsletter.tokens import LANGUAGE, make_token

if TYPE_CHECKING:
    from newsletter.render import RenderedEmail

MAX_NAME = 100  # display names are cosmetic; a longer one is cut rather than break a header line


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


@dataclass
class PreparedIssue:
    """An issue made ready to send: render once, then :meth:`personalise` per recipient."""

    rendered: "RenderedEmail"
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
        self._id_salt = (f"{r.slug}:{r.content_hash[:12]}:{time.time_ns()}" if self.test
                         else real_send_salt(r.slug))
        self._date_second, self._date = -1, ""
        self._boundary = "=_nl_" + hashlib.sha256(r.content_hash.encode()).hexdigest()[:24]

    # ---- per-recipient values ----------------------------------------------------
    def message_id(self, email: str) -> str:
        """Deterministic per (issue, recipient), so retries and resumes reuse it."""
        return make_message_id(self.secret_key, self._id_salt, self.rendered.slug, email,
                               self.publication.sender_domain)

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
        return check_header("List-Unsubscribe", ", ".join(f"<{u}>" for u in links))

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
            "language_url": self.language_url(recipient),
        }

    @cached_property
    def _links_editions(self) -> bool:
        return "%%LANGUAGE_URL%%" in self.rendered.text or "%%LANGUAGE_URL%%" in self.rendered.html

    def language_url(self, recipient: Recipient) -> str:
        """The reader's link to choose an edition for future issues (``/language/<token>``, a token
        for that purpose only), when this issue links to other editions."""
        if not (self._links_editions and self.base_url and recipient.subscriber_id is not None):
            return ""
        return f"{self.base_url}/language/{make_token(self.secret_key, recipient.subscriber_id, recipient.email, LANGUAGE)}"

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
        before = fold("From", h.from_) + fold("Subject", h.subject)
        after = fold("Reply-To", h.reply_to) + fold("List-Id", h.list_id)
        if h.list_unsubscribe_post:
            after += fold("List-Unsubscribe-Post", h.list_unsubscribe_post)
        if h.feedback_id:
            after += fold("Feedback-ID", h.feedback_id)
        after += (
            "MIME-Version: 1.0" + EOL
            + f'Content-Type: multipart/alternative; boundary="{self._boundary}"' + EOL + EOL
        )
        return before, after

    @cached_property
    def _text_segments(self) -> list[str]:
        return segments(self.rendered.text)

    @cached_property
    def _html_segments(self) -> list[str]:
        return segments(self.rendered.html)

    @cached_property
    def _part_heads(self) -> tuple[str, str, str]:
        b = self._boundary
        head = lambda sub: (f"--{b}{EOL}Content-Type: text/{sub}; charset=\"utf-8\"{EOL}"
                            f"Content-Transfer-Encoding: quoted-printable{EOL}{EOL}")
        return head("plain"), EOL + head("html"), f"{EOL}--{b}--{EOL}"

    @cached_property
    def _json_segments(self) -> tuple[list[bytes | str], list[bytes | str]]:
        """(text, HTML) with their literals JSON-escaped once, for the JSON providers."""
        return json_segments(self.rendered.text), json_segments(self.rendered.html)

    @cached_property
    def _plain_pieces(self) -> "_Pieces":
        before, after = self._static_header_block
        text_head, html_head, tail = self._part_heads
        return _Pieces(before, after, text_head, self._text_segments, html_head, self._html_segments, tail)

    @cached_property
    def _stuffed_pieces(self) -> "_Pieces":
        """Every prepared piece dot-stuffed once per issue. Each starts a line, so stuffing
        the pieces one by one equals stuffing the joined message (RFC 5321 4.5.2)."""
        p = self._plain_pieces
        stuff_literals = lambda segs: [stuff_lines(s) if i % 2 == 0 else s for i, s in enumerate(segs)]
        return _Pieces(stuff_lines(p.before), stuff_lines(p.after), stuff_lines(p.text_head),
                       stuff_literals(p.text_segments), stuff_lines(p.html_head), stuff_literals(p.html_segments),
                       stuff_lines(p.tail))


@dataclass(frozen=True)
class _Pieces:
    """The prepared parts of every message, in order around the per-recipient values."""

    before: str  # static headers before the per-recipient ones
    after: str  # static headers after them, through the multipart head
    text_head: str
    text_segments: list[str]
    html_head: str
    html_segments: list[str]
    tail: str


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
    def date(self) -> str:
        """Taken once, on first use: every rendering of this message (SMTP bytes, signed
        bytes, a copy kept for the editor) carries the same Date."""
        return self.prepared.date()

    @cached_property
    def _values(self) -> dict[str, str]:
        return self.prepared.values(self.recipient)

    @property
    def placeholder_values(self) -> dict[str, str]:
        """This reader's value for each placeholder key of :data:`~newsletter.mime.PLACEHOLDERS`,
        in plain text (escape for HTML): for providers that substitute them server-side."""
        return dict(self._values)

    @cached_property
    def text(self) -> str:
        return substitute(self.prepared.rendered.text, self._values, escape=False)

    @cached_property
    def html(self) -> str:
        return substitute(self.prepared.rendered.html, self._values, escape=True)

    @property
    def text_json(self) -> list[bytes]:
        """``json.dumps(self.text)`` in pieces, for a request body (see :meth:`_json`)."""
        return self._json("text", 0, escape=False)

    @property
    def html_json(self) -> list[bytes]:
        """``json.dumps(self.html)`` in pieces, for a request body (see :meth:`_json`)."""
        return self._json("html", 1, escape=True)

    def _json(self, part: str, index: int, *, escape: bool) -> list[bytes]:
        """From literals escaped once per issue, or of the part itself once something built it."""
        if part in self.__dict__:
            return [json.dumps(self.__dict__[part]).encode("ascii")]
        return json_parts(self.prepared._json_segments[index], self._values, escape=escape)

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
        data = self._assemble(stuffed=False)
        if self.prepared.signer is not None:
            data = self.prepared.signer(data)
        self.__dict__["_bytes"] = data
        return data

    def smtp_bytes(self) -> bytes:
        """:meth:`as_bytes` dot-stuffed for SMTP DATA: equal to ``dot_stuff(as_bytes())``, but
        joined from pieces stuffed once per issue, so only the short values are scanned."""
        if self.prepared.signer is not None:
            return dot_stuff(self.as_bytes())  # the signature covers the unstuffed bytes
        return self._assemble(stuffed=True)

    def _assemble(self, *, stuffed: bool) -> bytes:
        """The message in one join of the prepared pieces and this recipient's encoded values."""
        p = self.prepared
        pieces = p._stuffed_pieces if stuffed else p._plain_pieces
        per_recipient = (
            fold("Date", self.date)
            + fold("To", p.to_header(self.recipient))
            + fold("Message-ID", self.message_id)
            + fold_list_unsubscribe(p.list_unsubscribe(self.recipient.token))
        )
        text_values = self._values
        html_values = {k: htmllib.escape(v) for k, v in text_values.items()}
        parts = [pieces.before, stuff_lines(per_recipient) if stuffed else per_recipient, pieces.after,
                 pieces.text_head]
        add_segments(parts, pieces.text_segments, text_values, stuffed=stuffed)
        parts.append(pieces.html_head)
        add_segments(parts, pieces.html_segments, html_values, stuffed=stuffed)
        parts.append(pieces.tail)
        return "".join(parts).encode("ascii")


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
    msg.set_content(substitute(prepared.rendered.text, values, escape=False), cte="quoted-printable")
    msg.add_alternative(substitute(prepared.rendered.html, values, escape=True), subtype="html",
                        cte="quoted-printable")
    return msg
