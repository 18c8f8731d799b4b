"""Connection slots under slow clients (issue 16): `newsletter serve` as a real process on
127.0.0.1. Slow clients hold sockets that send part of a request's headers and then nothing;
a legitimate request must still be answered at once. Bounds are per-request client timeouts,
far below the server's own idle timeout (20 s), so the old behaviour (wait for a slot to time
out) fails them; the policy itself is tested on an injected clock."""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from types import SimpleNamespace

import pytest
import requests

from newsletter.config import load_settings
from newsletter.errors import ConfigError
from newsletter.web.logsummary import Summarise
from newsletter.web.server import ServerLimits, overdue, victim

from tests.helpers import is_closed

SECRET = "slots-test-secret-0123456789"
PARTIAL = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a"


@contextmanager
def serving(tmp_path, log: list[str] | None = None, **settings: str):
    (tmp_path / "newsletter.toml").write_text('name = "Slots"\nfrom_email = "news@example.org"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSLETTER_", "SMTP_"))}
    # The slot policy of one process (several share the caps: tests/test_web_prefork.py).
    env.update({"NEWSLETTER_SECRET_KEY": SECRET, "PYTHONUNBUFFERED": "1", "NEWSLETTER_SERVE_PROCESSES": "1", **settings})
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "--root", str(tmp_path), "serve", "--port", "0"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, line + (proc.stderr.read(2000) if proc.poll() is not None else "")
        yield int(match.group(1)), proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log is not None:
            log.extend(proc.stderr.read().splitlines())
        proc.stdout.close()
        proc.stderr.close()


def slow_clients(stack: ExitStack, port: int, n: int) -> list[socket.socket]:
    """``n`` connections, each with part of a request's headers sent, then silence."""
    out = []
    for _ in range(n):
        sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
        sock.sendall(PARTIAL)
        out.append(sock)
        time.sleep(0.002)  # in order of arrival, as real clients come
    return out


def timed_health(port: int, timeout: float) -> float:
    with requests.Session() as s:
        s.trust_env = False
        started = time.perf_counter()
        r = s.get(f"http://127.0.0.1:{port}/healthz", timeout=timeout)
        assert r.status_code == 200 and r.text == "ok\n"
        return time.perf_counter() - started


def test_150_slow_clients_do_not_hold_up_a_health_check_with_default_slots(tmp_path):
    log: list[str] = []
    with serving(tmp_path, log) as (port, _), ExitStack() as stack:
        slow_clients(stack, port, 150)
        # The server's timeouts are 10 s (headers) and 20 s: waiting for a slot would take that long.
        worst = max(timed_health(port, timeout=3) for _ in range(5))
    print(f"healthz with 150 slow clients: worst of 5 took {worst:.3f} s")
    # 130 evictions (from the per-address cap, 20): one line at once, one summary when stopped
    slots = [line for line in log if "connection slots full" in line]
    assert len(slots) == 2 and "more like 'connection slots full" in slots[1], log
    print("\n".join(slots))


def test_twenty_slots_thirty_slow_clients_every_health_check_is_answered(tmp_path):
    with serving(tmp_path, NEWSLETTER_SERVE_CONNECTIONS="20") as (port, _), ExitStack() as stack:
        slow_clients(stack, port, 30)
        for _ in range(10):
            timed_health(port, timeout=3)
            slow_clients(stack, port, 3)  # and they keep coming


def test_one_address_holds_at_most_per_client_connections(tmp_path):
    with serving(tmp_path, NEWSLETTER_SERVE_PER_CLIENT="5") as (port, _), ExitStack() as stack:
        socks = slow_clients(stack, port, 8)
        timed_health(port, timeout=3)
        time.sleep(0.5)  # let the closes arrive; the header deadline (10 s) is far off
        closed = [is_closed(sock) for sock in socks]
        # 8 slow + the health check's connection against a cap of 5: the 4 oldest slow ones went
        assert closed == [True] * 4 + [False] * 4




def test_a_trickle_is_cut_off_at_the_header_deadline_not_the_idle_timeout(tmp_path):
    with serving(tmp_path, NEWSLETTER_SERVE_HEADER_TIMEOUT="2", NEWSLETTER_SERVE_TIMEOUT="60") as (port, _):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
            for _ in range(12):  # a byte every half second keeps an idle timer alive, not this one
                time.sleep(0.5)
                try:
                    sock.sendall(b"X")
                except OSError:
                    break
            sock.settimeout(10)
            try:
                assert sock.recv(100) == b""
            except ConnectionResetError:
                pass


# ---- the policy, on an injected clock -------------------------------------------------------
def channel(since: float, *, busy: bool = False, headers: bool = True) -> SimpleNamespace:
    return SimpleNamespace(busy=lambda: busy, waiting_since=lambda: since, in_headers=lambda: headers)


def test_headers_have_their_own_deadline_and_a_body_the_request_timeout():
    limits = ServerLimits(timeout=20, header_timeout=5)
    assert not overdue(channel(100.0), 105.0, limits)
    assert overdue(channel(100.0), 105.1, limits)
    assert not overdue(channel(100.0, headers=False), 119.9, limits)
    assert overdue(channel(100.0, headers=False), 120.1, limits)
    assert not overdue(channel(0.0, busy=True), 10_000.0, limits)  # being answered: never cut off


def test_the_victim_is_the_longest_waiting_connection_that_is_not_busy():
    old_busy, old, new = channel(1.0, busy=True), channel(2.0), channel(3.0)
    assert victim([new, old_busy, old]) is old
    assert victim([old_busy]) is None
    assert victim([]) is None


def test_repeated_warnings_are_summarised_once_per_interval(caplog):
    """Issue 21: a flood of clients makes one line per interval, with the count and the peak."""
    now = [0.0]
    summary = Summarise(interval=60, clock=lambda: now[0])
    queue, slots = logging.getLogger("waitress.queue"), logging.getLogger("newsletter.web.server")
    for logger in (queue, slots):
        logger.addFilter(summary)
    try:
        with caplog.at_level("INFO"):
            for i in range(500):
                queue.warning("Task queue depth is %d", 1 + i % 40)
                slots.warning("connection slots full: closed the longest-waiting unfinished connection, from %s",
                              f"192.0.2.{i % 7}")
                now[0] += 0.1  # 50 s in all: one interval
            logging.getLogger("newsletter.web").error("error serving %s", "GET /x/...")  # errors always pass
            now[0] += 20
            queue.warning("Task queue depth is %d", 3)  # the next interval: its first record passes
            summary.flush()
    finally:
        for logger in (queue, slots):
            logger.removeFilter(summary)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:2] == ["Task queue depth is 1",
                         "connection slots full: closed the longest-waiting unfinished connection, from 192.0.2.0"]
    assert lines[2] == "error serving GET /x/..."
    assert lines[3].startswith("499 more like 'Task queue depth is %d' in 70 s, peak 40 (last: Task queue depth is")
    assert lines[4].startswith("499 more like 'connection slots full")
    assert lines[5] == "Task queue depth is 3"
    assert len(lines) == 6


