"""Fixtures for the webhook tests: the serve app over real HTTP on 127.0.0.1, a real
SQLite file, keys generated here, and one "kit" per provider that builds and signs
requests exactly as that provider documents them (independently of the code under test).

The app is ``make_app``'s (its ``web_app`` is the routed core), served by
werkzeug's WSGI server in a thread; its webhook context gets a :class:`FakeClock` and a
fetcher that maps ``https://sns.<region>.amazonaws.com/<path>`` to a local plain-HTTP
server that serves the SNS certificate and records every fetch.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import urlsplit

import pytest
import requests
from werkzeug.serving import make_server

from newsletter.clock import FakeClock
from newsletter.config import load_settings
from newsletter.db import connect
from newsletter.ledger import ensure_schema as ensure_ledger
from newsletter.store import SubscriberStore
from newsletter.web import make_app
from tests.webhooks.kits import NOW, READERS, Keys

#: Every test request goes to loopback directly: proxies from the environment are ignored.
HTTP = requests.Session()
HTTP.trust_env = False

@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys()


# ---- a local plain-HTTP server standing in for sns.<region>.amazonaws.com ------------------
class SnsStandIn:
    """Serves the certificate at any ``*.pem`` path and answers confirmations; records paths."""

    def __init__(self, pem: bytes):
        self.pem = pem
        self.requests: list[str] = []
        self.session = requests.Session()  # its own: the fetcher runs in the app's threads
        self.session.trust_env = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.requests.append(self.path)
                body = outer.pem if self.path.split("?")[0].endswith(".pem") else b"<ConfirmSubscriptionResponse/>"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def fetch(self, url: str) -> bytes:
        """The injected fetcher: only the path and query of the SNS URL travel, to loopback."""
        parts = urlsplit(url)
        local = f"http://127.0.0.1:{self.server.server_address[1]}{parts.path}" + (f"?{parts.query}" if parts.query else "")
        response = self.session.get(local, timeout=5)
        response.raise_for_status()
        return response.content

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def sns_server(keys):
    stand_in = SnsStandIn(keys.sns_cert_pem())
    yield stand_in
    stand_in.close()


@pytest.fixture
def sns(sns_server, keys):
    """The session's stand-in, with a fresh request log and the real certificate."""
    sns_server.requests.clear()
    sns_server.pem = keys.sns_cert_pem()
    return sns_server


# ---- the store, and the app over real HTTP ---------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    """The readers in a SQLite file, or in a fresh PostgreSQL database (its URL)."""
    path = tmp_path / "n.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    store = SubscriberStore.open(path)
    ensure_ledger(store.conn)
    for email in READERS:
        store.add(email)
    store.close()
    return path


@dataclass
class Site:
    url: str
    db: Any
    clock: FakeClock

    def post(self, provider: str, body: bytes, headers: dict[str, str] | None = None, query: str = "",
             **kwargs: Any) -> requests.Response:
        url = f"{self.url}/webhooks/{provider}" + (f"?{query}" if query else "")
        return HTTP.post(url, data=body, headers=headers or {}, timeout=10, **kwargs)

    def status(self, email: str) -> str:
        with closing(connect(self.db)) as conn:
            return conn.execute("SELECT status FROM subscribers WHERE email=?", (email,)).fetchone()[0]

    def statuses(self) -> dict[str, str]:
        with closing(connect(self.db)) as conn:
            return dict(conn.execute("SELECT email, status FROM subscribers"))

    def event_rows(self) -> int:
        with closing(connect(self.db)) as conn:
            try:
                return conn.execute("SELECT COUNT(*) FROM feedback_events").fetchone()[0]
            except sqlite3.OperationalError:
                return 0


def serve(app: Callable) -> tuple[str, Callable[[], None]]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return f"http://127.0.0.1:{server.server_port}", stop


@pytest.fixture
def make_site(tmp_path, db, keys, sns):
    stops = []

    def make(env: dict[str, str] | None = None, db_path: Path | None = None) -> Site:
        settings = load_settings(tmp_path, environ=keys.env() if env is None else env)
        clock = FakeClock(start=NOW)
        app = make_app(settings, store_path=db_path or db, clock=clock)
        core = app.web_app  # the WebApp inside the middleware
        core.webhooks = dataclasses.replace(core.webhooks, clock=clock, fetch=sns.fetch)
        url, stop = serve(app)
        stops.append(stop)
        return Site(url, db_path or db, clock)

    yield make
    for stop in stops:
        stop()


@pytest.fixture
def site(make_site) -> Site:
    return make_site()


