"""Every check is linear in the size of the issue.

`check` on a 120 KB run of letters took 51 s: an address pattern in checks/plaintext.py was
tried from every position of the run and scanned to its end each time. Two guards:

* every regular expression the checks and the render path keep as a module constant is run
  over pathological texts and must answer within a CPU budget a quadratic pattern misses by far;
* `run_checks` on pathological 120 KB issues stays within a budget (CPU time of this process,
  so other work on the machine does not count).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import time
from pathlib import Path

import pytest

import newsletter.checks
from newsletter.checks import run_checks
from newsletter.config import load_settings
from newsletter.render import render_issue

SIZE = 120_000
PATHOLOGICAL = {
    "word characters": "a" * SIZE,
    "spaces": "x" + " " * SIZE + "y",
    "punctuation": ".-+" * (SIZE // 3),
    "url without end": "https://" + "a" * SIZE,
    "nested brackets": "[" * (SIZE // 2) + "]" * (SIZE // 2),
    "dots between letters": "a." * (SIZE // 2),
    "digits": "1" * SIZE,
    "at signs": "a@" * (SIZE // 2),
    "unclosed comments": "/*" * (SIZE // 2),
    "percent signs": "%%" + "a" * SIZE,
    "emphasis": "*a" * (SIZE // 2),
}
# Modules whose patterns see the issue's text or what is rendered from it.
RENDER_PATH = ("newsletter.content", "newsletter.plaintext", "newsletter.render", "newsletter.archive",
               "newsletter.excerpt", "newsletter.inline", "newsletter.mime")


def _patterns() -> list[tuple[str, re.Pattern[str]]]:
    names = [f"newsletter.checks.{m.name}" for m in pkgutil.iter_modules(newsletter.checks.__path__)]
    found = []
    for name in [*names, *RENDER_PATH]:
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if isinstance(value, re.Pattern) and isinstance(value.pattern, str):
                found.append((f"{name}.{attr}", value))
    return found


PATTERNS = _patterns()


def test_the_audit_sees_the_patterns_it_guards():
    names = {name for name, _ in PATTERNS}
    assert "newsletter.checks.plaintext._URL" in names and "newsletter.checks.support._UNIT" in names


@pytest.mark.parametrize("name, pattern", PATTERNS, ids=[n for n, _ in PATTERNS])
def test_every_pattern_is_linear_on_pathological_text(name, pattern):
    """Linear patterns take milliseconds on 120 KB; the old address pattern took 51 s."""
    start = time.process_time()
    for text in PATHOLOGICAL.values():
        pattern.findall(text)
        pattern.sub("", text)
    assert time.process_time() - start < 3.0, name


def test_css_comments_are_stripped_in_one_pass():
    from newsletter.checks.css import declarations, strip_comments

    assert strip_comments("a/* x */b/* y") == "ab"
    assert [d.prop for d in declarations("color: red; /* margin: 0; */ padding: 1px")] == ["color", "padding"]
    start = time.process_time()
    strip_comments("/*" * SIZE)
    assert time.process_time() - start < 1.0


@pytest.mark.parametrize("body", ["word characters", "spaces", "punctuation", "url without end", "nested brackets"])
def test_check_on_a_pathological_120_kb_issue_is_quick(publication_root, body):
    path = publication_root / "issues" / "007-a-title.md"
    text = PATHOLOGICAL[body]
    path.write_text(f"---\nnumber: 7\ntitle: T\ndate: 2025-04-01\nsubtitle: s\n---\n\nIntro.\n\n{text}\n",
                    encoding="utf-8")
    settings = load_settings(Path(publication_root), environ={})
    start = time.process_time()
    run_checks(settings, render_issue(path, settings))
    assert time.process_time() - start < 20.0  # about 1-3 s here; 51 s before
