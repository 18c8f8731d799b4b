"""Markdown body → email-safe HTML blocks, from one markdown-it parse.

The token stream parsed here feeds both the HTML (this module) and the plain
text (:mod:`newsletter.plaintext`), so the two parts can never drift apart.
The body is split into blocks at level-2 and level-3 headings: the template
sets off level-3 blocks (one scholar's article each) as cards.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

from markdown_it import MarkdownIt
from markdown_it.token import Token
from mdit_py_plugins.anchors import anchors_plugin
from mdit_py_plugins.footnote import footnote_plugin

from newsletter.errors import InputError


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


@lru_cache(maxsize=1)
def parser() -> MarkdownIt:
    """CommonMark plus tables, strikethrough, footnotes and heading anchors; raw HTML off."""
    md = (
        MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
        .enable(["table", "strikethrough"])
        .use(footnote_plugin)
        .use(anchors_plugin, min_level=2, max_level=4)
    )
    md.add_render_rule("table_open", _table_open)
    md.add_render_rule("table_close", lambda *a, **k: "</table></div>\n")
    md.add_render_rule("image", _image)
    return md


def _table_open(self, tokens, idx, options, env) -> str:  # type: ignore[no-untyped-def]
    # The wrapper scrolls a wide table inside itself, so the page never scrolls sideways at 375 px.
    return '<div class="nl-table-wrap"><table class="nl-table" cellpadding="0" cellspacing="0">\n'


def _image(self, tokens, idx, options, env) -> str:  # type: ignore[no-untyped-def]
    token = tokens[idx]
    token.attrSet("alt", self.renderInlineAsText(token.children or [], options, env))
    token.attrSet("class", "nl-img")
    return self.renderToken(tokens, idx, options, env)


def _check_images(tokens: Sequence[Token], path: object, first_line: int) -> None:
    for token in tokens:
        for child in token.children or ():
            if child.type == "image" and not (child.content or "").strip():
                line = first_line + token.map[0] if token.map else None
                src = child.attrGet("src")
                raise InputError(f"image {src} has no alt text: write ![what it shows]({src})", path=path, line=line)


def _check_nesting(tokens: Sequence[Token], path: object, first_line: int) -> None:
    deep = next((t for t in tokens if t.level > MAX_TOKEN_LEVEL and t.map), None)
    if deep is not None:
        raise InputError("lists or quotes are nested too deeply (at most 8 list levels): "
                         "deeper levels would be lost; flatten them", path=path, line=first_line + deep.map[0])


def parse_body(body: str, *, path: object = None, first_line: int = 1) -> ParsedBody:
    """Parse once; check what email cannot forgive (missing alt text); split into blocks."""
    md = parser()
    env: dict = {}
    tokens = md.parse(body, env)
    _check_nesting(tokens, path, first_line)
    _check_images(tokens, path, first_line)

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
