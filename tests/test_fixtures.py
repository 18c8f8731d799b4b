"""The fixture publication never lists the repo's issues/: an editor's draft there changes no test."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import conftest  # the module pytest loaded the fixtures from (tests/ has no __init__.py)

TESTS = Path(__file__).resolve().parent
DRAFT = "---\nnumber: 7\ntitle: Half written\ndate: 2025-01-01\n---\n\nTo do.\n"


def test_a_draft_in_the_repo_does_not_reach_the_fixture_publication(tmp_path, monkeypatch, request):
    repo = tmp_path / "repo-copy"  # a copy of the repo's publication, plus the editor's draft
    shutil.copytree(conftest.REPO / "issues", repo / "issues")
    shutil.copytree(conftest.REPO / "templates", repo / "templates")
    shutil.copy(conftest.REPO / "newsletter.toml", repo / "newsletter.toml")
    (repo / "issues" / "007-draft.md").write_text(DRAFT, encoding="utf-8")
    monkeypatch.setattr(conftest, "REPO", repo)

    root = request.getfixturevalue("publication_root")
    assert sorted(p.name for p in (root / "issues").iterdir()) == [conftest.ISSUE6.name]
    settings = request.getfixturevalue("settings")
    assert settings.issues_dir == root / "issues"


def test_rendered6_comes_from_a_fixture_publication(rendered6):
    assert rendered6.source is not None and rendered6.source.name == conftest.ISSUE6.name
    assert conftest.REPO not in rendered6.source.resolve().parents  # a copy in tmp, not the repo's file
    assert sorted(p.name for p in rendered6.source.parent.iterdir()) == [conftest.ISSUE6.name]


def test_no_test_reads_the_repos_issues_folder_or_settings():
    """Tests may copy issue #6 by its path; none lists the repo's issues/ or loads the repo's settings
    (settings list its issues/: `check` compares numbers and slugs, the archive publishes them)."""
    issues = re.compile(r"REPO\s*/\s*[\"']issues[\"']")
    settings = re.compile(r"load_settings\(\s*REPO\b")
    offenders = [f"{path.name}:{n}" for path in sorted(TESTS.rglob("*.py"))
                 if path.name not in ("conftest.py", Path(__file__).name)
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
                 if (issues.search(line) and "006-" not in line) or settings.search(line)]
    assert offenders == []
