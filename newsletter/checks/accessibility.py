"""Accessibility: language, alternative text, meaningful link text, and contrast.

Screen readers pick a voice by ``lang``, read ``alt`` in place of images
(and many inboxes block images by default, showing the alt instead), list
links out of context by their text, and low-contrast text fails readers in
sunlight as much as readers with low vision.
"""

from __future__ import annotations

from newsletter.checks.context import CheckContext
from newsletter.checks.contrast import Palette, contrast_problems
from newsletter.checks.html import anchors, link_text, own_text

VAGUE_LINK_TEXT = {"click here", "here", "read more", "more", "link", "this link", "click", "this", "learn more"}


def check_lang(ctx: CheckContext) -> None:
    if not (ctx.doc.get("lang") or "").strip():
        ctx.add("error", "a11y.lang", "<html> has no lang attribute: screen readers cannot choose the language")


def check_alt_text(ctx: CheckContext) -> None:
    for img in ctx.doc.body.iter("img"):
        if img.get("alt") is None:
            src = img.get("src", "")
            ctx.add("error", "a11y.img-alt",
                    f"image {src} has no alt text: write ![what it shows]({src})", line=ctx.source.urls.get(src))


def check_link_text(ctx: CheckContext) -> None:
    for anchor, href in anchors(ctx.visible_elements):
        text = link_text(anchor)
        line = ctx.source.urls.get(href)
        if not text:
            ctx.add("warning", "a11y.link-text", f"link {href} has no text: screen readers read out the address",
                    line=line)
        elif text.lower().strip(" .:!…→»") in VAGUE_LINK_TEXT:
            ctx.add("warning", "a11y.link-text",
                    f"link text \u201c{text}\u201d says nothing out of context: name where it goes ({href})", line=line)


def check_contrast(ctx: CheckContext) -> None:
    texts = [(e, t) for e in ctx.visible_elements if (t := own_text(e))]
    for dark, code, mode in ((False, "a11y.contrast", ""), (True, "a11y.contrast-dark", " in dark mode")):
        for p in contrast_problems(texts, Palette(ctx.doc, dark=dark)):
            places = f", {p.count} places" if p.count > 1 else ""
            ctx.add("error", code,
                    f"text {p.foreground} on {p.background}{mode} has contrast {p.ratio:.2f}:1, below WCAG AA's "
                    f"{p.required:g}:1 (e.g. \u201c{p.example}\u201d{places}); change the colours in newsletter.toml "
                    "or templates/email.css.j2")
