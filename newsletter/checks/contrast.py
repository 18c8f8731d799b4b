"""Text contrast (WCAG 2.x AA), in light mode and in the template's dark mode.

Light colours come from the inlined ``style`` attributes (and ``bgcolor``);
dark colours from the ``@media (prefers-color-scheme: dark)`` rules applied on
top with the CSS cascade (``!important`` beats inline styles, then specificity,
then order). Each text's colour is the nearest one declared on it or an
ancestor, its background the nearest declared background, blended through any
translucent ones, as a browser would paint it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

import lxml.html

from newsletter.checks.css import Declaration, parse_stylesheet, style_map

RGBA = tuple[float, float, float, float]
NORMAL_RATIO, LARGE_RATIO = 4.5, 3.0
WHITE: RGBA = (255, 255, 255, 1.0)
BLACK: RGBA = (0, 0, 0, 1.0)
NAMED: dict[str, RGBA] = {
    "white": WHITE, "black": BLACK, "transparent": (0, 0, 0, 0.0), "red": (255, 0, 0, 1.0),
    "green": (0, 128, 0, 1.0), "blue": (0, 0, 255, 1.0), "gray": (128, 128, 128, 1.0), "grey": (128, 128, 128, 1.0),
    "silver": (192, 192, 192, 1.0), "maroon": (128, 0, 0, 1.0), "navy": (0, 0, 128, 1.0), "yellow": (255, 255, 0, 1.0),
    "orange": (255, 165, 0, 1.0), "lightgray": (211, 211, 211, 1.0), "lightgrey": (211, 211, 211, 1.0),
    "darkgray": (169, 169, 169, 1.0), "darkgrey": (169, 169, 169, 1.0),
}
_COLOR_TOKEN = re.compile(r"#[0-9a-fA-F]{3,8}\b|rgba?\([^)]*\)|\b[a-zA-Z]+\b")
DARK_MEDIA = re.compile(r"prefers-color-scheme\s*:\s*dark", re.I)


def parse_color(value: str) -> RGBA | None:
    """``#abc``, ``#aabbcc(dd)``, ``rgb()``/``rgba()`` or a common name; None if not a colour."""
    value = value.strip().lower()
    if value.startswith("#"):
        h = value[1:]
        if len(h) in (3, 4):
            h = "".join(c * 2 for c in h)
        if len(h) not in (6, 8) or not re.fullmatch(r"[0-9a-f]+", h):
            return None
        alpha = int(h[6:8], 16) / 255 if len(h) == 8 else 1.0
        return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16), alpha)
    if value.startswith("rgb"):
        nums = re.findall(r"[\d.]+%?", value)
        if len(nums) < 3:
            return None
        channels = [float(n[:-1]) * 2.55 if n.endswith("%") else float(n) for n in nums[:3]]
        alpha = float(nums[3].rstrip("%")) / (100 if nums[3].endswith("%") else 1) if len(nums) > 3 else 1.0
        return (channels[0], channels[1], channels[2], alpha)
    return NAMED.get(value)


def first_color(value: str) -> RGBA | None:
    """The colour inside a shorthand such as ``background: #fff url(x) no-repeat``."""
    for token in _COLOR_TOKEN.findall(value):
        color = parse_color(token)
        if color is not None:
            return color
    return None


def blend(top: RGBA, bottom: RGBA) -> RGBA:
    a = top[3]
    return (top[0] * a + bottom[0] * (1 - a), top[1] * a + bottom[1] * (1 - a), top[2] * a + bottom[2] * (1 - a), 1.0)


def luminance(color: RGBA) -> float:
    def channel(c: float) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(color[0]) + 0.7152 * channel(color[1]) + 0.0722 * channel(color[2])


def contrast_ratio(a: RGBA, b: RGBA) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def hex_color(color: RGBA) -> str:
    return "#" + "".join(f"{round(c):02x}" for c in color[:3])


# ---- the cascade, reduced to colour and background ------------------------------------
_GROUPS = {"color": "color", "background": "background", "background-color": "background"}


def _specificity(selector: str) -> tuple[int, int, int] | None:
    import cssselect

    try:
        return cssselect.parse(selector)[0].specificity()
    except Exception:
        return None


