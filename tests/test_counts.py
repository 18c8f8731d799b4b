"""What `subscribers count` and `status` read is kept current as rows change, and costs the same
however long the list: counted here in SQLite virtual-machine steps, not wall time."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from newsletter.db import connect, migrate
from newsletter.ledger import LEDGER_STATES, _ledger_summary, delivery_status, open_ledger
from newsletter.store import COMPONENT, MIGRATIONS, STATUSES, SubscriberStore


def _truth(conn: sqlite3.Connection) -> dict[str, int]:
    out = dict.fromkeys(STATUSES, 0)
    out.update(dict(conn.execute("SELECT status, COUNT(*) FROM subscribers GROUP BY status").fetchall()))
    return out


def _seed(conn: sqlite3.Connection, n: int, start: int = 0, status: str = "active") -> None:
    conn.execute("BEGIN")
    conn.execute("WITH RECURSIVE c(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM c WHERE i < ?) "
                 "INSERT INTO subscribers(email, status, created_at, changed_at) "
                 "SELECT printf('r%07d@example.org', i), ?, 'x', 'x' FROM c", (start + 1, start + n, status))
    conn.execute("COMMIT")


def _steps(conn: sqlite3.Connection, fn) -> int:
    """SQLite VM instructions (in hundreds) that ``fn`` makes the connection run."""
    ticks = [0]

    def tick() -> int:
        ticks[0] += 1
        return 0

    conn.set_progress_handler(tick, 100)
    try:
        fn()
    finally:
        conn.set_progress_handler(None, 0)
    return ticks[0]


def test_status_counts_follow_every_kind_of_write(tmp_path: Path):
    store = SubscriberStore.open(tmp_path / "n.db")
    rng = random.Random(7)
    emails = [f"u{i}@example.org" for i in range(40)] + ["ü@exämple.org".replace("ü@", "u@")]
    for step in range(400):
        email = rng.choice(emails)
        op = rng.choice(["add", "resub", "unsub", "bounce", "complain", "remove", "sql-update", "sql-delete"])
        try:
            if op == "add":
                store.add(email, f"N{step}")
            elif op == "resub":
                store.add(email, resubscribe=True)
            elif op == "unsub":
                store.unsubscribe(email)
            elif op == "bounce" and (s := store.get_by_email(email)):
                store.mark_bounced(s.id, "550")
            elif op == "complain" and (s := store.get_by_email(email)):
                store.mark_complained(s.id, "spam")
            elif op == "remove":
                store.remove(email)
            elif op == "sql-update":
                store.conn.execute("UPDATE subscribers SET status=? WHERE email=?", (rng.choice(STATUSES), email))
            elif op == "sql-delete":
                store.conn.execute("DELETE FROM subscribers WHERE email=?", (email,))
        except Exception as exc:  # a refused step (e.g. a complained reader) changes nothing
            assert "not reactivated" in str(exc) or "no subscriber" in str(exc) or "reactivated" in str(exc)
        assert store.counts() == _truth(store.conn), (step, op)
    with pytest.raises(sqlite3.IntegrityError):  # a failed statement leaves the counts alone too
        store.conn.execute("INSERT INTO subscribers(email, created_at, changed_at) VALUES(?, 'x', 'x')",
                           (store.conn.execute("SELECT email FROM subscribers LIMIT 1").fetchone()[0],))
    assert store.counts() == _truth(store.conn)
    assert store.count() == sum(_truth(store.conn).values())
    store.close()


def test_counts_survive_a_rolled_back_transaction(tmp_path: Path):
    store = SubscriberStore.open(tmp_path / "n.db")
    store.add("a@example.org")
    with pytest.raises(RuntimeError):
        with store.transaction() as conn:
            conn.execute("INSERT INTO subscribers(email, created_at, changed_at) VALUES('b@example.org','x','x')")
            raise RuntimeError
    assert store.counts()["active"] == 1 == _truth(store.conn)["active"]


def test_an_older_database_gets_its_counts_when_migrated(tmp_path: Path):
    conn = connect(tmp_path / "old.db")
    before_counts = next(i for i, m in enumerate(MIGRATIONS) if isinstance(m, str) and "subscriber_counts" in m)
    migrate(conn, COMPONENT, MIGRATIONS[:before_counts])  # as the previous release left it
    _seed(conn, 300)
    _seed(conn, 20, start=300, status="unsubscribed")
    conn.execute("UPDATE subscribers SET email='ü' || email WHERE id % 50 = 0")  # imported before refusal
    migrate(conn, COMPONENT, MIGRATIONS)  # what the opener does
    store = SubscriberStore(conn)
    assert store.counts() == _truth(conn) and store.counts()["unsubscribed"] == 20
    n, example = store.unsendable()
    assert n == 6 and example.startswith("ü")


def test_unsendable_follows_writes(tmp_path: Path):
    store = SubscriberStore.open(tmp_path / "n.db")
    _seed(store.conn, 50)
    assert store.unsendable() == (0, None)
    store.conn.execute("UPDATE subscribers SET email='ü0@example.org' WHERE id=3")
    assert store.unsendable() == (1, "ü0@example.org")
    store.unsubscribe(3)
    assert store.unsendable() == (0, None)


def test_count_and_unsendable_do_not_grow_with_the_list(tmp_path: Path):
    costs = []
    for n in (1_000, 50_000):
        store = SubscriberStore.open(tmp_path / f"{n}.db")
        _seed(store.conn, n)
        _seed(store.conn, n // 10, start=n, status="unsubscribed")
        costs.append(_steps(store.conn, lambda: (store.counts(), store.unsendable(), store.count("active"))))
        store.close()
    assert costs[1] <= costs[0] + 1, costs  # the old GROUP BY and GLOB scans took ~50x more at 50k


def _freeze(conn: sqlite3.Connection, delivery_id: int, n: int) -> None:
    conn.execute("INSERT INTO deliveries(id, slug, content_hash, state, created_at) "
                 "VALUES(?, ?, 'h', 'running', '2025-01-01T00:00:00.000000Z')", (delivery_id, f"s{delivery_id}"))
    conn.execute("INSERT INTO ledger(delivery_id, subscriber_id, email, state, updated_at) "
                 "SELECT ?, id, email, 'pending', '2025-01-01T00:00:00.000000Z' FROM subscribers WHERE id<=?",
                 (delivery_id, n))


def _ledger_truth(conn: sqlite3.Connection, delivery_id: int) -> dict[str, int]:
    counts = dict.fromkeys(LEDGER_STATES, 0)
    counts.update(dict(conn.execute("SELECT state, COUNT(*) FROM ledger WHERE delivery_id=? GROUP BY state",
                                    (delivery_id,)).fetchall()))
    return counts


def test_delivery_counts_follow_every_row_change(tmp_path: Path):
    conn = open_ledger(tmp_path / "n.db")
    _seed(conn, 200)
    _freeze(conn, 1, 200)
    _freeze(conn, 2, 50)
    rng = random.Random(3)
    last_finished: dict[int, str | None] = {1: None, 2: None}  # when a reader last reached a final state
    for step in range(300):
        did, sid = rng.choice((1, 2)), rng.randint(1, 200)
        state = rng.choice(LEDGER_STATES)
        stamp = f"2025-01-01T00:{step // 60:02d}:{step % 60:02d}.000000Z"
        if step % 37 == 0:
            conn.execute("DELETE FROM ledger WHERE delivery_id=? AND subscriber_id=?", (did, sid))
        else:
            stored = rng.choice((stamp, stamp, b"\x00"))  # unreadable bytes: never "the latest"
            hit = conn.execute("UPDATE ledger SET state=?, updated_at=? WHERE delivery_id=? AND subscriber_id=?",
                               (state, stored, did, sid)).rowcount
            if hit and state not in ("pending", "retry", "sending") and stored == stamp:
                last_finished[did] = stamp
        for d in (1, 2):
            assert _ledger_summary(conn, d) == (_ledger_truth(conn, d), last_finished[d]), (step, d)
    conn.execute("DELETE FROM deliveries WHERE id=2")  # cascades: its counts go with it
    assert conn.execute("SELECT COUNT(*) FROM delivery_counts WHERE delivery_id=2").fetchone()[0] == 0


def test_status_reads_do_not_grow_with_the_delivery(tmp_path: Path):
    costs = []
    for n in (1_000, 50_000):
        conn = open_ledger(tmp_path / f"{n}.db")
        _seed(conn, n)
        conn.execute("BEGIN")
        _freeze(conn, 1, n)
        conn.execute("UPDATE ledger SET state='sent', updated_at='2025-01-01T00:05:00.000000Z' WHERE subscriber_id % 2 = 0")
        conn.execute("UPDATE deliveries SET state='done', total=? WHERE id=1", (n,))
        conn.execute("COMMIT")
        rows = []
        costs.append(_steps(conn, lambda: rows.extend(delivery_status(conn))))
        assert rows[0].sent == n // 2 and rows[0].total == n
        conn.close()
    assert costs[1] <= costs[0] + 1, costs


# ---------------------------------------------------------------------------------------
# PostgreSQL keeps the same counts with statement triggers over transition tables
# ---------------------------------------------------------------------------------------
def test_subscriber_counts_follow_every_kind_of_write_on_postgresql(pg_url):
    store = SubscriberStore.open(pg_url)
    rng = random.Random(11)
    emails = [f"u{i}@example.org" for i in range(25)]
    for step in range(120):
        email, op = rng.choice(emails), rng.choice(["add", "resub", "unsub", "bounce", "remove", "bulk", "sql-delete"])
        try:
            if op == "add":
                store.add(email, f"N{step}")
            elif op == "resub":
                store.add(email, resubscribe=True)
            elif op == "unsub":
                store.unsubscribe(email)
            elif op == "bounce" and (s := store.get_by_email(email)):
                store.mark_bounced(s.id, "550")
            elif op == "remove":
                store.remove(email)
            elif op == "bulk":  # one statement moving many rows between several statuses at once
                store.conn.execute("UPDATE subscribers SET status=CASE WHEN id % 2 = 0 THEN 'active' "
                                   "ELSE 'unsubscribed' END WHERE id % 3 = ?", (step % 3,))
            elif op == "sql-delete":
                store.conn.execute("DELETE FROM subscribers WHERE email=?", (email,))
        except Exception as exc:  # a refused step changes nothing
            assert "reactivated" in str(exc) or "no subscriber" in str(exc), exc
        assert store.counts() == _truth(store.conn), (step, op)
    store.close()


def test_delivery_counts_follow_row_changes_on_postgresql(pg_url):
    conn = open_ledger(pg_url)
    conn.execute("INSERT INTO subscribers(email, created_at, changed_at) "
                 "SELECT 'r' || i || '@example.org', 'x', 'x' FROM generate_series(1, 120) AS i")
    for did, n in ((1, 120), (2, 40)):
        _freeze(conn, did, n)
    rng = random.Random(5)
    last_finished: dict[int, str | None] = {1: None, 2: None}
    for step in range(120):
        did, low = rng.choice((1, 2)), rng.randint(1, 120)
        state = rng.choice(LEDGER_STATES)
        stamp = f"2025-01-01T00:{step // 60:02d}:{step % 60:02d}.000000Z"
        if step % 29 == 0:
            conn.execute("DELETE FROM ledger WHERE delivery_id=? AND subscriber_id=?", (did, low))
        else:  # several rows in one statement, as a claimed batch moves
            hit = conn.execute("UPDATE ledger SET state=?, updated_at=? WHERE delivery_id=? AND subscriber_id "
                               "BETWEEN ? AND ?", (state, stamp, did, low, low + 4)).rowcount
            if hit and state not in ("pending", "retry", "sending"):
                last_finished[did] = stamp
        for d in (1, 2):
            assert _ledger_summary(conn, d) == (_ledger_truth(conn, d), last_finished[d]), (step, d)
    conn.execute("DELETE FROM deliveries WHERE id=2")
    assert conn.execute("SELECT COUNT(*) FROM delivery_counts WHERE delivery_id=2").fetchone()[0] == 0
    conn.close()
