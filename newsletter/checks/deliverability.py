"""Deliverability: what inbox providers and the law look at before anyone reads a word.

Thresholds and their sources:

* Subject over 60 characters: Mailchimp's subject-line guidance ("no more than
  9 words and 60 characters"); desktop inboxes show about 60-70, phones 35-40.
* Preheader under 40 or over 140 characters: inboxes show 40-140 characters of
  preview text (Litmus); shorter lets the body's first words fill the rest.
* One-click unsubscribe (RFC 8058) is required of bulk senders by Gmail and
  Yahoo since February 2024.
* A physical postal address is required by CAN-SPAM (15 U.S.C. 7704(a)(5)).
"""

from __future__ import annotations

import re

from newsletter.checks.context import CheckContext
from newsletter.checks.css import style_map
from newsletter.checks.html import squash

SUBJECT_MAX = 60
PREHEADER_MIN, PREHEADER_MAX = 40, 140
RESERVED_DOMAINS = re.compile(r"(^|\.)(example(\.(com|net|org))?|test|invalid|localhost)$")
#: Sample addresses (``newsletter init`` writes the first) that must not reach a reader.
PLACEHOLDER_ADDRESSES = {"street, city, country", "street, city", "address", "todo", "tbd"}
SPAM_PHRASES = ("act now", "buy now", "cash bonus", "click here", "double your", "earn money", "free!!",
                "guaranteed", "limited time", "no obligation", "risk-free", "risk free", "urgent", "winner",
                "100% free", "you have been selected", "congratulations")


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip(" >").lower()


def _title_line(ctx: CheckContext) -> int | None:
    return ctx.issue.field_line("title") if ctx.issue else None


def check_subject(ctx: CheckContext) -> None:
    subject = ctx.rendered.subject
    if len(subject) > SUBJECT_MAX:
        ctx.add("warning", "deliver.subject-length",
                f"the subject is {len(subject)} characters; inboxes cut it near {SUBJECT_MAX} (phones near 40), "
                "so put the words that matter first", line=_title_line(ctx))
    letters = [c for c in subject if c.isalpha()]
    if len(letters) >= 10 and sum(c.isupper() for c in letters) / len(letters) > 0.7:
        ctx.add("warning", "deliver.subject-caps", "the subject is mostly capitals, which spam filters score against",
                line=_title_line(ctx))
    for text, where in ((subject, "subject"), (ctx.rendered.preheader, "preheader")):
        lowered = text.lower()
        hits = [p for p in SPAM_PHRASES if p in lowered]
        if hits or "!!" in text:
            shown = ", ".join(repr(h) for h in hits or ["!!"])
            ctx.add("warning", "deliver.spam-phrase", f"the {where} contains {shown}, which spam filters score against",
                    line=_title_line(ctx) if where == "subject" else None)


def check_preheader(ctx: CheckContext) -> None:
    from newsletter.textwidth import width

    n = width(ctx.rendered.preheader)  # an inbox fits half as many CJK characters: each counts two
    if n < PREHEADER_MIN or n > PREHEADER_MAX:
        size = f"{n} characters" if n == len(ctx.rendered.preheader) else f"{n} columns wide (a CJK character is two)"
        ctx.add("warning", "deliver.preheader-length",
                f"the preheader is {size}; inboxes show {PREHEADER_MIN}-{PREHEADER_MAX} "
                "(set 'preheader' or 'subtitle' in the front matter)")


def check_addresses(ctx: CheckContext) -> None:
    pub = ctx.settings.publication
    sender = pub.sender_domain
    if RESERVED_DOMAINS.search(sender):
        ctx.add("warning", "deliver.example-domain",
                f"From is at {sender}, a reserved example domain: set NEWSLETTER_FROM to an address at a domain "
                "you control, with SPF, DKIM and DMARC set up", path=ctx.settings.root / "newsletter.toml")
    reply = _domain(ctx.message.get("Reply-To", "") or pub.reply_to_address)
    if reply and reply != sender:
        ctx.add("info", "deliver.reply-to-domain",
                f"replies go to {reply}, mail comes from {sender}: that is fine, DMARC checks only the From "
                "domain (against SPF and DKIM), never Reply-To")


