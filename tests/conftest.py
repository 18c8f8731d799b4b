"""Shared fixtures: a fixture publication (the repo's newsletter.toml and templates/, and
issue #6 alone), its settings, and issue #6 rendered.

The fixtures never list the repo's ``issues/``: this repository is the publication, so an
editor's draft ``issues/007-….md`` must not change what any test sees.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from newsletter.config import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent
SEED = REPO.parent / "shared" / "seeds" / "chinaffairs-china-scholar-insights-006.txt"
ISSUE6 = REPO / "issues" / "006-global-governance-of-ai.md"


def make_publication(root: Path) -> Path:
    """newsletter.toml, templates/ and issues/ holding issue #6 only (copied by its fixed path)."""
    (root / "issues").mkdir(parents=True)
    shutil.copy(REPO / "newsletter.toml", root / "newsletter.toml")
    shutil.copytree(REPO / "templates", root / "templates")
    shutil.copy(ISSUE6, root / "issues" / ISSUE6.name)
    return root


@pytest.fixture
def publication_root(tmp_path: Path) -> Path:
    """A fixture publication in tmp (see :func:`make_publication`)."""
    return make_publication(tmp_path / "pub")


@pytest.fixture
def settings(publication_root: Path) -> Settings:
    return load_settings(publication_root, environ={})


@pytest.fixture(scope="session")
def rendered6(tmp_path_factory: pytest.TempPathFactory):
    """Issue #6 rendered once per session in a fixture publication."""
    from newsletter.render import render_issue

    root = make_publication(tmp_path_factory.mktemp("pub6"))
    return render_issue(root / "issues" / ISSUE6.name, load_settings(root, environ={}))


def seed_lines() -> list[str]:
    if SEED.exists():
        text = SEED.read_text(encoding="utf-8")
    else:  # CI keeps a copy of shared/ beside the clone; fall back to the issue's own text
        pytest.skip("seed file not available")
    return [line.strip() for line in text.splitlines() if line.strip()]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A database path in tmp (created by the first module that opens it)."""
    return tmp_path / "news.db"