class Palette:
    """Declared text colours and backgrounds per element, for one colour scheme."""

    def __init__(self, doc: lxml.html.HtmlElement, *, dark: bool):
        self.declared: dict[lxml.html.HtmlElement, dict[str, tuple[tuple, str]]] = {}
        for element in doc.iter():
            if isinstance(element.tag, str):
                self._inline(element)
        for order, (selector, decl) in enumerate(self._sheet_declarations(doc, dark)):
            self._apply_rule(doc, selector, decl, order)

    def _offer(self, element: lxml.html.HtmlElement, group: str, key: tuple, value: str) -> None:
        slot = self.declared.setdefault(element, {})
        if group not in slot or key >= slot[group][0]:
            slot[group] = (key, value)

    def _inline(self, element: lxml.html.HtmlElement) -> None:
        if element.get("bgcolor"):
            self._offer(element, "background", (0, -1, (0, 0, 0), 0), element.get("bgcolor"))
        for decl in style_map(element.get("style", "")).values():
            if decl.prop in _GROUPS:
                self._offer(element, _GROUPS[decl.prop], (int(decl.important), 1, (0, 0, 0), 0), decl.value)

    @staticmethod
    def _sheet_declarations(doc: lxml.html.HtmlElement, dark: bool) -> Iterable[tuple[str, Declaration]]:
        for style in doc.iter("style"):
            rules, _ = parse_stylesheet(style.text or "")
            for rule in rules:
                if rule.media and not (dark and DARK_MEDIA.search(rule.media)):
                    continue
                for selector in rule.selector.split(","):
                    for decl in rule.declarations:
                        if decl.prop in _GROUPS:
                            yield selector.strip(), decl

    def _apply_rule(self, doc: lxml.html.HtmlElement, selector: str, decl: Declaration, order: int) -> None:
        from lxml.cssselect import CSSSelector

        specificity = _specificity(selector)
        if specificity is None:
            return
        try:
            matched = CSSSelector(selector, translator="html")(doc)
        except Exception:  # pseudo-classes such as :hover cannot match a static document
            return
        for element in matched:
            self._offer(element, _GROUPS[decl.prop], (int(decl.important), 0, specificity, order), decl.value)

    def color(self, element: lxml.html.HtmlElement) -> RGBA:
        for node in (element, *element.iterancestors()):
            value = self.declared.get(node, {}).get("color")
            color = parse_color(value[1]) if value else None
            if color is not None:
                return color
        return BLACK

    def background(self, element: lxml.html.HtmlElement) -> RGBA:
        layers = []
        for node in (element, *element.iterancestors()):
            value = self.declared.get(node, {}).get("background")
            color = first_color(value[1]) if value else None
            if color is not None and color[3] > 0:
                layers.append(color)
                if color[3] >= 1:
                    break
        result = WHITE
        for layer in reversed(layers):
            result = blend(layer, result)
        return result


def _font_px(element: lxml.html.HtmlElement) -> tuple[float, bool]:
    """Inline font size in px (inherited; 16 if none) and whether the text is bold."""
    size, bold = None, None
    for node in (element, *element.iterancestors()):
        style = style_map(node.get("style", ""))
        if size is None and "font-size" in style:
            m = re.match(r"([\d.]+)(px|pt)?", style["font-size"].value)
            size = float(m.group(1)) * (4 / 3 if m.group(2) == "pt" else 1) if m else None
        if bold is None and "font-weight" in style:
            weight = style["font-weight"].value.lower()
            bold = weight in ("bold", "bolder") or (weight.isdigit() and int(weight) >= 700)
        if bold is None and node.tag in ("b", "strong", "h1", "h2", "h3", "h4", "h5", "h6", "th"):
            bold = True
    return size or 16.0, bool(bold)


def required_ratio(element: lxml.html.HtmlElement) -> float:
    """WCAG large text (>= 24 px, or >= 18.66 px bold) needs 3:1; other text 4.5:1."""
    size, bold = _font_px(element)
    return LARGE_RATIO if size >= 24 or (bold and size >= 18.66) else NORMAL_RATIO


@dataclass
class ContrastProblem:
    foreground: str
    background: str
    ratio: float
    required: float
    example: str
    count: int = 1


def contrast_problems(elements: Iterable[tuple[lxml.html.HtmlElement, str]], palette: Palette) -> list[ContrastProblem]:
    """One problem per (text colour, background, requirement), counting the places it occurs."""
    problems: dict[tuple[str, str, float], ContrastProblem] = {}
    for element, text in elements:
        background = palette.background(element)
        foreground = blend(palette.color(element), background)
        ratio, required = contrast_ratio(foreground, background), required_ratio(element)
        if ratio + 1e-9 >= required:
            continue
        key = (hex_color(foreground), hex_color(background), required)
        if key in problems:
            problems[key].count += 1
        else:
            problems[key] = ContrastProblem(key[0], key[1], ratio, required, text[:50])
    return list(problems.values())
