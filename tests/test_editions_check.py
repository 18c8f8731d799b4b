"""`check` compares editions: structure, links pointing elsewhere, and an edition older than the
main edition's last change by git. Warnings with the edition's file and line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from newsletter.checks import run_checks
from newsletter.cli import render_ref
from tests.editions_fixtures import MAIN, ZH, bilingual_publication, bilingual_settings


@pytest.fixture
def settings(tmp_path: Path):
    return bilingual_settings(bilingual_publication(tmp_path / "pub"))


def _edition_findings(settings, lang=None):
    findings = run_checks(settings, render_ref(settings, "8", lang))
    return [f for f in findings if f.code.startswith("editions.")]


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _line(path: Path, needle: str) -> int:
    return next(n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if needle in line)


def test_matching_editions_raise_nothing(settings):
    assert _edition_findings(settings) == [] and _edition_findings(settings, "zh") == []


@pytest.mark.parametrize("old, new, kind", [
    ("## 结论\n", "", "sections"),
    ("### 多伊·简：标准合作\n", "", "articles"),
    ("[^1]: 该报告发表于 2025 年。\n", "", "footnotes"),
    ("![标准会议图表](https://example.org/chart.png)\n", "", "images"),
    ("中文测试期到此结束。", "中文测试期到此结束，见[附录](https://example.org/annex)。", "links"),
])
def test_a_structure_difference_is_a_warning_on_the_edition(settings, old, new, kind):
    _edit(settings.issues_dir / ZH, old, new)
    if kind == "footnotes":  # a note without its reference is refused as a parse error: drop both
        _edit(settings.issues_dir / ZH, "[^1]。", "。")
    for lang in (None, "zh-Hans"):  # checking either edition shows it
        found = [f for f in _edition_findings(settings, lang) if f.code == "editions.structure"]
        assert len(found) == 1 and f"{kind}, the main edition" in found[0].message
        assert found[0].level == "warning" and found[0].path.endswith(ZH) and found[0].line


def test_a_link_pointing_elsewhere_names_its_line(settings):
    path = settings.issues_dir / ZH
    _edit(path, "(https://example.org/report)", "(https://example.org/report-2024)")
    found = _edition_findings(settings)
    assert [f.code for f in found] == ["editions.link-differs"]
    assert found[0].line == _line(path, "report-2024") and "https://example.org/report-2024" in found[0].message


def _git(root: Path, *args: str, when: str | None = None) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org"}
    if when:
        env.update(GIT_AUTHOR_DATE=when, GIT_COMMITTER_DATE=when)
    subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True)


def test_an_edition_older_than_the_main_editions_last_change(settings):
    root = settings.root
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "both editions", when="2026-01-01T10:00:00+00:00")
    assert _edition_findings(settings) == []
    _edit(settings.issues_dir / MAIN, "The end of the English test issue.", "The end of the corrected test issue.")
    assert [f.code for f in _edition_findings(settings)] == ["editions.stale"]  # uncommitted: changed now
    _git(root, "commit", "-qam", "a correction in English", when="2026-01-02T10:00:00+00:00")
    found = _edition_findings(settings)
    assert [f.code for f in found] == ["editions.stale"] and found[0].path.endswith(ZH)
    _edit(settings.issues_dir / ZH, "中文测试期到此结束。", "修订后的中文测试期到此结束。")
    _git(root, "commit", "-qam", "the correction in Chinese", when="2026-01-03T10:00:00+00:00")
    assert _edition_findings(settings) == []


def test_outside_git_there_is_no_age_check(settings):
    assert not (settings.root / ".git").exists()
    os.utime(settings.issues_dir / ZH, (0, 0))
    assert _edition_findings(settings) == []
