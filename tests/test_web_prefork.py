"""`serve` as several processes on one socket (newsletter.web.prefork): they share the work and
the database, a child that dies is replaced, and none outlives the parent, however it ends."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from newsletter.config import load_settings
from newsletter.errors import ConfigError
from newsletter.schema import open_database
from newsletter.store import SubscriberStore
from newsletter.tokens import make_token
from newsletter.web import prefork
from newsletter.web.server import MAX_PROCESSES, ServerLimits, default_processes

from tests.helpers import is_closed, wait_until

SECRET = "prefork-secret-0123456789abcdef"
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSLETTER_", "SMTP_"))}


@pytest.mark.parametrize("environ, processes", [
    ({}, default_processes()),
    ({"NEWSLETTER_DB": "postgresql://news@127.0.0.1:5432/news"}, 1),
    ({"NEWSLETTER_SERVE_PROCESSES": "3"}, 3),
])
def test_processes_default_to_the_cores_on_sqlite_and_one_on_postgresql(tmp_path, environ, processes):
    assert ServerLimits.from_settings(load_settings(tmp_path, environ=environ)).processes == processes


@pytest.mark.parametrize("value", ["0", "-2", str(MAX_PROCESSES + 1), "two"])
def test_a_bad_process_count_is_one_line(tmp_path, value):
    with pytest.raises(ConfigError, match="NEWSLETTER_SERVE_PROCESSES"):
        ServerLimits.from_settings(load_settings(tmp_path, environ={"NEWSLETTER_SERVE_PROCESSES": value}))


def _children(pid: int) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().split(") ")[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime




def _start(root: Path, processes: int) -> tuple[subprocess.Popen, int]:
    (root / "newsletter.toml").write_text('name = "Forks"\nfrom_email = "news@example.org"\n')
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "--root", str(root), "serve", "--port", "0"],
                            env={**ENV, "NEWSLETTER_SECRET_KEY": SECRET, "NEWSLETTER_TRANSPORT": "dryrun",
                                 "NEWSLETTER_SERVE_PROCESSES": str(processes), "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)/ \(waitress, (\d+) process", line)
    assert match and int(match.group(2)) == processes, line + (proc.stderr.read() if proc.poll() is not None else "")
    assert wait_until(lambda: len(_children(proc.pid)) == processes - 1), _children(proc.pid)
    return proc, int(match.group(1))


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    return err


@pytest.fixture
def readers(tmp_path):
    store = SubscriberStore(open_database(tmp_path / "newsletter.db"))
    subs = [store.add(f"reader{i:04d}@example.org") for i in range(400)]
    store.close()
    return subs


def test_the_processes_share_the_clients_and_every_write_is_applied(tmp_path, readers):
    proc, port = _start(tmp_path, 3)
    try:
        children = _children(proc.pid)
        before = {pid: _cpu_ticks(pid) for pid in children | {proc.pid}}
        answers: list[int] = []

        def client(chunk) -> None:
            with requests.Session() as session:
                for sub in chunk:
                    r = session.post(f"http://127.0.0.1:{port}/unsubscribe/{make_token(SECRET, sub.id, sub.email)}",
                                     data={"List-Unsubscribe": "One-Click"}, timeout=10)
                    answers.append(r.status_code)

        clients = [threading.Thread(target=client, args=(readers[i::8],)) for i in range(8)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(timeout=120)
        busy = [pid for pid, ticks in before.items() if _cpu_ticks(pid) > ticks]
    finally:
        err = _stop(proc)
    assert answers == [200] * len(readers)
    conn = open_database(tmp_path / "newsletter.db")
    assert conn.execute("SELECT COUNT(*) FROM subscribers WHERE status='unsubscribed'").fetchone()[0] == len(readers)
    assert len(busy) >= 2, (before, busy)  # more than one process answered
    assert "Traceback" not in err, err
    assert all(not _alive(pid) for pid in children)


def test_a_child_that_dies_is_replaced(tmp_path, readers):
    proc, port = _start(tmp_path, 2)
    try:
        (child,) = _children(proc.pid)
        os.kill(child, signal.SIGKILL)
        assert wait_until(lambda: len(_children(proc.pid) - {child}) == 1)
        for _ in range(20):  # whichever process takes each connection answers it
            assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    finally:
        err = _stop(proc)
    assert "serve process 1 exited" in err, err


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_no_child_outlives_the_parent(tmp_path, how):
    proc, _ = _start(tmp_path, 3)
    children = _children(proc.pid)
    proc.send_signal(how)
    proc.wait(timeout=15)
    assert wait_until(lambda: not any(_alive(pid) for pid in children)), children
    _stop(proc)


def test_a_child_that_fails_at_start_is_not_restarted_for_ever(caplog):
    listener = socket.create_server(("127.0.0.1", 0))
    with listener:
        children = prefork.Children([sys.executable, "-c", "raise SystemExit(3)"], [listener], 1)
        children.start()
        assert wait_until(lambda: any("not started again" in r.getMessage() for r in caplog.records), limit=30)
        children.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("starting another" in m for m in messages) == prefork.QUICK_DEATHS - 1, messages


def test_the_processes_share_the_connection_cap():
    limits = ServerLimits(connections=100, per_client=20, processes=3).per_process()
    assert (limits.connections, limits.per_client) == (33, 20)
    assert ServerLimits(connections=2, per_client=1, processes=16).per_process().connections == 2
    assert ServerLimits(processes=1).per_process() == ServerLimits(processes=1)


def test_the_processes_hold_at_most_the_connection_cap_together(tmp_path):
    """16 connections that send nothing, against a cap of 6 over 2 processes: each process keeps
    at most 3 (its share), so at most 6 stay open in all."""
    (tmp_path / "newsletter.toml").write_text('name = "Forks"\nfrom_email = "news@example.org"\n')
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "--root", str(tmp_path), "serve", "--port", "0"],
                            env={**ENV, "NEWSLETTER_SECRET_KEY": SECRET, "NEWSLETTER_SERVE_PROCESSES": "2",
                                 "NEWSLETTER_SERVE_CONNECTIONS": "6", "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    socks: list[socket.socket] = []
    try:
        port = int(re.search(r":(\d+)/", proc.stdout.readline()).group(1))
        assert wait_until(lambda: len(_children(proc.pid)) == 1)
        time.sleep(0.5)  # the child is listening too
        for _ in range(16):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            time.sleep(0.02)

        def still_open() -> int:
            return sum(not is_closed(s) for s in socks)

        assert wait_until(lambda: still_open() <= 6, limit=5), still_open()
        assert still_open() >= 3  # a process's share is kept, not emptied
    finally:
        for s in socks:
            s.close()
        _stop(proc)




def test_a_child_stopped_on_purpose_is_not_restarted(tmp_path):
    """A child that ends cleanly (SIGTERM: a service stop reaching every process) stays stopped."""
    proc, port = _start(tmp_path, 3)
    try:
        children = _children(proc.pid)
        one = min(children)
        os.kill(one, signal.SIGTERM)
        assert wait_until(lambda: not _alive(one))
        time.sleep(1.0)  # a replacement would have been started by now
        assert _children(proc.pid) == children - {one}
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    finally:
        err = _stop(proc)
    assert "starting another" not in err, err
