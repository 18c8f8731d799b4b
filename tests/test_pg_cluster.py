"""The test cluster itself: PostgreSQL 15+ on loopback, password auth, run by an unprivileged user."""

from __future__ import annotations

import psycopg
import pytest


def test_a_fresh_database_per_test_on_loopback(pg_url, pg_cluster):
    with psycopg.connect(pg_url) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()[0]
        assert int(version) >= 150000
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname='public'").fetchone()[0] == 0
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"
    assert f":{pg_cluster.port}/" in pg_url


def test_the_server_refuses_a_wrong_password(pg_cluster):
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_cluster.url(password="wrong"), connect_timeout=5).close()


def test_the_server_does_not_run_as_root(pg_url):
    with psycopg.connect(pg_url) as conn:
        folder = conn.execute("SHOW data_directory").fetchone()[0]
    import os
    from pathlib import Path

    assert os.stat(Path(folder)).st_uid != 0
