"""What an issue's Markdown may not contain, beyond raw HTML: each refused with its line.

* Elements that would render empty: a heading, a link text, a list item or a quote with nothing
  in it, a link with no address. A reader sees a gap (or a screen reader says "link") and the
  editor never learns why.
* Footnotes that do not pair up: a reference without its note shows as literal ``[^1]``; a
  note nobody references is dropped from the email without a word.
* Links and images whose scheme an email must not carry. markdown-it refuses ``javascript:``,
  ``data:`` and ``file:`` by leaving the Markdown as literal text; the parser here accepts every
  destination so that this module sees each one and names it.
"""

from __future__ import annotations

from typing import Callable, Sequence

from markdown_it.token import Token

from newsletter.errors import InputError
from newsletter.patterns import compiled

#: Schemes a link may use: what mail clients open. Relative links and fragments pass here and are
#: reported by ``check`` (links.malformed) with the rest of the link rules.
LINK_SCHEMES = ("http", "https", "mailto", "tel")
#: Schemes an image may use: fetched by the mail client over the web (no data: or cid: images).
IMAGE_SCHEMES = ("http", "https")
_SCHEME = r"([A-Za-z][A-Za-z0-9+.-]*):"
_FOOTNOTE_TEXT = r"\[\^([^\]\s]+)\]"

#: ``locate(block, needle)``: the file line of ``needle`` inside the block token ``block``.
Locate = Callable[[Token, str], "int | None"]


def scheme_of(url: str) -> str | None:
    """The URL's scheme, lower-cased, or None for a relative URL or a fragment."""
    m = compiled(_SCHEME).match(url.strip())
    return m.group(1).lower() if m else None


def check_markdown(tokens: Sequence[Token], env: dict, path: object, locate: Locate, body_lines: list[str],
                   first_line: int) -> None:
    """Refuse the first empty element, unpaired footnote or unsafe link, with its line."""
    for i, token in enumerate(tokens):
        following = tokens[i + 1] if i + 1 < len(tokens) else None
        _check_empty_block(token, following, path, locate)
        children = token.children or ()
        for n, child in enumerate(children):
            if child.type in ("link_open", "image"):
                _check_destination(child, token, path, locate)
            if child.type == "link_open" and _link_is_empty(children, n):
                raise InputError(f"a link to {child.attrGet('href')} has no text: write [what it is]"
                                 f"({child.attrGet('href')})", path=path, line=locate(token, "]("))
            if child.type == "text":
                _check_literal_footnote(child, token, path, locate)
    _check_unused_notes(env, path, body_lines, first_line)


_EMPTY_WHAT = {"heading_open": "heading", "list_item_open": "list item", "blockquote_open": "quote"}


def _check_empty_block(token: Token, following: Token | None, path: object, locate: Locate) -> None:
    """A heading with no text, or a list item or quote closed as soon as it opens."""
    what = _EMPTY_WHAT.get(token.type)
    if what is None or following is None:
        return
    empty = (not following.content.strip() if what == "heading"
             else following.type == token.type.replace("_open", "_close"))
    if empty:
        raise InputError(f"an empty {what}: write its text or delete the line", path=path, line=locate(token, ""))


def _check_destination(child: Token, block: Token, path: object, locate: Locate) -> None:
    image = child.type == "image"
    url = str(child.attrGet("src" if image else "href") or "")
    what = "image" if image else "link"
    if not url.strip():
        raise InputError(f"a {what} has no address: write [text](https://…)", path=path, line=locate(block, "]("))
    scheme = scheme_of(url)
    allowed = IMAGE_SCHEMES if image else LINK_SCHEMES
    if scheme is not None and scheme not in allowed:
        shown = url[:60] + ("…" if len(url) > 60 else "")
        raise InputError(f"{what} {shown!r} uses the scheme '{scheme}:', which an email must not carry "
                         f"(only {', '.join(s + ':' for s in allowed)}): link to an https:// address instead",
                         path=path, line=locate(block, url[:40]))


def _link_is_empty(children: Sequence[Token], start: int) -> bool:
    """Whether nothing a reader sees lies between the link_open at ``start`` and its close."""
    depth = 0
    for child in children[start:]:
        if child.type == "link_open":
            depth += 1
        elif child.type == "link_close":
            depth -= 1
            if depth == 0:
                return True
        elif child.type == "image" or (child.content or "").strip():
            return False
    return True


def _check_literal_footnote(child: Token, block: Token, path: object, locate: Locate) -> None:
    """``[^x]`` left as text: markdown-it found no ``[^x]: …`` note for it."""
    m = compiled(_FOOTNOTE_TEXT).search(child.content)
    if m:
        raise InputError(f"footnote reference [^{m.group(1)}] has no note: add a line '[^{m.group(1)}]: …' "
                         "(or put it in `backticks` to show it as written)", path=path,
                         line=locate(block, m.group()))


def _check_unused_notes(env: dict, path: object, body_lines: list[str], first_line: int) -> None:
    """A note no reference points to is left out of the email by the footnote plugin."""
    for key, ident in env.get("footnotes", {}).get("refs", {}).items():
        if ident == -1:
            label = key[1:]
            needle = f"[^{label}]:"
            line = next((first_line + n for n, text in enumerate(body_lines) if needle in text), None)
            raise InputError(f"note [^{label}] is never referenced, so it would not appear: add [^{label}] "
                             "where it belongs, or delete the note", path=path, line=line)
