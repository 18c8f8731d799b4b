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


def inline_css(html: str) -> str:
    """Inline the document's CSS into ``style`` attributes, keeping what cannot be inlined.

    * ``strip_important=False``: MJML's responsive rules and our dark-mode rules
      depend on ``!important`` to beat the inline styles; premailer strips it by default.
    * ``@media`` rules are left in a ``<style>`` block (premailer keeps rules it cannot inline).
    * Classes stay, since the kept ``@media`` rules select by class.
    * The lowercase HTML5 doctype MJML emits is restored (lxml drops it).
    """
    from premailer import Premailer

    _skip_inline_style_validation()
    inliner = Premailer(
        html,
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
    out = inliner.transform(pretty_print=False)
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
