"""A throwaway PostgreSQL cluster for the benchmarks: the tests' own (tests/pg_cluster.py),
loopback only, in a temporary folder, removed afterwards. One database per measured run,
copied from a seeded template (``CREATE DATABASE … TEMPLATE``): a file copy, not a re-seed."""

from __future__ import annotations

import contextlib
from typing import Iterator

from _common import REPO  # noqa: F401 - puts the repository on sys.path

from tests.pg_cluster import Cluster, ClusterUnavailable, start_cluster


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    """A running cluster, stopped and removed on the way out; exits with one line when there is none."""
    try:
        c = start_cluster()
    except ClusterUnavailable as exc:
        raise SystemExit(f"no PostgreSQL cluster: {exc}") from None
    try:
        yield c
    finally:
        c.stop()


def create_database(c: Cluster, name: str, template: str | None = None) -> str:
    """A new database (a copy of ``template`` when given); returns its URL."""
    import psycopg

    with psycopg.connect(c.url(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return c.url(name)


def drop_database(c: Cluster, name: str) -> None:
    import psycopg

    with psycopg.connect(c.url(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sql(url: str, statement: str, params: tuple = ()) -> list[tuple]:
    """One statement on its own autocommit connection; its rows (if any)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params or None)
        return cur.fetchall() if cur.description else []
