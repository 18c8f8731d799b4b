"""serve's pool on PostgreSQL (newsletter.pg.Pool): a connection given back moments ago is lent
again without a round trip; one idle long, or one the server has said goodbye on, is checked
(and replaced when gone). The clock is injected; the server is a real loopback cluster."""

from __future__ import annotations

import select
import time

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from newsletter import pg


@pytest.fixture
def checks(monkeypatch) -> list[int]:
    """How many round-trip checks the pool made (psycopg-pool's own check, counted)."""
    made: list[int] = []
    real = ConnectionPool.check_connection

    def counted(conn) -> None:
        made.append(1)
        real(conn)

    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(counted))
    return made


def _pool(url: str, clock: list[float]) -> pg.Pool:
    return pg.Pool(url, 1, wait=5, idle_check=10, now=lambda: clock[0])


def test_a_connection_given_back_moments_ago_is_lent_without_a_round_trip(pg_url, checks):
    clock = [100.0]
    pool = _pool(pg_url, clock)
    try:
        raw = pool.borrow()  # never lent before: checked
        pool.give_back(raw)
        first = len(checks)
        clock[0] += 5
        again = pool.borrow()
        assert again is raw and len(checks) == first
        assert again.execute("SELECT 1").fetchone()[0] == 1
        pool.give_back(again)
        clock[0] += 11  # idle past idle_check: a firewall may have dropped it silently
        pool.give_back(pool.borrow())
        assert len(checks) == first + 1
    finally:
        pool.close()


def test_a_connection_the_server_closed_is_replaced_when_borrowed(pg_url, pg_cluster, checks):
    clock = [100.0]
    pool = _pool(pg_url, clock)
    try:
        raw = pool.borrow()
        pid = raw.info.backend_pid
        pool.give_back(raw)
        with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:  # a restart, a failover
            assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
        for _ in range(100):  # bounded: the server's goodbye reaches the socket within moments
            if select.select([raw.pgconn.socket], [], [], 0.05)[0]:
                break
        before = len(checks)
        lent = pool.borrow()  # given back moments ago, but its socket shows the server spoke
        assert len(checks) > before
        assert lent.info.backend_pid != pid
        assert lent.execute("SELECT 1").fetchone()[0] == 1
        pool.give_back(lent)
    finally:
        pool.close()


def test_a_one_click_unsubscribe_is_two_round_trips(publication_root, pg_url, monkeypatch):
    """The reader's row (to check the link) and one conditional UPDATE in autocommit: no BEGIN
    or COMMIT. Counted at psycopg's door, which every statement passes."""
    from werkzeug.test import Client

    from newsletter.config import load_settings
    from newsletter.schema import open_database
    from newsletter.store import SubscriberStore
    from newsletter.tokens import make_token
    from newsletter.web import make_app

    secret = "pool-secret-0123456789abcdef"
    with SubscriberStore(open_database(pg_url)) as store:
        readers = [store.add(f"reader{i}@example.org") for i in range(3)]
    env = {"NEWSLETTER_DB": pg_url, "NEWSLETTER_SECRET_KEY": secret, "NEWSLETTER_BASE_URL": "https://news.example"}
    app = make_app(load_settings(publication_root, environ=env), store_path=pg_url)
    client = Client(app)
    sent: list[str] = []
    real = psycopg.Connection.execute

    def counted(self, query, *args, **kwargs):
        sent.append(str(query))
        return real(self, query, *args, **kwargs)

    def one_click(sub) -> int:
        return client.post(f"/unsubscribe/{make_token(secret, sub.id, sub.email)}",
                           data={"List-Unsubscribe": "One-Click"}).status_code

    try:
        assert one_click(readers[0]) == 200  # the pool's first connection: opened and checked
        monkeypatch.setattr(psycopg.Connection, "execute", counted)
        assert [one_click(r) for r in readers[1:]] == [200, 200]
    finally:
        monkeypatch.undo()
        app.web_app.close()
    # The pool may lend a connection it opened meanwhile, checked once with an empty query (which
    # test_a_connection_given_back_moments_ago_is_lent_without_a_round_trip holds); the request's own:
    ours = [q for q in sent if q.strip()]
    assert len(ours) == 4 and len(sent) - len(ours) <= 1, sent
    assert [q.split()[0] for q in ours] == ["SELECT", "UPDATE"] * 2, sent
    with SubscriberStore(open_database(pg_url)) as store:
        assert [store.get(r.id).status for r in readers] == ["unsubscribed"] * 3
