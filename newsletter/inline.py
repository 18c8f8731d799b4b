"""The CSS inliner seam.

Everything else calls :func:`inline_css` only, so a faster maintained inliner
can replace premailer (no release since 2021) without touching the rest.
premailer is imported lazily (``--help`` and ``subscribers`` must not pay for it),
and what it computes from CSS text alone is memoised on disk (newsletter/premailer_memo.py),
so a fresh `newsletter build` whose CSS has been seen before never loads cssutils.
"""

from __future__ import annotations

import re
from pathlib import Path

from newsletter.premailer_memo import Memos, premailer_class

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
    * Floating images get an ``align`` attribute for Outlook, as premailer does by default
      (done by :meth:`Memos.align_floating_images`, from the memo).
    * The lowercase HTML5 doctype MJML emits is restored (lxml drops it).
    """
    from lxml import etree

    memos = Memos.for_folder(cache_dir)
    inliner = premailer_class()(
        None,
        css_text=css,
        strip_important=False,
        keep_style_tags=False,
        remove_classes=False,
        disable_validation=True,
        disable_basic_attributes=["width", "height"],
        allow_network=False,
        exclude_pseudoclasses=True,
        disable_link_rewrites=True,
        cache_css_parsing=True,
        align_floating_images=False,  # done below, from the memo: premailer's own way loads cssutils
    )
    # What premailer.transform does with a string, done here so the tree can be finished after it.
    stripped = _STYLE_TAG.sub("<style" + _IGNORE, html).strip()
    tree = etree.fromstring(stripped, etree.HTMLParser()).getroottree()
    page = tree.getroot()
    root = tree if stripped.startswith(tree.docinfo.doctype) else page
    with memos.active():
        inliner.transform(page)
        memos.align_floating_images(page)
    memos.save()
    out = etree.tostring(root, method="html", pretty_print=False, encoding="utf-8").decode("utf-8")
    out = out.replace(_IGNORE, "")
    return _DOCTYPE + _HEAD_DOCTYPE.sub("", out, count=1).rstrip("\n") + "\n"
