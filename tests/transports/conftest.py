"""Fixtures for the HTTP provider tests: a real local HTTP server and sample messages.

The server listens on 127.0.0.1 only, on a free port. Each test programs it
with a handler that asserts the request as the provider documents it and
returns the provider's documented reply as ``(status, body, headers)``; every
request is recorded. An
assertion that fails inside the server thread fails the test at teardown.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Callable

import pytest

from newsletter.config import Publication, Settings
from newsletter.message import OutgoingMessage, PreparedIssue, Recipient
from newsletter.render import RenderedEmail
from tests.provider_emulator import LoopbackHTTP


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    headers: Message
    body: bytes

    def json(self) -> Any:
        assert self.headers.get_content_type() == "application/json", self.headers["Content-Type"]
        return json.loads(self.body)

    def fields(self) -> list[tuple[str, str]]:
        """A multipart/form-data body's fields as (name, text) pairs, repeats kept, in order: what
        Mailgun's OpenAPI description declares (and the only form encoding these tests accept)."""
        return [(name, content.decode("utf-8")) for name, (_, content) in self.parts()]

    def form(self) -> dict[str, tuple[Message, bytes]]:
        """The parts of a multipart/form-data body by field name: (part headers, exact bytes)."""
        return dict(self.parts())

    def parts(self) -> list[tuple[str, tuple[Message, bytes]]]:
        assert self.headers.get_content_type() == "multipart/form-data", self.headers.get_content_type()
        boundary = self.headers.get_param("boundary").encode()
        parts: list[tuple[str, tuple[Message, bytes]]] = []
        chunks = self.body.split(b"--" + boundary)
        assert chunks[-1].strip() == b"--", "multipart body must end with the closing boundary"
        for chunk in chunks[1:-1]:
            head, _, content = chunk[2:].partition(b"\r\n\r\n")
            part = Message()
            for line in head.decode().split("\r\n"):
                name, _, value = line.partition(":")
                part[name.strip()] = value.strip()
            assert content.endswith(b"\r\n")
            parts.append((part.get_param("name", header="content-disposition"), (part, content[:-2])))
        return parts


def encode_body(body: Any) -> tuple[bytes, str]:
    """A reply body as bytes and its Content-Type: JSON for dicts and lists, else text."""
    if body is None:
        return b"", "text/plain"
    if isinstance(body, (bytes, str)):
        return (body.encode() if isinstance(body, str) else body), "text/plain; charset=utf-8"
    return json.dumps(body).encode(), "application/json"


#: A handler gets the :class:`Recorded` request and returns ``(status, body, headers)``.
Handler = Callable[[Recorded], tuple[int, Any, dict[str, str]]]


class FakeAPI(LoopbackHTTP):
    """A programmable provider API on 127.0.0.1."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.errors: list[BaseException] = []
        self.handler: Handler = lambda req: (500, {"message": "no handler programmed"}, {})
        self._lock = threading.Lock()
        api = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                req = Recorded(self.command, self.path, self.headers, body)
                with api._lock:
                    api.requests.append(req)
                try:
                    status, body, extra = api.handler(req)
                except BaseException as exc:  # surfaced at teardown
                    api.errors.append(exc)
                    status, body, extra = 599, {"message": f"test handler failed: {exc!r}"}, {}
                raw, content_type = encode_body(body)
                self.send_response(status)
                headers = {"Content-Type": content_type, **extra}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(raw)))
                try:
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the timeout tests do that on purpose)

            do_GET = do_PUT = do_DELETE = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(RequestHandler)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy from the environment must never see the loopback test traffic.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def fake_api():
    api = FakeAPI().start()
    try:
        yield api
    finally:
        api.stop()
    if api.errors:
        raise api.errors[0]


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL where nothing listens: connections are refused at once."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


PUBLICATION = Publication(name="Test Weekly", from_email="news@example.org", from_name="Test Weekly",
                          reply_to="editor@example.org", base_url="https://news.example.org")
RENDERED = RenderedEmail(
    slug="2024-05-first", number=1, title="First issue", subject="First issue: hello",
    preheader="", lang="en", reply_to=None, content_hash="c0ffee" * 8,
    html='<p>Hello %%NAME%%</p><p><a href="%%UNSUBSCRIBE_URL%%">Unsubscribe</a></p>',
    text="Hello %%NAME%%\n\nUnsubscribe: %%UNSUBSCRIBE_URL%%\n",
)


def _make_messages(count: int, *, start: int = 0) -> list[OutgoingMessage]:
    prepared = PreparedIssue(rendered=RENDERED, publication=PUBLICATION, secret_key="k")
    return [prepared.personalise(Recipient(email=f"reader{i}@example.com", name=f"Reader {i}" if i % 2 else "",
                                           token=f"tok{i}"))
            for i in range(start, start + count)]


def _make_settings(env: dict[str, str]) -> Settings:
    return Settings(root=Path("/nonexistent"), publication=PUBLICATION, env=env)


@pytest.fixture
def make_messages() -> Callable[..., list[OutgoingMessage]]:
    """``make_messages(n)``: n personalised messages, odd ones with a display name."""
    return _make_messages


@pytest.fixture
def make_settings() -> Callable[[dict[str, str]], Settings]:
    """``make_settings(env)``: Settings whose environment is exactly ``env``."""
    return _make_settings
