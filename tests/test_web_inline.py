"""`serve` answering on its loop's own thread (NEWSLETTER_SERVE_THREADS=0, the default on SQLite):
requests are answered in order on that thread, a failing request does not stop the loop, a large
answer to a slow reader does not wedge it, and a slow client holds up nobody."""

from __future__ import annotations

import socket
import threading
import time
from typing import Callable, Iterator

import pytest

from newsletter.config import load_settings
from newsletter.web.server import PG_THREADS, ServerLimits, create_server


@pytest.mark.parametrize("environ, threads", [
    ({}, 0),
    ({"NEWSLETTER_DB": "postgresql://news@127.0.0.1:5432/news"}, PG_THREADS),
    ({"NEWSLETTER_SERVE_THREADS": "3"}, 3),
    ({"NEWSLETTER_DB": "postgresql://news@127.0.0.1:5432/news", "NEWSLETTER_SERVE_THREADS": "0"}, 0),
])
def test_threads_default_to_none_on_sqlite_and_a_pool_on_postgresql(tmp_path, environ, threads):
    assert ServerLimits.from_settings(load_settings(tmp_path, environ=environ)).threads == threads


def test_a_negative_thread_count_is_one_line(tmp_path):
    from newsletter.errors import ConfigError

    with pytest.raises(ConfigError, match="NEWSLETTER_SERVE_THREADS"):
        ServerLimits.from_settings(load_settings(tmp_path, environ={"NEWSLETTER_SERVE_THREADS": "-1"}))


def _running(app: Callable, limits: ServerLimits = ServerLimits()) -> Iterator[tuple[int, int]]:
    server = create_server(app, "127.0.0.1", 0, limits)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield int(server.effective_port), thread.ident
    finally:
        server.close()
        thread.join(timeout=10)


@pytest.fixture
def served(request):
    """A server for ``request.param``'s app, on the loop's thread; yields (port, the loop's thread id, calls)."""
    calls: list[tuple[str, int]] = []

    def app(environ, start_response):
        calls.append((environ["PATH_INFO"], threading.get_ident()))
        if environ["PATH_INFO"] == "/fail":
            raise RuntimeError("a handler's bug")
        if environ["PATH_INFO"] == "/big":
            body = b"x" * (4 * 1024 * 1024)
        else:
            body = environ["PATH_INFO"].encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    gen = _running(app)
    port, ident = next(gen)
    yield port, ident, calls
    next(gen, None)


def _get(sock: socket.socket, path: str) -> None:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


def _answers(sock: socket.socket, count: int, deadline: float = 10.0) -> list[tuple[int, bytes]]:
    """Read ``count`` answers (status and body) off a keep-alive connection."""
    buf, out, end = b"", [], time.monotonic() + deadline
    while len(out) < count and time.monotonic() < end:
        while b"\r\n\r\n" in buf:
            head, rest = buf.split(b"\r\n\r\n", 1)
            length = int(next(l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")))
            if len(rest) < length:
                break
            out.append((int(head.split(b" ")[1]), rest[:length]))
            buf = rest[length:]
            if len(out) == count:
                return out
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return out


def test_pipelined_requests_are_answered_in_order_on_the_loops_thread(served):
    port, loop_thread, calls = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for i in range(20):
            _get(sock, f"/r{i}")
        answers = _answers(sock, 20)
    assert [body for _, body in answers] == [f"/r{i}".encode() for i in range(20)]
    assert {ident for _, ident in calls} == {loop_thread}


def test_a_failing_request_is_a_500_and_the_loop_goes_on(served):
    port, _, calls = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        _get(sock, "/fail")
        assert _answers(sock, 1)[0][0] == 500
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        _get(sock, "/after")
        assert _answers(sock, 1) == [(200, b"/after")]


def test_a_slow_reader_of_a_large_answer_wedges_nobody(monkeypatch):
    """16 MB, in chunks, to a client that reads nothing for a while: waitress makes a writer wait
    for its output to drain below a watermark, and on the loop's thread nobody else would drain
    it. Another client is answered meanwhile, then the slow one gets it whole."""
    from waitress.adjustments import Adjustments

    monkeypatch.setattr(Adjustments, "outbuf_high_watermark", 64 * 1024)
    chunk, chunks = b"x" * (512 * 1024), 32

    def app(environ, start_response):
        size = len(chunk) * chunks if environ["PATH_INFO"] == "/big" else 2
        start_response("200 OK", [("Content-Length", str(size))])
        return [chunk] * chunks if environ["PATH_INFO"] == "/big" else [b"ok"]

    gen = _running(app)
    port, _ = next(gen)
    try:
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        slow.settimeout(10)
        slow.connect(("127.0.0.1", port))
        with slow:
            _get(slow, "/big")
            time.sleep(0.3)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as other:
                _get(other, "/quick")
                assert _answers(other, 1, deadline=5) == [(200, b"ok")]
            received, end = 0, time.monotonic() + 30
            while received < len(chunk) * chunks and time.monotonic() < end:
                data = slow.recv(1 << 20)
                if not data:
                    break
                received += len(data)
        head = 80  # the status line and headers, roughly
        assert len(chunk) * chunks <= received <= len(chunk) * chunks + head * 2
    finally:
        next(gen, None)


def test_a_client_trickling_its_headers_holds_up_nobody(served):
    port, _, _ = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as trickle:
        trickle.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        for i in range(5):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                _get(sock, f"/n{i}")
                assert _answers(sock, 1, deadline=5) == [(200, f"/n{i}".encode())]


def test_answering_on_the_loops_thread_pulls_no_trigger(monkeypatch):
    """Each answer on a worker thread wakes the loop through a pipe; on the loop's own thread
    nothing needs waking (the hand-over is what made 32 clients slower than 1)."""
    from waitress import trigger

    pulls: list[int] = []
    real = trigger.trigger.pull_trigger
    monkeypatch.setattr(trigger.trigger, "pull_trigger", lambda self, *a: (pulls.append(1), real(self, *a))[1])

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    for threads, threaded in ((0, False), (2, True)):
        pulls.clear()
        gen = _running(app, ServerLimits(threads=threads))
        port, _ = next(gen)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            for _ in range(50):
                _get(sock, "/")
                assert _answers(sock, 1) == [(200, b"ok")]
        served_pulls = len(pulls)
        next(gen, None)
        # A worker thread wakes the loop about once per answer (not when the loop is awake already).
        assert (served_pulls >= 25 if threaded else served_pulls == 0), (threads, served_pulls)