def check_unsubscribe(ctx: CheckContext) -> None:
    msg = ctx.message
    header = msg.get("List-Unsubscribe", "")
    if not header:
        ctx.add("error", "deliver.list-unsubscribe", "the message has no List-Unsubscribe header")
        return
    if ctx.settings.publication.base_url.startswith("https://"):
        if msg.get("List-Unsubscribe-Post", "") != "List-Unsubscribe=One-Click" or "<https://" not in header:
            ctx.add("error", "deliver.one-click",
                    "one-click unsubscribe is incomplete: List-Unsubscribe needs an https URL and "
                    "List-Unsubscribe-Post: List-Unsubscribe=One-Click (RFC 8058)")
    else:
        ctx.add("warning", "deliver.one-click",
                "no one-click unsubscribe: Gmail and Yahoo require it of bulk senders. Set NEWSLETTER_BASE_URL "
                "to the https address where `newsletter serve` runs", path=ctx.settings.root / "newsletter.toml")


def check_postal_address(ctx: CheckContext) -> None:
    address = squash(ctx.settings.publication.postal_address)
    toml = ctx.settings.root / "newsletter.toml"
    if not address:
        ctx.add("error", "deliver.postal-address",
                "no postal address: CAN-SPAM requires one in every issue; set postal_address in newsletter.toml",
                path=toml)
        return
    if address.lower().strip(" .") in PLACEHOLDER_ADDRESSES:
        ctx.add("error", "deliver.postal-address",
                f"the postal address is still the sample {address!r}: CAN-SPAM requires your real one; "
                "set postal_address in newsletter.toml", path=toml)
        return
    missing = [part for part, text in (("HTML", ctx.visible_text), ("plain text", squash(ctx.rendered.text)))
               if address not in text]
    if missing:
        ctx.add("error", "deliver.postal-address",
                f"the postal address is missing from the {' and the '.join(missing)}: CAN-SPAM requires it "
                "(check the footer of the templates)")


def check_hidden_text_colour(ctx: CheckContext) -> None:
    """Hidden text with a colour of its own, as MJML's ``<mj-preview>`` hides the preheader
    (white on the page): SpamAssassin scores it HTML_FONT_LOW_CONTRAST. The shipped
    template hides the preheader by size and display alone."""
    for element in ctx.doc.iter():
        if not isinstance(element.tag, str) or not element.get("style"):
            continue
        style = style_map(element.get("style", ""))
        hidden = style.get("display") and style["display"].value.lower() == "none"
        if hidden and "color" in style and squash(element.text_content()):
            path, line = _template_line(ctx, "<mj-preview")
            ctx.add("warning", "deliver.hidden-text-colour",
                    f"hidden text is coloured ({style['color'].value}), which spam filters score as text "
                    "matching its background (SpamAssassin HTML_FONT_LOW_CONTRAST); hide the preheader "
                    "without a colour, as the shipped email.mjml.j2 does instead of <mj-preview>",
                    path=path, line=line)
            return


def _template_line(ctx: CheckContext, needle: str) -> tuple[object, int | None]:
    """The publication template line containing ``needle``, else the templates folder."""
    folder = ctx.settings.templates_dir
    for path in sorted(folder.glob("*.j2")) if folder.is_dir() else ():
        for n, text in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            if needle in text:
                return path, n
    return folder, None


def check_helo_name(ctx: CheckContext) -> None:
    """The name the SMTP transport gives in EHLO: SMTP_HELO_NAME, else this host's fully qualified
    name. A bare or private name is refused by many servers (Postfix's reject_non_fqdn_helo_hostname:
    "504 5.5.2 Helo command rejected"), and then every reader's message is: the send is held."""
    if ctx.settings.transport_name != "smtp":
        return
    import socket

    from newsletter.hosts import is_fully_qualified

    name = ctx.settings.get("SMTP_HELO_NAME") or socket.getfqdn()
    if not is_fully_qualified(name):
        source = "SMTP_HELO_NAME" if ctx.settings.get("SMTP_HELO_NAME") else "this host's name (socket.getfqdn())"
        ctx.add("warning", "deliver.helo-name",
                f"the SMTP EHLO name {name[:80]!r}, from {source}, is not a fully qualified domain name; servers "
                "that check it refuse every message (504 5.5.2 Helo command rejected). Set SMTP_HELO_NAME to this "
                "machine's public name", path=".env")
