"""Markdown body → email-safe HTML blocks, from one markdown-it parse.

The token stream parsed here feeds both the HTML (this module) and the plain
text (:mod:`newsletter.plaintext`), so the two parts can never drift apart.
The body is split into blocks at level-2 and level-3 headings: the template
sets off level-3 blocks (one scholar's article each) as cards.

Two renderings of the same Markdown: the email's, whose footnotes are plain
numbered notes (Gmail on iOS, Outlook mobile, Yahoo and Samsung Mail ignore
local ``#fn1`` anchors), and the web archive's, which keeps the anchors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

from markdown_it import MarkdownIt
from markdown_it.token import Token
from mdit_py_plugins.anchors import anchors_plugin
from mdit_py_plugins.attrs import attrs_plugin
from mdit_py_plugins.footnote import footnote_plugin

from newsletter.errors import InputError
from newsletter.markdown_rules import check_markdown


# markdown-it drops, without a word, whatever nests past its maxNesting (20 token levels in the
# commonmark preset). Refusing from token level 18 keeps every accepted level whole: lists nest at
# most 8 deep (each list level is two token levels), block quotes 16.
MAX_TOKEN_LEVEL = 17


@dataclass(frozen=True)
class Block:
    """One visual unit of the email: the intro, a section, or an article card."""

    kind: str  # "intro" | "section" | "article"
    heading: str
    anchor: str
    html: str


@dataclass(frozen=True)
class ParsedBody:
    tokens: Sequence[Token]
    blocks: Sequence[Block]


#: Attributes an image may carry; ``{width=300}`` after an image sets its width (Outlook for
#: Windows shows an image without one at its natural size).
IMAGE_ATTRS = ("src", "alt", "title", "width")
MAX_IMAGE_WIDTH = 2000
_URL_TEXT = re.compile(r"^(https?://|www\.)\S+$", re.I)


@lru_cache(maxsize=2)
def parser(web: bool = False) -> MarkdownIt:
    """CommonMark plus tables, strikethrough, footnotes, heading anchors, curly quotes and
    ``{width=N}`` on images. Raw HTML is parsed only to be refused (see :func:`parse_body`)."""
    md = (
        MarkdownIt("commonmark", {"html": True, "linkify": False, "typographer": True})
        .enable(["table", "strikethrough", "smartquotes"])
        .use(footnote_plugin)
        .use(anchors_plugin, min_level=2, max_level=4)
        .use(attrs_plugin, after=("image",), allowed=("width",))
    )
    md.validateLink = lambda url: True  # type: ignore[method-assign]  # every destination reaches check_markdown
    md.add_render_rule("table_open", _table_open)
    md.add_render_rule("table_close", lambda *a, **k: "</table></div>\n")
    md.add_render_rule("image", _image)
    md.add_render_rule("link_open", _link_open)
    for rule in ("html_inline", "html_block"):  # never reached (refused first); escaped if it were
        md.add_render_rule(rule, lambda self, tokens, idx, *a: escape_html(tokens[idx].content))
    if not web:
        md.add_render_rule("footnote_ref", _footnote_ref)
        md.add_render_rule("footnote_block_open", _footnote_block_open)
        md.add_render_rule("footnote_block_close", lambda *a, **k: "</ol>\n</div>\n")
        md.add_render_rule("footnote_open", lambda *a, **k: '<li class="footnote-item">')
        md.add_render_rule("footnote_anchor", lambda *a, **k: "")
    return md


def escape_html(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))


def _table_open(self, tokens, idx, options, env) -> str:  # type: ignore[no-untyped-def]
    # The wrapper scrolls a wide table inside itself (see email.css.j2), so the email never widens.
    return '<div class="nl-table-wrap"><table class="nl-table" width="100%" cellpadding="0" cellspacing="0">\n'


def _link_open(self, tokens, idx, options, env) -> str:  # type: ignore[no-untyped-def]
    # A link that shows a bare URL may break anywhere (class nl-url); words in other links stay whole.
    following = tokens[idx + 1] if idx + 1 < len(tokens) else None
    if tokens[idx].markup == "autolink" or (following is not None and following.type == "text"
                                            and _URL_TEXT.match(following.content)):
        tokens[idx].attrJoin("class", "nl-url")
    return self.renderToken(tokens, idx, options, env)


def _footnote_ref(self, tokens, idx, options, env) -> str:  # type: ignore[no-untyped-def]
    return f'<sup class="footnote-ref">[{tokens[idx].meta["id"] + 1}]</sup>'


def _footnote_block_open(self, tokens, idx, options, env) -> str:  # type: ignore[no-untyped-def]
    return '<hr class="footnotes-sep">\n<div class="footnotes">\n<p class="footnotes-title"><strong>Notes</strong></p>\n<ol class="footnotes-list">\n'


def _image(self, tokens, idx, options, env) -> str:  # type: ignore[no-untyped-def]
    token = tokens[idx]
    token.attrSet("alt", self.renderInlineAsText(token.children or [], options, env))
    token.attrSet("class", "nl-img")
    width = token.attrGet("width")
    if width:
        # The width attribute is for Outlook for Windows; width:100% with a max-width lets the image
        # shrink on a phone (a percentage width adds nothing to a table cell's minimum width).
        token.attrSet("style", f"width:100%;max-width:{int(width)}px;height:auto")
    return self.renderToken(tokens, idx, options, env)


def _line_of(block: Token, needle: str, first_line: int, body_lines: list[str]) -> int | None:
    """The file line inside ``block`` where ``needle`` first appears (else the block's first line)."""
    if not block.map:
        return None
    start, end = block.map
    first = needle.split("\n")[0][:40]
    for n in range(start, min(end, len(body_lines))):
        if first in body_lines[n]:
            return first_line + n
    return first_line + start


def _check_raw_html(tokens: Sequence[Token], path: object, first_line: int, lines: list[str]) -> None:
    """Email HTML from Markdown only: raw HTML would show as literal text, so say so, with the line."""
    for token in tokens:
        for child in [token, *(token.children or ())]:
            if child.type in ("html_inline", "html_block"):
                tag = child.content.strip().split("\n")[0][:60]
                hint = " write ![what it shows](url){width=600} instead;" if tag.lower().startswith("<img") else ""
                raise InputError(f"raw HTML {tag!r} is not allowed in an issue (it would show as literal text):"
                                 f"{hint} put it in `backticks` to show it as code, or write \\< for a plain <",
                                 path=path, line=_line_of(token, child.content.strip(), first_line, lines))


def _check_image_attrs(child: Token, path: object, line: int | None) -> None:
    # The attrs plugin keeps only width and puts what it refused (style, on…, class) in meta.
    for name in [*child.meta.get("insecure_attrs", {}), *child.attrs]:
        if name not in IMAGE_ATTRS:
            raise InputError(f"image attribute {name!r} is not supported: only {{width=N}} (pixels)",
                             path=path, line=line)
    width = child.attrs.get("width")
    if width is not None and not (str(width).isdigit() and 0 < int(width) <= MAX_IMAGE_WIDTH):
        raise InputError(f"image width {width!r} must be a whole number of pixels, 1 to {MAX_IMAGE_WIDTH}, "
                         "e.g. {width=600}", path=path, line=line)


def _check_images(tokens: Sequence[Token], path: object, first_line: int, lines: list[str]) -> None:
    for token in tokens:
        for child in token.children or ():
            if child.type != "image":
                continue
            src = child.attrGet("src")
            line = _line_of(token, str(src or ""), first_line, lines)
            if not (child.content or "").strip():
                raise InputError(f"image {src} has no alt text: write ![what it shows]({src})", path=path, line=line)
            _check_image_attrs(child, path, line)


def _check_nesting(tokens: Sequence[Token], path: object, first_line: int) -> None:
    deep = next((t for t in tokens if t.level > MAX_TOKEN_LEVEL and t.map), None)
    if deep is not None:
        raise InputError("lists or quotes are nested too deeply (at most 8 list levels): "
                         "deeper levels would be lost; flatten them", path=path, line=first_line + deep.map[0])


def parse_body(body: str, *, path: object = None, first_line: int = 1, web: bool = False) -> ParsedBody:
    """Parse once; refuse what email cannot forgive (missing alt text, raw HTML, nesting the
    parser would drop); split into blocks.

    ``web`` renders for the archive (footnotes keep their anchors) instead of the email."""
    md = parser(web)
    env: dict = {}
    tokens = md.parse(body, env)
    _check_nesting(tokens, path, first_line)
    lines = body.split("\n")
    _check_raw_html(tokens, path, first_line, lines)
    _check_images(tokens, path, first_line, lines)
    check_markdown(tokens, env, path, lambda block, needle: _line_of(block, needle, first_line, lines), lines,
                   first_line)

    blocks: list[Block] = []
    start = 0
    for i in range(len(tokens) + 1):
        at_split = i == len(tokens) or (tokens[i].type == "heading_open" and tokens[i].tag in ("h2", "h3") and i > 0)
        if not at_split:
            continue
        chunk = tokens[start:i]
        if chunk:
            blocks.append(_block(md, chunk, env))
        start = i
    return ParsedBody(tokens=tokens, blocks=blocks)


def _block(md: MarkdownIt, chunk: list[Token], env: dict) -> Block:
    first = chunk[0]
    html = md.renderer.render(chunk, md.options, env)
    if first.type == "heading_open":
        kind = "article" if first.tag == "h3" else "section"
        return Block(kind, chunk[1].content, first.attrGet("id") or "", html)
    return Block("intro", "", "", html)
