"""The CSS inliner seam.

Everything else calls :func:`inline_css` only, so a faster maintained inliner
can replace premailer (no release since 2021) without touching the rest.
premailer is imported lazily: it costs ~0.2 s, which ``--help`` and
``subscribers`` must not pay.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_DOCTYPE = "<!doctype html>"
_HEAD_DOCTYPE = re.compile(r"^\s*<!doctype[^>]*>\s*", re.IGNORECASE)


_STYLE_TAG = re.compile(r"<style(?=[\s>])", re.IGNORECASE)
_IGNORE = ' data-premailer="ignore"'


def inline_css(html: str, css: str, cache_dir: Path | None = None) -> str:
    """Inline ``css`` into ``style`` attributes; rules that cannot be inlined (``@media``)
    go into a ``<style>`` block in the head.

    The document's own ``<style>`` blocks (MJML's resets and responsive column
    rules) are left exactly as MJML wrote them: MJML means them for the head, and
    running them through the inliner would only bloat every ``<td>`` and cost time.

    * ``strip_important=False``: MJML's responsive rules and our dark-mode rules
      depend on ``!important`` to beat the inline styles; premailer strips it by default.
    * ``@media`` rules are left in a ``<style>`` block (premailer keeps rules it cannot inline).
    * Classes stay, since the kept ``@media`` rules select by class.
    * CSS widths and heights are not copied into ``width``/``height`` attributes: MJML and the
      Markdown renderer set those for Outlook themselves, and an image's ``{width=N}`` must
      stay N while its CSS width is 100% (so it shrinks on a phone).
    * The lowercase HTML5 doctype MJML emits is restored (lxml drops it).
    """
    premailer_class = _premailer_class()
    _skip_inline_style_validation()
    inliner = premailer_class(
        _STYLE_TAG.sub("<style" + _IGNORE, html),
        css_text=css,
        strip_important=False,
        keep_style_tags=False,
        remove_classes=False,
        disable_validation=True,
        disable_basic_attributes=["width", "height"],
        allow_network=False,
        exclude_pseudoclasses=True,
        cssutils_logging_level=logging.CRITICAL,
        disable_link_rewrites=True,
        cache_css_parsing=True,
    )
    inliner.cache_dir = cache_dir
    out = inliner.transform(pretty_print=False).replace(_IGNORE, "")
    return _DOCTYPE + _HEAD_DOCTYPE.sub("", out, count=1).rstrip("\n") + "\n"


def _skip_inline_style_validation() -> None:
    """premailer honours ``disable_validation`` for style sheets but not for the
    ``style`` attributes MJML already wrote: ``merge_styles`` calls
    ``csstext_to_pairs(style)`` with its default ``validate=True``, which makes
    cssutils compile ~0.3 s of validation regexes in every fresh process. We pass
    ``validate=False`` there too, as the documented option asks."""
    import premailer.merge_style as merge_style

    original = merge_style.csstext_to_pairs
    if getattr(original, "_newsletter_unvalidated", False):
        return

    def unvalidated(csstext: str, validate: bool = False) -> list:
        return original(csstext, validate=False)

    unvalidated._newsletter_unvalidated = True  # type: ignore[attr-defined]
    unvalidated._lock = original._lock  # type: ignore[attr-defined]  # the original looks its lock up by module name
    merge_style.csstext_to_pairs = unvalidated


_PREMAILER: type | None = None


class _Leftover(list):  # type: ignore[type-arg]
    """The rules premailer could not inline (``@media``), already serialised.
    Its length is the number of rules, since premailer only tests it for truth."""

    css = ""

    @classmethod
    def of(cls, count: int, css: str) -> "_Leftover":
        out = cls([None] * count)
        out.css = css
        return out


def _premailer_class() -> type:
    """premailer parses and serialises the same style sheet on every call: the
    slowest part of a rebuild, and ~50 ms of a cold one. This subclass keeps the
    parsed rules per sheet in memory and, given a cache folder, on disk (like
    Jinja's bytecode cache), so the sheet is parsed once until it changes."""
    global _PREMAILER
    if _PREMAILER is None:
        with _without_requests():
            import premailer
            from premailer import Premailer

        class CachingPremailer(Premailer):  # type: ignore[misc]
            memory: dict[str, tuple[list, _Leftover]] = {}
            cache_dir: Path | None = None

            def _parse_style_rules(self, css_body, ruleset_index):  # type: ignore[no-untyped-def]
                key = hashlib.sha256(json.dumps([premailer.__version__, css_body, ruleset_index,
                                                 self.exclude_pseudoclasses, self.include_star_selectors])
                                     .encode()).hexdigest()
                hit = self.memory.get(key) or self._load(key)
                if hit is None:
                    rules, leftover = super()._parse_style_rules(css_body, ruleset_index)
                    css = super()._css_rules_to_string(leftover) if leftover else ""
                    hit = (rules, _Leftover.of(len(leftover), css))
                    self._store(key, hit)
                self.memory[key] = hit
                return list(hit[0]), hit[1]  # callers extend the rules list

            def _css_rules_to_string(self, rules):  # type: ignore[no-untyped-def]
                return rules.css if isinstance(rules, _Leftover) else super()._css_rules_to_string(rules)

            def _load(self, key: str) -> tuple[list, _Leftover] | None:
                if self.cache_dir is None:
                    return None
                try:
                    data = json.loads((self.cache_dir / f"{key}.json").read_text(encoding="utf-8"))
                    rules = [(tuple(spec), selector, bulk) for spec, selector, bulk in data["rules"]]
                    return rules, _Leftover.of(data["leftover"], data["css"])
                except (OSError, ValueError, KeyError, TypeError):
                    return None  # missing or unreadable: parse again

            def _store(self, key: str, hit: tuple[list, _Leftover]) -> None:
                if self.cache_dir is None:
                    return
                try:
                    self.cache_dir.mkdir(parents=True, exist_ok=True)
                    tmp = self.cache_dir / f"{key}.{os.getpid()}.tmp"
                    tmp.write_text(json.dumps({"rules": hit[0], "leftover": len(hit[1]), "css": hit[1].css}),
                                   encoding="utf-8")
                    tmp.replace(self.cache_dir / f"{key}.json")
                except OSError:
                    pass  # a read-only checkout still builds, just without the cache

        _PREMAILER = CachingPremailer
    return _PREMAILER


@contextmanager
def _without_requests() -> Iterator[None]:
    """Import premailer without importing ``requests`` (~50 ms of a cold build).

    premailer imports ``requests`` at module level only to fetch remote style
    sheets, which we never allow (``allow_network=False``). While premailer is
    imported, ``requests`` resolves to a stand-in that refuses any use; it is
    then unregistered, so everything else (the HTTP transports) imports the real one.
    """
    if "requests" in sys.modules:
        yield
        return
    stand_in = types.ModuleType("requests", "premailer's network access is disabled by newsletter.inline")

    def refuse(name: str) -> object:
        raise RuntimeError(f"premailer tried to use requests.{name}, but network access is disabled")

    stand_in.__getattr__ = refuse  # type: ignore[attr-defined]
    sys.modules["requests"] = stand_in
    try:
        yield
    finally:
        if sys.modules.get("requests") is stand_in:
            del sys.modules["requests"]
