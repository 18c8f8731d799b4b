"""Plain text laid out by display width, for Chinese (and Japanese, Korean) as well as English.

A CJK character takes two columns in a fixed-width font (Unicode East Asian Width ``W`` and
``F``), so a 72-column line holds 36 of them. Chinese has no spaces: a line may break between
any two characters, but never before closing punctuation (，。、；：？！」』） …) nor after
opening punctuation (「『（ …), the rule Chinese and Japanese typesetting call *kinsoku*.
Latin words (and URLs) inside Chinese text stay whole; a word longer than the line gets a
line of its own rather than being cut.
"""

from __future__ import annotations

import textwrap
import unicodedata
from functools import lru_cache

#: Never at the start of a line.
CLOSING = set("，。、；：？！」』）》〉】〕〗〙〛｝］”’…‥・·〜～ー％‰℃,.;:?!)]}%") | {"\u2014", "\u30fb"}
#: Never at the end of a line.
OPENING = set("「『（《〈【〔〖〘〚｛［“‘([{")


@lru_cache(maxsize=4096)
def char_width(ch: str) -> int:
    """Columns ``ch`` takes: 2 for East Asian wide and full-width, 0 for combining marks, else 1."""
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def width(text: str) -> int:
    """Display width of ``text`` in columns."""
    if text.isascii():
        return len(text)
    return sum(char_width(ch) for ch in text)


def _is_wide(ch: str) -> bool:
    return char_width(ch) == 2


def _units(line: str) -> list[tuple[str, bool]]:
    """The line as unbreakable units, each with whether a space came before it.

    A unit is a run of non-space, non-wide characters (a Latin word, a number, a URL) or one
    wide character; then closing punctuation joins the unit before it and opening punctuation
    the unit after it, so no break can fall next to them."""
    units: list[tuple[str, bool]] = []
    run, space = "", False
    for ch in line:
        if ch.isspace():
            if run:
                units.append((run, space))
                run = ""
            space = True
        elif _is_wide(ch):
            if run:
                units.append((run, space))
                run, space = "", False
            units.append((ch, space))
            space = False
        else:
            run += ch
    if run:
        units.append((run, space))
    return _glue(units)


def _glue(units: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    out: list[tuple[str, bool]] = []
    carry: tuple[str, bool] | None = None  # opening punctuation waiting for what follows it
    for text, space in units:
        if carry is not None:
            text, space = carry[0] + (" " if space else "") + text, carry[1]
            carry = None
        if out and not space and text[0] in CLOSING:
            prev, prev_space = out.pop()
            text, space = prev + text, prev_space
        if text[-1] in OPENING:
            carry = (text, space)
            continue
        out.append((text, space))
    if carry is not None:
        if out:
            prev, prev_space = out.pop()
            out.append((prev + (" " if carry[1] else "") + carry[0], prev_space))
        else:
            out.append(carry)
    return out


def wrap(line: str, limit: int) -> list[str]:
    """``line`` cut into lines of at most ``limit`` columns (one unit longer than that stands alone)."""
    if line.isascii() or not any(_is_wide(ch) for ch in set(line)):  # each distinct character once
        return textwrap.wrap(line, width=limit, break_long_words=False, break_on_hyphens=False) or [""]
    lines: list[str] = []
    current, used = "", 0
    for text, space in _units(line):
        w = width(text)
        gap = 1 if space and current else 0
        if current and used + gap + w > limit:
            lines.append(current)
            current, used = text, w
        else:
            current += " " * gap + text
            used += gap + w
    lines.append(current)
    return lines


def fill(text: str, limit: int) -> str:
    """Each line of ``text`` wrapped to ``limit`` columns."""
    return "\n".join("\n".join(wrap(line, limit)) for line in text.split("\n"))
