"""Writers of one process wait in line for the database (newsletter.db.write_transaction)
instead of sleeping in SQLite's busy handler, and the WAL checkpoint runs outside the line."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from newsletter.db import CHECKPOINT_EVERY, FairLock, connect, write_transaction, writer_lock
from newsletter.store import SubscriberStore


def _wait_until(predicate, limit: int = 100_000) -> None:
    for _ in range(limit):  # a bounded poll: no timing in the assertion
        if predicate():
            return
        threading.Event().wait(0.001)
    raise AssertionError("condition never held")


def test_the_lock_goes_to_waiters_in_the_order_they_came():
    lock = FairLock()
    assert lock.acquire(timeout=1)
    order: list[int] = []

    def waiter(i: int) -> None:
        assert lock.acquire(timeout=30)
        order.append(i)
        lock.release()

    threads = []
    for i in range(12):
        t = threading.Thread(target=waiter, args=(i,))
        t.start()
        threads.append(t)
        _wait_until(lambda: len(lock._waiters) == i + 1)  # queued before the next one comes
    lock.release()
    for t in threads:
        t.join(30)
    assert order == list(range(12))


def test_a_wait_is_bounded_and_leaves_the_line():
    lock = FairLock()
    assert lock.acquire(timeout=1)
    assert lock.acquire(timeout=0.01) is False
    assert not lock._waiters
    lock.release()
    assert lock.acquire(timeout=0.01)  # free again, and nobody is owed it


def test_one_lock_per_database_file_per_process(tmp_path: Path):
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    assert writer_lock(a) is writer_lock(tmp_path / "." / "a.db")
    assert writer_lock(a) is not writer_lock(b)


def test_concurrent_writers_queue_instead_of_failing(tmp_path: Path):
    """SQLite told to give up at once (busy_timeout 0) still sees no conflict: the writers of
    this process never meet inside SQLite. The old code, relying on SQLite's lock, failed here."""
    path = tmp_path / "n.db"
    SubscriberStore.open(path).close()
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def writer(k: int) -> None:
        store = SubscriberStore(connect(path))
        store.conn.execute("PRAGMA busy_timeout=0")
        store.conn.busy_seconds = 60  # how long this process's line may keep it waiting
        start.wait()
        try:
            for i in range(40):
                store.add(f"w{k}-{i}@example.org")
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    with SubscriberStore.open(path) as store:
        assert store.count("active") == 8 * 40


def test_a_failed_transaction_lets_the_next_writer_in(tmp_path: Path):
    conn = connect(tmp_path / "n.db")
    conn.execute("CREATE TABLE t (x INTEGER UNIQUE)")
    with write_transaction(conn):
        conn.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.IntegrityError):
        with write_transaction(conn):
            conn.execute("INSERT INTO t VALUES (2)")
            conn.execute("INSERT INTO t VALUES (1)")
    assert not conn.in_transaction and not conn.writer._held
    with write_transaction(conn):
        conn.execute("INSERT INTO t VALUES (3)")
    assert [r[0] for r in conn.execute("SELECT x FROM t ORDER BY x")] == [1, 3]


def test_the_checkpoint_runs_outside_the_line(tmp_path: Path):
    conn = connect(tmp_path / "n.db")
    conn.execute("CREATE TABLE t (x INTEGER)")
    seen: list[tuple[str, bool]] = []
    conn.set_trace_callback(lambda sql: seen.append((sql, conn.writer._held)))
    conn.writer.commits = 0
    for i in range(2 * CHECKPOINT_EVERY):
        with write_transaction(conn):
            conn.execute("INSERT INTO t VALUES (?)", (i,))
    checkpoints = [held for sql, held in seen if "wal_checkpoint" in sql]
    assert checkpoints == [False, False]  # one per CHECKPOINT_EVERY commits, none inside the lock
    assert all(held for sql, held in seen if sql.startswith(("BEGIN", "INSERT", "COMMIT")))


def test_the_interpreter_switches_quickly_only_while_a_writer_holds_the_database(tmp_path: Path):
    import sys

    from newsletter.db import WRITER_SWITCH_INTERVAL

    before = sys.getswitchinterval()
    a, b = connect(tmp_path / "a.db"), connect(tmp_path / "b.db")
    with write_transaction(a):
        assert sys.getswitchinterval() == pytest.approx(WRITER_SWITCH_INTERVAL)
        with write_transaction(b):  # two databases at once: restored only after the last
            pass
        assert sys.getswitchinterval() == pytest.approx(WRITER_SWITCH_INTERVAL)
    assert sys.getswitchinterval() == before
    with pytest.raises(RuntimeError):
        with write_transaction(a):
            raise RuntimeError
    assert sys.getswitchinterval() == before


def test_an_interrupted_wait_leaves_the_line():
    """Ctrl-C (any exception) while waiting must not leave a dead waiter the lock is handed to."""
    lock = FairLock()
    assert lock.acquire(timeout=1)

    class Interrupt(BaseException):
        pass

    real = threading.Lock

    class Baton:
        """A baton whose wait is interrupted."""

        def __init__(self) -> None:
            self.inner = real()

        def acquire(self, timeout: float = -1) -> bool:
            if timeout == -1:
                return self.inner.acquire()
            raise Interrupt

        def release(self) -> None:
            self.inner.release()

    import newsletter.db as db

    db.threading.Lock = Baton  # the baton made inside acquire()
    try:
        with pytest.raises(Interrupt):
            lock.acquire(timeout=5)
    finally:
        db.threading.Lock = real
    assert not lock._waiters
    lock.release()
    assert lock.acquire(timeout=0.01)  # free: nobody dead was handed it
