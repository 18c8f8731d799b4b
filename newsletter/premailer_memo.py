"""premailer, imported cheaply, with what it derives from CSS text memoised (on disk too).

A fresh `newsletter build` spent most of its inlining time loading and running cssutils and
cssselect on the same CSS every time: the template's style sheet, the same few dozen
``style`` attributes MJML writes, the same selectors. Each of those answers depends only on
its text and the library versions, so it is kept in a :class:`~newsletter.disk_memo.DiskMemo`
(build/.cache/inline/) and computed by premailer's own code on a miss. cssutils and cssselect
are imported only on a miss, so a build whose CSS has been seen before loads neither.
premailer's private functions replaced here are held by tests/test_inline_premailer.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import threading
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from newsletter.disk_memo import DiskMemo, package_version

_LOCK = threading.RLock()
_STATE = threading.local()  # .memos: the Memos of the inline_css call running in this thread
_PREMAILER: type | None = None
_ORIGINAL: dict[str, Callable[..., Any]] = {}


class Memos:
    """The memo tables of one cache folder (or of none: in memory only)."""

    _by_folder: dict[Path | None, "Memos"] = {}

    @classmethod
    def for_folder(cls, folder: Path | None) -> "Memos":
        """One set per folder per process: a warm process (the live preview) reads the files once."""
        with _LOCK:
            if folder not in cls._by_folder:
                cls._by_folder[folder] = cls(folder)
            return cls._by_folder[folder]

    def __init__(self, folder: Path | None):
        premailer_class()  # the versions below are those of the modules premailer uses
        import premailer
        from lxml import etree

        css = package_version("cssutils")
        both = f"premailer {premailer.__version__} {css}"  # premailer formats what cssutils parses
        self.rules = DiskMemo(folder, "rules", both, limit=64)
        self.declarations = DiskMemo(folder, "declarations", both)
        self.floats = DiskMemo(folder, "floats", css)
        self.selectors = DiskMemo(folder, "selectors", f"{package_version('cssselect')} lxml {etree.__version__}")
        self._pairs: dict[str, list[tuple[str, str]]] = {}

    @contextmanager
    def active(self) -> Iterator[None]:
        """Route premailer's module-level helpers to these tables, in this thread only."""
        previous = getattr(_STATE, "memos", None)
        _STATE.memos = self
        try:
            yield
        finally:
            _STATE.memos = previous

    def save(self) -> None:
        for table in (self.rules, self.declarations, self.floats, self.selectors):
            table.save()

    def pairs(self, csstext: str) -> list[tuple[str, str]]:
        """premailer's ``csstext_to_pairs(csstext, validate=False)``: a ``style`` value as (name, value)."""
        hit = self._pairs.get(csstext)
        if hit is None:
            stored = self.declarations.get(csstext, list)
            if stored is None or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in stored):
                _loaded_cssutils()
                stored = _ORIGINAL["csstext_to_pairs"](csstext, validate=False)
                self.declarations.put(csstext, stored)
            hit = self._pairs[csstext] = [(name, value) for name, value in stored]
        return hit

    def xpath(self, selector: str) -> str:
        """The XPath lxml's ``CSSSelector`` compiles ``selector`` to."""
        path = self.selectors.get(selector, str)
        if path is None:
            path = _css_selector_class()(selector).path
            self.selectors.put(selector, path)
        return path

    def align_floating_images(self, page: Any) -> None:
        """premailer's ``align_floating_images`` step: ``align`` from an image's CSS ``float``."""
        for item in page.xpath("//img[@style]"):
            style = item.attrib["style"]
            side = self.floats.get(style, str)
            if side is None:
                side = str(_loaded_cssutils().parseStyle(style).float)  # as premailer calls it
                self.floats.put(style, side)
            if side in ("right", "left"):
                item.attrib["align"] = side


def _loaded_cssutils() -> types.ModuleType:
    """The real cssutils, with its log quiet (premailer's ``cssutils_logging_level``)."""
    with _LOCK:
        import cssutils

        cssutils.log.setLevel(logging.CRITICAL)
        return cssutils


def _css_selector_class() -> type:
    with _LOCK:
        from lxml.cssselect import CSSSelector

        return CSSSelector


def _memo_pairs(csstext: str, validate: bool = False) -> list[tuple[str, str]]:
    """Replaces premailer's ``csstext_to_pairs`` in both its modules, always unvalidated:
    premailer honours ``disable_validation`` for style sheets but not for the ``style``
    attributes MJML wrote, and validating them costs ~0.3 s of cssutils regexes."""
    memos = getattr(_STATE, "memos", None)
    if memos is None:  # premailer used outside inline_css: its own behaviour, unvalidated
        _loaded_cssutils()
        return _ORIGINAL["csstext_to_pairs"](csstext, validate=False)
    return memos.pairs(csstext)


def _memo_selector(selector: str) -> Any:
    """Replaces premailer's ``_create_cssselector``: the same XPath, without cssselect on a hit."""
    from lxml import etree

    memos = getattr(_STATE, "memos", None)
    if memos is None:
        return _css_selector_class()(selector)
    path = memos.xpath(selector)
    if "__lxml_internal_css:" in path:  # a function lxml.cssselect registers when imported
        _css_selector_class()
    return etree.XPath(path)


