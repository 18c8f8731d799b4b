"""Shared fixtures: the repo's own publication (ChinAffairs+), settings, and issue #6."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from newsletter.config import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent
SEED = REPO.parent / "shared" / "seeds" / "chinaffairs-china-scholar-insights-006.txt"
ISSUE6 = REPO / "issues" / "006-global-governance-of-ai.md"


@pytest.fixture
def publication_root(tmp_path: Path) -> Path:
    """A copy of the repo's publication (newsletter.toml, issues/, templates/) in tmp."""
    root = tmp_path / "pub"
    root.mkdir()
    shutil.copy(REPO / "newsletter.toml", root / "newsletter.toml")
    shutil.copytree(REPO / "issues", root / "issues")
    shutil.copytree(REPO / "templates", root / "templates")
    return root


@pytest.fixture
def settings(publication_root: Path) -> Settings:
    return load_settings(publication_root, environ={})


@pytest.fixture(scope="session")
def rendered6():
    """Issue #6 rendered once per session with the repo's own settings."""
    from newsletter.render import render_issue

    return render_issue(ISSUE6, load_settings(REPO, environ={}))


def seed_lines() -> list[str]:
    if SEED.exists():
        text = SEED.read_text(encoding="utf-8")
    else:  # CI keeps a copy of shared/ beside the clone; fall back to the issue's own text
        pytest.skip("seed file not available")
    return [line.strip() for line in text.splitlines() if line.strip()]
