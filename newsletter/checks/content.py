"""Content: heading order, leftovers from drafting and templating, insecure links, image sizing."""

from __future__ import annotations

import re

from newsletter.checks.context import CheckContext
from newsletter.render import PLACEHOLDERS

LEFTOVER = re.compile(r"\b(TODO|TKTK|FIXME)\b")
PLACEHOLDER = re.compile(r"%%[A-Za-z0-9_]+%%|\*\|[A-Za-z0-9_:]+\|\*")
TEMPLATE_SYNTAX = ("{{", "{%", "<mj-", "</mj-")
MASTHEAD_LEVEL = 1  # the template's <h1> is the masthead; the body starts at ##


def check_headings(ctx: CheckContext) -> None:
    """Levels go down one at a time (## then ###), so screen-reader outlines make sense."""
    previous = MASTHEAD_LEVEL
    for token in ctx.tokens:
        if token.type != "heading_open":
            continue
        level = int(token.tag[1])
        line = ctx.body_line(token)
        if level == 1:
            ctx.add("warning", "content.heading-h1",
                    "a '#' heading in the body: the masthead is the page's only h1; start sections at '##'", line=line)
        elif level > previous + 1:
            ctx.add("warning", "content.heading-skip",
                    f"heading skips from h{previous} to h{level}; use {'#' * (previous + 1)} here", line=line)
        previous = level


def _leftovers(ctx: CheckContext) -> dict[str, str]:
    """Leftover markers found in the output → what kind of leftover each is."""
    r = ctx.rendered
    haystacks = (r.html, ctx.visible_text, r.text, r.subject, r.preheader)
    found: dict[str, str] = {}
    for hay in haystacks:
        for m in LEFTOVER.finditer(hay):
            found.setdefault(m.group(), "a drafting note")
        for m in PLACEHOLDER.finditer(hay):
            if m.group() not in PLACEHOLDERS.values():
                found.setdefault(m.group(), f"an unknown placeholder (only {', '.join(PLACEHOLDERS.values())} are filled)")
        for marker in TEMPLATE_SYNTAX:
            if marker in hay:
                found.setdefault(marker, "template syntax that was never rendered")
    return found


def check_leftovers(ctx: CheckContext) -> None:
    for marker, kind in _leftovers(ctx).items():
        line = ctx.source.line_of_text(marker)
        where = "" if line else " (it comes from a template)"
        ctx.add("error", "content.leftover", f"'{marker}' is {kind}{where}", line=line)


def check_scaffold_text(ctx: CheckContext) -> None:
    """Instructions `newsletter new` wrote into the issue, still there: they would be mailed and
    published. The lines come from the scaffold itself, so a change to it changes this check."""
    from newsletter.scaffold import scaffold_lines

    if ctx.issue is None:
        return
    wanted = set(scaffold_lines())
    body = ctx.issue.body.split("\n")
    for n, line in enumerate(body):
        if line.strip() in wanted and not (n and body[n - 1].strip() in wanted):  # once per paragraph
            ctx.add("error", "content.scaffold",
                    f"text that `newsletter new` (or `init`) wrote is still here (\u201c{line.strip()[:50]}\u2026\u201d): "
                    "replace it with the issue's own", line=ctx.issue.body_line + n)


def check_insecure_links(ctx: CheckContext) -> None:
    """http: links: readers' browsers warn, and the link can be tampered with on the way."""
    seen = set()
    for element in ctx.visible_elements:
        url = element.get("href") if element.tag == "a" else element.get("src") if element.tag == "img" else None
        if url and url.strip().lower().startswith("http:") and url not in seen:
            seen.add(url)
            ctx.add("warning", "links.insecure", f"{url} uses http: use https:// if the site supports it",
                    line=ctx.source.urls.get(url))


#: The widest an image can be in Outlook for Windows without widening the 640 px email.
EMAIL_IMAGE_MAX = 600


def check_image_sizes(ctx: CheckContext) -> None:
    """Outlook for Windows ignores max-width: it shows an image at its width attribute, or
    without one at its natural size."""
    for img in ctx.visible_elements:
        width = img.get("width", "") if img.tag == "img" else ""
        if width.isdigit() and int(width) > EMAIL_IMAGE_MAX:
            src = img.get("src", "")
            ctx.add("warning", "content.img-too-wide",
                    f"image {src} is {width} px wide: Outlook for Windows widens the whole email to fit it; "
                    f"use {{width={EMAIL_IMAGE_MAX}}} or less", line=ctx.source.urls.get(src))
        if img.tag == "img" and not img.get("width"):
            src = img.get("src", "")
            ctx.add("warning", "content.img-width",
                    f"image {src} has no width: Outlook for Windows shows it at its natural size; give one "
                    f"in pixels after the image, e.g. ![…]({src}){{width=600}}", line=ctx.source.urls.get(src))

