"""The CSS inliner seam.

Everything else calls :func:`inline_css` only, so a faster maintained inliner
can replace premailer (no release since 2021) without touching the rest.
premailer is imported lazily: it costs ~0.2 s, which ``--help`` and
``subscribers`` must not pay.
"""

from __future__ import annotations

import logging
import re

_DOCTYPE = "<!doctype html>"
_HEAD_DOCTYPE = re.compile(r"^\s*<!doctype[^>]*>\s*", re.IGNORECASE)


_STYLE_TAG = re.compile(r"<style(?=[\s>])", re.IGNORECASE)
_IGNORE = ' data-premailer="ignore"'


def inline_css(html: str, css: str) -> str:
    """Inline ``css`` into ``style`` attributes; rules that cannot be inlined (``@media``)
    go into a ``<style>`` block in the head.

    The document's own ``<style>`` blocks (MJML's resets and responsive column
    rules) are left exactly as MJML wrote them: MJML means them for the head, and
    running them through the inliner would only bloat every ``<td>`` and cost time.

    * ``strip_important=False``: MJML's responsive rules and our dark-mode rules
      depend on ``!important`` to beat the inline styles; premailer strips it by default.
    * ``@media`` rules are left in a ``<style>`` block (premailer keeps rules it cannot inline).
    * Classes stay, since the kept ``@media`` rules select by class.
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
        allow_network=False,
        exclude_pseudoclasses=True,
        cssutils_logging_level=logging.CRITICAL,
        disable_link_rewrites=True,
        cache_css_parsing=True,
    )
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


def _premailer_class() -> type:
    """premailer re-parses and re-serialises the same style sheet on every call
    (~40% of a warm rebuild). Our sheet only changes when a template does, so
    this subclass memoises the parsed rules per sheet text."""
    global _PREMAILER
    if _PREMAILER is None:
        from premailer import Premailer

        class CachingPremailer(Premailer):  # type: ignore[misc]
            _rules: dict = {}
            _leftover_css: dict = {}

            def _parse_style_rules(self, css_body, ruleset_index):  # type: ignore[no-untyped-def]
                key = (css_body, ruleset_index, self.exclude_pseudoclasses, self.include_star_selectors)
                if key not in self._rules:
                    self._rules[key] = super()._parse_style_rules(css_body, ruleset_index)
                rules, leftover = self._rules[key]
                return list(rules), leftover  # callers extend the rules; leftover is only read

            def _css_rules_to_string(self, rules):  # type: ignore[no-untyped-def]
                key = id(rules)
                cached = self._leftover_css.get(key)
                if cached is None or cached[0] is not rules:
                    cached = self._leftover_css[key] = (rules, super()._css_rules_to_string(rules))
                return cached[1]

        _PREMAILER = CachingPremailer
    return _PREMAILER

