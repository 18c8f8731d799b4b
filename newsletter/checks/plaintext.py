"""The plain-text part: present, about as complete as the HTML, and carrying every link.

Readers who choose plain text (and some spam filters) see only this part, so a
link that exists only in the HTML is a link they cannot follow.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from newsletter.checks.context import CheckContext
from newsletter.checks.html import anchors, link_text, squash
from newsletter.render import PLACEHOLDERS

MIN_RATIO = 0.6
# An address starts only where a run of its characters starts (the look-behind): tried from every
# position of a run, the scan for an @ made a 120 KB run of letters take 51 s (quadratic).
_URL = re.compile(r"(?:https?://|mailto:)[^\s<>\[\]()]+|(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def _normalise(url: str) -> str:
    url = unquote(url.strip()).rstrip(".,;:")
    return url.removeprefix("mailto:").rstrip("/").lower()


def check_plain_text(ctx: CheckContext) -> None:
    text = ctx.rendered.text
    if not text.strip():
        ctx.add("error", "text.missing", "the plain-text part is empty")
        return
    html_len, text_len = len(ctx.visible_text), len(squash(text))
    if html_len and text_len < MIN_RATIO * html_len:
        ctx.add("warning", "text.short",
                f"the plain text has {text_len} characters, {text_len / html_len:.0%} of the HTML's {html_len}; "
                "something may be missing from it")
    in_text = {_normalise(u) for u in _URL.findall(text)}
    seen = set()
    for anchor, href in anchors(ctx.visible_elements):
        if not href or href.startswith("#") or href in seen:
            continue
        seen.add(href)
        if (href in PLACEHOLDERS.values() and href in text) or _normalise(href) in in_text:
            continue
        ctx.add("warning", "text.link-missing",
                f"link {href} (\u201c{link_text(anchor)[:40]}\u201d) is in the HTML but not in the plain text",
                line=ctx.source.urls.get(href))
