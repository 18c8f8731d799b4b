"""The plain-text part, written from the same markdown-it tokens as the HTML.

Not scraped from HTML: headings are marked, lists and quotes keep their shape,
and links become numbered references listed at the end, the way careful
plain-text newsletters have always done it.
"""

from __future__ import annotations

import textwrap
from typing import Sequence

from markdown_it.token import Token
from markdown_it.tree import SyntaxTreeNode

from newsletter.textwidth import fill, width as display_width

WIDTH = 72
_UNDERLINE = {"h1": "=", "h2": "=", "h3": "-"}


class _Writer:
    def __init__(self, width: int) -> None:
        self.width = width
        self.links: list[str] = []

    # ---- inline ---------------------------------------------------------------------
    def inline(self, node: SyntaxTreeNode) -> str:
        out: list[str] = []
        for child in node.children:
            t = child.type
            if t == "text" or t == "code_inline":
                out.append(child.content)
            elif t in ("softbreak",):
                out.append(" ")
            elif t == "hardbreak":
                out.append("\n")
            elif t == "link":
                out.append(self._link(child))
            elif t == "image":
                out.append(f"[{self.inline(child) or child.content}]")
            elif t == "s":  # strikethrough: "notes ~~no~~ some", not "notes no some"
                out.append(f"~~{self.inline(child)}~~")
            elif t == "footnote_ref":
                out.append(f"[^{child.meta.get('id', 0) + 1}]")
            else:  # strong, em, and anything nested
                out.append(self.inline(child))
        return "".join(out)

    def _link(self, node: SyntaxTreeNode) -> str:
        text = self.inline(node)
        href = str(node.attrs.get("href", ""))
        if href in (text, f"mailto:{text}") or not href or href.startswith("#"):
            return text  # the reader already sees the address; a reference would only repeat it
        if href not in self.links:
            self.links.append(href)
        return f"{text} [{self.links.index(href) + 1}]"

    # ---- blocks ---------------------------------------------------------------------
    def blocks(self, nodes: Sequence[SyntaxTreeNode], width: int) -> list[str]:
        paragraphs: list[str] = []
        for node in nodes:
            text = self.block(node, width)
            if text is not None:
                paragraphs.append(text)
        return paragraphs

    def wrap(self, text: str, width: int) -> str:
        return fill(text, max(width, 20))  # by display width: a CJK character is two columns

    def block(self, node: SyntaxTreeNode, width: int) -> str | None:
        t = node.type
        if t == "heading":
            text = self.inline(node.children[0])
            mark = _UNDERLINE.get(node.tag)
            return f"{text}\n{mark * min(display_width(text), width)}" if mark else f"### {text}"
        if t == "paragraph":
            return self.wrap(self.inline(node.children[0]), width)
        if t in ("bullet_list", "ordered_list"):
            items = []
            start = int(node.attrs.get("start", 1) or 1)
            for n, item in enumerate(node.children, start=start):
                marker = f"{n}. " if t == "ordered_list" else "- "
                body = "\n\n".join(self.blocks(item.children, width - len(marker)))
                items.append(textwrap.indent(body, " " * len(marker))[len(marker):].join([marker, ""]))
            tight = all(not c.children or c.children[0].type == "paragraph" for c in node.children)
            return ("\n" if tight else "\n\n").join(items)
        if t == "blockquote":
            return textwrap.indent("\n\n".join(self.blocks(node.children, width - 2)), "> ", lambda _: True)
        if t in ("fence", "code_block"):
            return textwrap.indent(node.content.rstrip("\n"), "    ")
        if t == "hr":
            return "-" * min(20, width)
        if t == "table":
            return self._table(node)
        if t == "footnote_block":
            notes = []
            for n, fn in enumerate(node.children, start=1):
                body = " ".join(self.blocks([c for c in fn.children if c.type != "footnote_anchor"], width))
                notes.append(self.wrap(f"[^{n}]: {body}", width))
            return "\n".join(notes)
        if t == "html_block":
            return None
        return "\n\n".join(self.blocks(node.children, width)) or None

    def _table(self, node: SyntaxTreeNode) -> str:
        rows = []
        for section in node.children:
            for tr in section.children:
                rows.append(" | ".join(self.inline(cell.children[0]) if cell.children else "" for cell in tr.children))
        return "\n".join(rows)


def to_plain_text(tokens: Sequence[Token], width: int = WIDTH, links_label: str = "Links:") -> str:
    """Plain text of the body, with a numbered link list (under ``links_label``, in the issue's
    language) at the end when there are links."""
    writer = _Writer(width)
    tree = SyntaxTreeNode(list(tokens))
    text = "\n\n".join(writer.blocks(tree.children, width))
    if writer.links:
        refs = "\n".join(f"[{i}] {href}" for i, href in enumerate(writer.links, start=1))
        text += f"\n\n{links_label}\n" + refs
    return text
