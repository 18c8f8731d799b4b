"""Processes that share the writer line (newsletter.db.share_writer_line: serve's processes) wait
for each other's writes in the kernel's queue, not in SQLite's sleep-and-retry: a writer whose
own SQLite busy timeout is zero still gets through while another process writes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from newsletter.db import connect

HOLDER = textwrap.dedent("""
    import sys
    from newsletter import db
    db.share_writer_line()
    conn = db.connect(sys.argv[1])
    with db.write_transaction(conn):
        conn.execute("INSERT INTO t VALUES ('holder')")
        print("holding", flush=True)
        sys.stdin.readline()  # until the test lets go
    print("committed", flush=True)
""")

WAITER = textwrap.dedent("""
    import sys
    from newsletter import db
    if sys.argv[2] == "shared":
        db.share_writer_line()
    conn = db.connect(sys.argv[1])
    conn.execute("PRAGMA busy_timeout=0")  # SQLite's own wait: none
    conn.busy_seconds = 5.0
    print("waiting", flush=True)
    try:
        with db.write_transaction(conn):
            conn.execute("INSERT INTO t VALUES ('waiter')")
    except Exception as exc:
        print(f"failed: {exc}", flush=True)
    else:
        print("written", flush=True)
""")


def _py(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("mode, outcome", [("shared", "written"), ("own", "failed: database is locked")])
def test_a_writer_in_the_shared_line_waits_for_another_process(tmp_path: Path, mode: str, outcome: str):
    path = tmp_path / "line.db"
    conn = connect(path)
    conn.execute("CREATE TABLE t (who TEXT)")
    conn.close()
    holder = _py(HOLDER, str(path))
    try:
        assert holder.stdout.readline().strip() == "holding", holder.stderr.read()
        waiter = _py(WAITER, str(path), mode)
        assert waiter.stdout.readline().strip() == "waiting"
        if mode == "shared":  # it must still be waiting: the holder has not let go
            with pytest.raises(subprocess.TimeoutExpired):
                waiter.wait(timeout=0.5)
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "committed"
        out, err = waiter.communicate(timeout=30)
    finally:
        for proc in (holder,):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert out.strip() == outcome, err
    rows = [r[0] for r in connect(path).execute("SELECT who FROM t ORDER BY rowid")]
    assert rows == (["holder", "waiter"] if mode == "shared" else ["holder"])
    assert (tmp_path / "line.db-writers").exists()  # the holder's line, beside the database


def test_a_folder_that_cannot_hold_the_line_file_leaves_sqlite_to_order_the_writers(tmp_path: Path):
    from newsletter import db

    path = tmp_path / "ro.db"
    conn = connect(path)
    conn.execute("CREATE TABLE t (who TEXT)")
    conn.writer.path = str(tmp_path / "no-such-folder" / "ro.db")  # its line file cannot be made
    conn.writer.line_fd = None
    db._SHARED_LINE, before = True, db._SHARED_LINE
    try:
        with db.write_transaction(conn):
            conn.execute("INSERT INTO t VALUES ('x')")
    finally:
        db._SHARED_LINE = before
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 1
    assert conn.writer.line_fd is None
