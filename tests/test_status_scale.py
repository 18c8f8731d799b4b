"""`status` at any size: the newest error and the per-edition counts come through partial indexes
(delivery v7), not by scanning a delivery's every row, and say what a full GROUP BY says."""

from __future__ import annotations

import collections
from contextlib import closing

import pytest

from newsletter.db import backend
from newsletter.ledger import LEDGER_STATES, edition_counts, last_error
from newsletter.schema import open_database

from test_delivery import db  # noqa: F401

STATES = ("pending", "sent", "retry", "gave-up", "skipped")


def _delivery(conn, rows: list[tuple[str, str, str | None, str]]) -> int:
    """One delivery whose readers have (edition, state, last_error, updated_at)."""
    conn.execute("BEGIN")
    for i in range(len(rows)):
        conn.execute("INSERT INTO subscribers(email, name, status, created_at, changed_at) VALUES(?, '', 'active', "
                     "'2030-01-01T00:00:00.000000Z', '2030-01-01T00:00:00.000000Z')", (f"r{i}@example.org",))
    did = conn.execute("INSERT INTO deliveries(slug, content_hash, state, created_at) VALUES('s', 'h', 'paused', "
                       "'2030-01-01T00:00:00.000000Z') RETURNING id").fetchone()[0]
    ids = [r[0] for r in conn.execute("SELECT id FROM subscribers ORDER BY id")]
    for sid, (edition, state, error, at) in zip(ids, rows):
        conn.execute("INSERT INTO ledger(delivery_id, subscriber_id, email, state, edition, last_error, updated_at) "
                     "VALUES(?, ?, 'x@example.org', ?, ?, ?, ?)", (did, sid, state, edition, error, at))
    conn.execute("COMMIT")
    return did


@pytest.mark.parametrize("editions", [("",), ("", "zh-Hans", "de"), ("zh-Hans",)])
def test_edition_counts_say_what_a_group_by_says(db, editions):  # noqa: F811
    rows = [(editions[i % len(editions)], STATES[i % len(STATES)], None, "2030-01-01T00:00:00.000000Z")
            for i in range(37)]
    with closing(open_database(db)) as conn:
        did = _delivery(conn, rows)
        truth: dict[str, dict[str, int]] = {}
        for (edition, state), n in collections.Counter((e, s) for e, s, _, _ in rows).items():
            truth.setdefault(edition, dict.fromkeys(LEDGER_STATES, 0))[state] = n
        got = edition_counts(conn, did)
    assert got == truth and list(got) == sorted(truth)


def test_last_error_is_the_newest_and_both_status_queries_can_use_their_index(db):  # noqa: F811
    rows = [("", "sent", None, f"2030-01-01T00:00:{i:02d}.000000Z") for i in range(30)]
    rows[7] = ("", "gave-up", "451 later", "2030-01-01T00:00:07.000000Z")
    rows[21] = ("zh-Hans", "retry", "421 busy", "2030-01-01T00:00:21.000000Z")
    rows[25] = ("", "sent", None, "2030-01-01T00:00:59.000000Z")
    with closing(open_database(db)) as conn:
        did = _delivery(conn, rows)
        assert last_error(conn, did) == "421 busy"
        plans = []
        for sql in ("SELECT last_error FROM ledger WHERE delivery_id=? AND last_error IS NOT NULL "
                    "ORDER BY updated_at DESC LIMIT 1",
                    "SELECT edition, state, COUNT(*) FROM ledger WHERE delivery_id=? AND edition<>'' "
                    "GROUP BY edition, state ORDER BY edition"):
            if backend(conn) == "sqlite":
                plans.append(" ".join(str(r[-1]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql, (did,))))
            else:  # a tiny table is scanned whatever its indexes: ask whether the index can serve
                conn.execute("SET enable_seqscan = off")
                plans.append(" ".join(str(r[0]) for r in conn.execute("EXPLAIN " + sql, (did,))))
    assert "ledger_errors" in plans[0] and "ledger_editions" in plans[1], plans
