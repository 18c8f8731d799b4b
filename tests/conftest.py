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


# ---------------------------------------------------------------------------------------
# PostgreSQL: one throwaway cluster per session (tests/pg_cluster.py), one database per test
# ---------------------------------------------------------------------------------------
@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A database path in tmp (created by the first module that opens it); suites that run on
    both backends override this with a parametrised one."""
    return tmp_path / "news.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request, tmp_path: Path) -> "Path | str":
    """A SQLite path, then a fresh PostgreSQL database's URL: a suite that runs on both backends
    overrides ``db`` with it (tests/test_held.py and others)."""
    return tmp_path / "news.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def pg_cluster():
    """A loopback PostgreSQL cluster in a temporary folder, stopped and removed at the end.

    Missing PostgreSQL skips the test on a developer's machine but fails it under CI."""
    import os

    from tests.pg_cluster import ClusterUnavailable, start_cluster

    try:
        cluster = start_cluster()
    except ClusterUnavailable as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must test the PostgreSQL backend: {exc}", pytrace=False)
        pytest.skip(f"PostgreSQL not available: {exc}")
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_database(pg_cluster):
    """Make another empty database on the session's cluster: ``pg_database()`` is its URL
    (each dropped after the test). For a test that needs two, e.g. an export and its restore."""
    import secrets

    import psycopg

    made: list[str] = []

    def make() -> str:
        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return pg_cluster.url(name)

    yield make
    import gc

    gc.collect()  # apps the test dropped close their serve pools now, before their database goes
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        for name in made:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_database) -> str:
    """A new empty database on the session's cluster, as a ``postgresql://`` URL (dropped after)."""
    return pg_database()


@pytest.fixture
def pg_web_url(pg_cluster, pg_url) -> str:
    """A fresh database migrated by its owner, reached as the least-privilege web role
    (:mod:`newsletter.pg_roles`): what a web host's `serve` runs as."""
    import secrets
    from urllib.parse import urlsplit

    import psycopg

    from newsletter.pg_roles import web_role_sql
    from newsletter.schema import open_database

    open_database(pg_url).close()
    database = urlsplit(pg_url).path.lstrip("/")
    role, password = "web_" + secrets.token_hex(4), secrets.token_urlsafe(12)
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        admin.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")
    with psycopg.connect(pg_url, autocommit=True) as owner:
        for statement in web_role_sql(role, database):
            owner.execute(statement)
    yield pg_cluster.url(database, user=role, password=password)
    with psycopg.connect(pg_url, autocommit=True) as owner:
        owner.execute(f'DROP OWNED BY "{role}"')
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        admin.execute(f'DROP ROLE IF EXISTS "{role}"')
