"""`serve` against hostile clients and awkward lifecycle events, in the modes that answer on the
loop's own thread (newsletter.web.inline) and run several processes (newsletter.web.prefork):
what a client does to its own connection must not cost the server memory, disk or slots."""

from __future__ import annotations

import socket
import threading
import time
from typing import Callable, Iterator

import pytest

from newsletter.web.server import ServerLimits, create_server

from tests.helpers import wait_until

REQUEST = b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n"

#: Closing waitress's threaded server from the test's thread can race its loop's select() on a
#: socket just closed (EBADF in that thread at teardown): the test's own harness, not the server.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


def _running(app: Callable, limits: ServerLimits) -> Iterator[tuple[int, object]]:
    server = create_server(app, "127.0.0.1", 0, limits)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield int(server.effective_port), server
    finally:
        server.close()
        thread.join(timeout=10)


def _sized_app(big: int) -> Callable:
    """/big answers ``big`` bytes, anything else 2."""
    def app(environ, start_response):
        body = b"x" * big if environ["PATH_INFO"] == "/big" else b"ok"
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    return app


def _slow_reader(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def _buffered(server) -> int:
    return sum(c.total_outbufs_len for c in list(server.active_channels.values()))




def _read_all(sock: socket.socket, size: int, deadline: float = 30.0) -> int:
    received, end = 0, time.monotonic() + deadline
    while received < size and time.monotonic() < end:
        data = sock.recv(1 << 20)
        if not data:
            break
        received += len(data)
    return received


@pytest.mark.parametrize("threads", [0, 2])
def test_pipelined_requests_to_a_client_that_reads_nothing_buffer_a_bounded_amount(monkeypatch, threads):
    """100 pipelined GETs of a 256 KB answer fit in one 8 KB read. Waitress's worker waits for
    the client to read each answer down to the high watermark before the next; on the loop's
    thread nobody waited, and all 25 MB went to the server's memory and disk at once. Once the
    client reads, it still gets every answer."""
    from waitress.adjustments import Adjustments

    watermark, big, count = 64 * 1024, 256 * 1024, 100
    monkeypatch.setattr(Adjustments, "outbuf_high_watermark", watermark)
    gen = _running(_sized_app(big), ServerLimits(threads=threads))
    port, server = next(gen)
    try:
        with _slow_reader(port) as sock:
            sock.sendall(REQUEST * count)
            assert wait_until(lambda: _buffered(server) > watermark, limit=10)
            time.sleep(0.5)  # what the server would go on to buffer, it buffers by now
            assert _buffered(server) <= watermark + 2 * big, _buffered(server)
            head = 512  # status line and headers, at most (each is about 125 bytes; reads stop past count * big)
            received = _read_all(sock, count * big)
            assert count * big <= received <= count * (big + head)
    finally:
        next(gen, None)


@pytest.mark.parametrize("threads", [0, 2])
def test_clients_that_stop_reading_their_answers_do_not_keep_the_slots(threads):
    """Three clients ask for 16 MB each and read none of it, against a cap of three connections.
    Pending output counted as "busy being answered" for ever, so each newcomer was refused, for
    as long as those clients stayed (waitress itself closes them after its channel timeout)."""
    gen = _running(_sized_app(16 * 1024 * 1024),
                   ServerLimits(threads=threads, connections=3, per_client=3, timeout=1, header_timeout=1))
    port, _ = next(gen)
    stuck = [_slow_reader(port) for _ in range(3)]
    try:
        for sock in stuck:
            sock.sendall(REQUEST)
        time.sleep(2.5)  # past the 1 s timeout, with none of the answers read
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 200 OK")
    finally:
        for sock in stuck:
            sock.close()
        next(gen, None)
