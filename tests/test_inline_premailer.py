"""premailer is pinned to the minor version whose private API newsletter/premailer_memo.py patches.

premailer_memo.py overrides ``Premailer._parse_style_rules`` and ``_css_rules_to_string`` (a memo
of parsed style sheets), replaces ``csstext_to_pairs`` in both premailer modules (unvalidated and
memoised) and ``_create_cssselector`` (memoised XPath), and newsletter/inline.py hands
``Premailer.transform`` a parsed tree and aligns floating images itself (premailer's own step
loads cssutils). An upgrade that changes any of them must fail here, so that someone re-reads
both files before they silently inline differently."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import re
from pathlib import Path

import premailer

REPO = Path(__file__).resolve().parent.parent
#: sha256 (first 16 hex digits) of the source of each private function we depend on,
#: in premailer 3.10.0.
PATCHED = {
    ("premailer/premailer.py", "Premailer._parse_style_rules"): "09c022001e899668",
    ("premailer/premailer.py", "Premailer._css_rules_to_string"): "f2fc8767b3cc17dc",
    ("premailer/merge_style.py", "csstext_to_pairs"): "cbb3cb70d94e1708",
    ("premailer/merge_style.py", "merge_styles"): "7846572f54c9620c",
    ("premailer/premailer.py", "Premailer.transform"): "b854342028a9daa3",
    ("premailer/premailer.py", "_create_cssselector"): "3f4fe4b9f46e5cd2",
    ("premailer/premailer.py", "get_or_create_head"): "0f2521ea30a20acf",
}


def _source_of(relative: str, qualname: str) -> str:
    """A function's source as the installed file has it (not as inline.py may have patched it)."""
    origin = Path(importlib.util.find_spec("premailer").origin).parent.parent
    text = (origin / relative).read_text(encoding="utf-8")
    scope: list[ast.AST] = [ast.parse(text)]
    for part in qualname.split("."):
        node = next(n for n in ast.iter_child_nodes(scope[-1])
                    if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name == part)
        scope.append(node)
    return ast.get_source_segment(text, scope[-1]) or ""


def test_the_pin_allows_only_the_minor_version_inline_py_was_written_for():
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    pin = re.search(r'"premailer>=(\d+)\.(\d+)[^,"]*,<(\d+)\.(\d+)"', pyproject)
    assert pin, "premailer must be pinned to one minor version: inline.py patches its private API"
    low, high = (int(pin[1]), int(pin[2])), (int(pin[3]), int(pin[4]))
    assert high == (low[0], low[1] + 1)
    assert tuple(int(x) for x in premailer.__version__.split(".")[:2]) == low


def test_the_private_functions_inline_py_patches_are_unchanged():
    changed = {name: digest for (path, name), digest in PATCHED.items()
               if hashlib.sha256(_source_of(path, name).encode()).hexdigest()[:16] != digest}
    assert changed == {}, f"premailer changed what newsletter/inline.py patches: {sorted(changed)}"