def premailer_class() -> type:
    """premailer's ``Premailer``, with the parsed rules of each style sheet memoised."""
    global _PREMAILER
    with _LOCK:
        if _PREMAILER is None:
            _PREMAILER = _caching_subclass(_import_premailer())
    return _PREMAILER


def _import_premailer() -> type:
    with _deferred_imports():
        import premailer.merge_style as merge_style
        import premailer.premailer as module
    _ORIGINAL["csstext_to_pairs"] = module.csstext_to_pairs
    _memo_pairs._lock = merge_style.csstext_to_pairs._lock  # type: ignore[attr-defined]  # the original finds it by name
    module.csstext_to_pairs = merge_style.csstext_to_pairs = _memo_pairs
    module._create_cssselector = _memo_selector
    return module.Premailer


def _caching_subclass(base: type) -> type:
    class CachingPremailer(base):  # type: ignore[misc, valid-type]
        """Parses each style sheet once: the rules (and the leftover ``@media`` text) are memoised."""

        def _parse_style_rules(self, css_body, ruleset_index):  # type: ignore[no-untyped-def]
            memos = getattr(_STATE, "memos", None)
            if memos is None:
                return super()._parse_style_rules(css_body, ruleset_index)
            key = hashlib.sha256(json.dumps([css_body, ruleset_index, self.exclude_pseudoclasses,
                                             self.include_star_selectors, self.strip_important])
                                 .encode()).hexdigest()
            hit = memos.rules.get(key, dict)
            if hit is None or not _rules_shaped(hit):
                _loaded_cssutils()
                rules, leftover = super()._parse_style_rules(css_body, ruleset_index)
                css = super()._css_rules_to_string(leftover) if leftover else ""
                hit = {"rules": rules, "leftover": len(leftover), "css": css}
                memos.rules.put(key, hit)
            rules = [(tuple(spec), selector, bulk) for spec, selector, bulk in hit["rules"]]
            return rules, _Leftover.of(hit["leftover"], hit["css"])

        def _css_rules_to_string(self, rules):  # type: ignore[no-untyped-def]
            return rules.css if isinstance(rules, _Leftover) else super()._css_rules_to_string(rules)

    return CachingPremailer


def _rules_shaped(hit: dict) -> bool:
    """Whether a stored rules entry has the shape :meth:`_parse_style_rules` returns."""
    rules = hit.get("rules")
    return (isinstance(rules, list) and isinstance(hit.get("leftover"), int) and isinstance(hit.get("css"), str)
            and all(isinstance(r, (list, tuple)) and len(r) == 3 and isinstance(r[0], (list, tuple)) for r in rules))


class _Leftover(list):  # type: ignore[type-arg]
    """The rules premailer could not inline (``@media``), already serialised.
    Its length is the number of rules, since premailer only tests it for truth."""

    css = ""

    @classmethod
    def of(cls, count: int, css: str) -> "_Leftover":
        out = cls([None] * count)
        out.css = css
        return out


@contextmanager
def _deferred_imports() -> Iterator[None]:
    """Import premailer without what it imports at module level but a build rarely uses.

    While premailer is imported, these names resolve to stand-ins, unregistered afterwards,
    so everything else imports the real modules:

    * ``requests`` (~50 ms), only to fetch remote style sheets, which we never allow
      (``allow_network=False``): a stand-in that refuses any use.
    * ``cssutils`` (the costliest) and ``lxml.cssselect`` (with cssselect): stand-ins that
      import the real module when premailer first uses it (on a memo miss).

    (importlib's ``LazyLoader`` would not do for cssutils: on Python 3.11 the ``import``
    statement itself reads the module's ``__spec__``, which runs the lazy module.)
    """
    stand_ins = {name: make() for name, make in (("requests", _refusing_requests), ("cssutils", _deferred_cssutils),
                                                 ("lxml.cssselect", _deferred_cssselect))
                 if name not in sys.modules}
    sys.modules.update(stand_ins)
    try:
        yield
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


def _refusing_requests() -> types.ModuleType:
    stand_in = types.ModuleType("requests", "premailer's network access is disabled by newsletter.inline")

    def refuse(name: str) -> object:
        raise RuntimeError(f"premailer tried to use requests.{name}, but network access is disabled")

    stand_in.__getattr__ = refuse  # type: ignore[attr-defined]
    return stand_in


def _deferred_cssutils() -> types.ModuleType:
    stand_in = types.ModuleType("cssutils", "imports the real cssutils when premailer first uses it")

    def attribute(name: str) -> object:
        return getattr(_loaded_cssutils(), name)

    stand_in.__getattr__ = attribute  # type: ignore[attr-defined]
    return stand_in


def _deferred_cssselect() -> types.ModuleType:
    stand_in = types.ModuleType("lxml.cssselect", "imports the real lxml.cssselect when first used")

    def css_selector(*args: Any, **kwargs: Any) -> Any:
        return _css_selector_class()(*args, **kwargs)

    stand_in.CSSSelector = css_selector  # type: ignore[attr-defined]
    return stand_in
