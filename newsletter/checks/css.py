"""Just enough CSS parsing for the checks: declarations, rules and at-rules.

Email CSS is simple (premailer has already inlined most of it), so a small
brace-matching scanner is enough and far faster than a full CSS parser.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache



@dataclass(frozen=True)
class Declaration:
    prop: str
    value: str
    important: bool = False


@dataclass(frozen=True)
class Rule:
    selector: str
    declarations: tuple[Declaration, ...]
    media: str = ""  # the enclosing @media prelude, "" at top level


def strip_comments(text: str) -> str:
    """``text`` without ``/* … */`` comments, in one pass (a lazy-match pattern rescanned to the end from
    every unclosed ``/*``: quadratic). An unclosed comment runs to the end, as in CSS."""
    out, pos = [], 0
    while (start := text.find("/*", pos)) != -1:
        out.append(text[pos:start])
        end = text.find("*/", start + 2)
        if end == -1:
            return "".join(out)
        pos = end + 2
    out.append(text[pos:])
    return "".join(out)


@lru_cache(maxsize=4096)
def declarations(text: str) -> tuple[Declaration, ...]:
    """``"color: red; margin:0 !important"`` → declarations, names lower-cased (cached: a
    rendered issue repeats a few dozen style attributes on thousands of elements)."""
    out = []
    for part in strip_comments(text).split(";"):
        prop, colon, value = part.partition(":")
        prop, value = prop.strip().lower(), value.strip()
        if not colon or not prop or not value:
            continue
        important = value.lower().endswith("!important")
        if important:
            value = value[: -len("!important")].rstrip()
        out.append(Declaration(prop, value, important))
    return tuple(out)


def style_map(text: str) -> dict[str, Declaration]:
    """A style attribute as property → declaration; later ones win, as in browsers."""
    return {d.prop: d for d in declarations(text)}


def _matching_brace(text: str, start: int) -> int:
    """Index just after the ``}`` that closes the ``{`` at ``start`` (or the end)."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return len(text)


def parse_stylesheet(text: str) -> tuple[list[Rule], list[str]]:
    """Rules (with their @media prelude) and every at-rule prelude, e.g. ``@media (max-width: 480px)``."""
    rules: list[Rule] = []
    at_rules: list[str] = []
    text = strip_comments(text)
    _parse(text, 0, len(text), "", rules, at_rules)
    return rules, at_rules


def _parse(text: str, start: int, end: int, media: str, rules: list[Rule], at_rules: list[str]) -> None:
    pos = start
    while pos < end:
        brace, semi = text.find("{", pos, end), text.find(";", pos, end)
        if semi != -1 and (brace == -1 or semi < brace) and text[pos:semi].strip().startswith("@"):
            at_rules.append(" ".join(text[pos:semi].split()))  # @import url(...);
            pos = semi + 1
            continue
        if brace == -1:
            return
        prelude = " ".join(text[pos:brace].replace("}", " ").split())
        close = _matching_brace(text, brace)
        if prelude.startswith("@"):
            at_rules.append(prelude)
            if prelude.lower().startswith(("@media", "@supports")):
                _parse(text, brace + 1, close - 1, prelude, rules, at_rules)
        elif prelude:
            rules.append(Rule(prelude, declarations(text[brace + 1:close - 1]), media))
        pos = close
