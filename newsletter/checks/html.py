"""Views of the rendered HTML that several checks share: visibility, links, text."""

from __future__ import annotations

import re
from typing import Iterable, Iterator

import lxml.html

from newsletter.checks.css import style_map

_NOT_CONTENT = ("head", "style", "script", "title")


def is_hidden(element: lxml.html.HtmlElement) -> bool:
    """Hidden from readers by an inline style on it or an ancestor (e.g. the preheader)."""
    node: lxml.html.HtmlElement | None = element
    while node is not None:
        style = style_map(node.get("style", ""))
        if ("display" in style and style["display"].value.lower() == "none") or \
                ("mso-hide" in style and style["mso-hide"].value.lower() == "all"):
            return True
        node = node.getparent()
    return False


def content_elements(doc: lxml.html.HtmlElement) -> Iterator[lxml.html.HtmlElement]:
    """Elements a reader can see (not in head/style, not hidden); comments skipped."""
    for element in doc.iter():
        if not isinstance(element.tag, str) or element.tag in _NOT_CONTENT:
            continue
        if any(a.tag in _NOT_CONTENT for a in element.iterancestors()) or is_hidden(element):
            continue
        yield element


def own_text(element: lxml.html.HtmlElement) -> str:
    """Text directly inside ``element`` (its text and its children's tails)."""
    parts = [element.text or ""] + [child.tail or "" for child in element]
    return squash(" ".join(parts))


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def link_text(anchor: lxml.html.HtmlElement) -> str:
    """What a screen reader announces for a link: its text, else its images' alt, else aria-label."""
    text = squash(anchor.text_content())
    if not text:
        text = squash(" ".join(img.get("alt", "") for img in anchor.iter("img")))
    return text or squash(anchor.get("aria-label", ""))


def anchors(elements: Iterable[lxml.html.HtmlElement]) -> list[tuple[lxml.html.HtmlElement, str]]:
    """The ``<a href>`` among ``elements``, with their (stripped) href."""
    return [(a, a.get("href", "").strip()) for a in elements if a.tag == "a" and a.get("href") is not None]