@pytest.mark.parametrize("name, value", [("NEWSLETTER_SERVE_HEADER_TIMEOUT", "0"),
                                         ("NEWSLETTER_SERVE_PER_CLIENT", "x"),
                                         ("NEWSLETTER_SERVE_CONNECTIONS", "1")])
def test_bad_slot_settings_are_config_errors(tmp_path, name, value):
    with pytest.raises(ConfigError):
        ServerLimits.from_settings(load_settings(tmp_path, environ={name: value}))


@pytest.mark.parametrize("proxies, peer, capped", [("0", "127.0.0.1", True), ("1", "127.0.0.1", False),
                                                   ("10.0.0.1", "10.0.0.1", False), ("10.0.0.1", "10.0.0.2", True),
                                                   ("192.168.0.0/16", "192.168.4.4", False)])
def test_a_trusted_proxy_is_not_capped_per_address(tmp_path, proxies, peer, capped):
    """Behind a proxy every client arrives from the proxy's address: capping it would refuse readers."""
    limits = ServerLimits.from_settings(load_settings(tmp_path, environ={"NEWSLETTER_TRUSTED_PROXIES": proxies}))
    assert limits.capped(peer) is capped


def test_header_deadline_defaults_to_no_more_than_the_request_timeout(tmp_path):
    limits = ServerLimits.from_settings(load_settings(tmp_path, environ={"NEWSLETTER_SERVE_TIMEOUT": "3"}))
    assert limits.header_timeout == 3 and limits.timeout == 3 and limits.per_client == 20


def test_accepted_connections_keep_waitress_socket_options():
    """The slot policy's own accept must still set TCP_NODELAY, or every keep-alive answer
    waits on Nagle and the client's delayed ACK (~40 ms a request; fails before the fix)."""
    from newsletter.web.server import create_server

    server = create_server(lambda environ, start: [], "127.0.0.1", 0, ServerLimits())
    try:
        client = socket.create_connection(("127.0.0.1", server.effective_port), timeout=5)
        with client:
            server.handle_accept()
            (channel,) = server.active_channels.values()
            assert channel.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            channel.handle_close()
    finally:
        server.close()
