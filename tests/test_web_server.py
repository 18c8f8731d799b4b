"""`newsletter serve` as a real process on 127.0.0.1 (waitress), real SQLite and then PostgreSQL
(the whole module once per backend), aiosmtpd for the mail.

Attacks from issue 9, each as a client would make them: hostile tokens, slow clients,
a slow body next to a one-click unsubscribe, and signup end to end including limits.
Bounds are per-request client timeouts and loop counts, never wall-clock assertions.
"""

from __future__ import annotations

import os
import random
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from newsletter.store import SubscriberStore
from newsletter.tokens import make_token
from tests.smtp_server import SMTPTestServer

REPO = Path(__file__).resolve().parent.parent
SECRET = "server-test-secret-0123456789"
BASE = "https://news.example.org"
TIMEOUT = 10  # seconds, per request: the bound every answer must come within


@pytest.fixture(scope="module")
def smtp(database):
    """One mail server per backend's run: each counts only its own mail."""
    with SMTPTestServer() as server:
        yield server


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pub")
    (root / "newsletter.toml").write_text(
        'name = "The Server Letter"\nfrom_email = "news@example.org"\n'
        f'base_url = "{BASE}"\npostal_address = "1 Example Road, Example City"\n')
    (root / "issues").mkdir()
    shutil.copy(REPO / "tests" / "fixtures" / "007-clean.md", root / "issues" / "007-clean.md")
    return root


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(request, root):
    """The module's database: the publication's SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield root / "newsletter.db"
        return
    import secrets

    import psycopg

    cluster = request.getfixturevalue("pg_cluster")
    name = "ws_" + secrets.token_hex(6)
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield cluster.url(name)
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def env(smtp, root, database):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSLETTER_", "SMTP_"))}
    env.update(smtp.env())
    env["NEWSLETTER_DB"] = str(database)
    env.update({"NEWSLETTER_SECRET_KEY": SECRET, "NEWSLETTER_SIGNUP_MIN_SECONDS": "0",
                "NEWSLETTER_SERVE_TIMEOUT": "2", "NEWSLETTER_SERVE_THREADS": "4",
                "NEWSLETTER_TRUSTED_PROXIES": "1", "NEWSLETTER_SIGNUP_PER_IP_HOURLY": "10",
                "NEWSLETTER_SIGNUP_HOURLY_CAP": "1000", "PYTHONUNBUFFERED": "1"})
    return env


@pytest.fixture(scope="module")
def server(root, env):
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "--root", str(root), "serve", "--port", "0"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, line + proc.stderr.read(2000) if proc.poll() is not None else line
        yield f"http://127.0.0.1:{match.group(1)}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            stream.close()


@pytest.fixture
def http():
    s = requests.Session()
    s.trust_env = False  # never route loopback traffic through a configured proxy
    yield s
    s.close()


@pytest.fixture(scope="module")
def store(database, server):
    s = SubscriberStore.open(database)
    yield s
    s.close()


def _reader(store, email):
    sub = store.add(email)
    return sub, make_token(SECRET, sub.id, sub.email)


# ---- tokens ---------------------------------------------------------------------------------
def test_negative_id_regression(server, store, http):
    """`GET /unsubscribe/-1.x` once hung the server inside its lock; now it is a 404 and the
    next reader's token still works."""
    _, good = _reader(store, "after.negative@example.org")
    for bad in ("-1.x", "-1.AAAAAAAAAAAAAAAAAAAAAA", "-zzzzzzzzzzzz.x"):
        assert http.get(f"{server}/unsubscribe/{bad}", timeout=TIMEOUT).status_code == 404
        assert http.post(f"{server}/unsubscribe/{bad}", timeout=TIMEOUT).status_code == 404
    assert http.get(f"{server}/unsubscribe/{good}", timeout=TIMEOUT).status_code == 200


def _hostile_tokens(n: int) -> list[str]:
    rng = random.Random(20260901)
    pieces = ["-1", "-", "+", "0", "9" * 40, "z" * 13, ".", "..", "=", "==", "%00", "\u00e9", "\u4e2d", "\u2028",
              "A" * 22, "A" * 32, "A" * 31, "_", "~", ",", ";", " ", "\t", "\uff11", "\U0001f600", "/"]
    out = ["-1.x", "0.x", "1.", ".x", "A" * 33, "A" * 31 + "=", "A" * 5000, "1." + "A" * 22 + "=="]
    while len(out) < n:
        out.append("".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))))
    return out


def test_fuzzed_tokens_all_fail_fast_and_the_server_keeps_serving(server, store, http):
    sub, good = _reader(store, "fuzz.reader@example.org")
    codes: dict[int, int] = {}
    for i, token in enumerate(_hostile_tokens(2000)):
        url = f"{server}/unsubscribe/{quote(token, safe='')}"
        r = http.post(url, data="List-Unsubscribe=One-Click", timeout=TIMEOUT) if i % 4 == 0 else \
            http.get(url, timeout=TIMEOUT)
        codes[r.status_code] = codes.get(r.status_code, 0) + 1
    assert set(codes) <= {400, 404, 414}, codes
    assert codes.get(404, 0) > 1500
    assert store.get(sub.id).status == "active"
    r = http.get(f"{server}/unsubscribe/{good}", timeout=TIMEOUT)
    assert r.status_code == 200 and "Unsubscribe</button>" in r.text


# ---- slow clients ---------------------------------------------------------------------------
def _trickle(server: str, payload: bytes, *, step: float = 0.5, max_steps: int = 60) -> tuple[int, bytes]:
    """Send ``payload`` one byte per ``step``; returns (bytes sent before the server hung up, reply)."""
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        for sent in range(min(len(payload), max_steps)):
            try:
                sock.sendall(payload[sent:sent + 1])
            except OSError:
                return sent, b""
            ready, _, _ = select.select([sock], [], [], step)
            if ready:
                try:
                    reply = sock.recv(4096)
                except OSError:
                    return sent, b""
                return sent, reply
        return len(payload), b""


def _served_meanwhile(server: str, stop: threading.Event, results: list[int]) -> None:
    with requests.Session() as s:
        s.trust_env = False
        while not stop.is_set() and len(results) < 200:
            results.append(s.get(f"{server}/healthz", timeout=TIMEOUT).status_code)
            stop.wait(0.1)


def test_a_client_trickling_headers_is_cut_off_and_others_are_served(server):
    payload = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 60 + b"\r\n\r\n"
    stop, served = threading.Event(), []
    other = threading.Thread(target=_served_meanwhile, args=(server, stop, served))
    other.start()
    try:
        sent, reply = _trickle(server, payload)
    finally:
        stop.set()
        other.join(timeout=TIMEOUT)
    assert sent < len(payload), "the server waited for the whole trickle"
    assert not reply.startswith(b"HTTP/1.1 200")
    assert served and set(served) == {200}


def test_a_slow_body_does_not_hold_up_a_one_click_unsubscribe(server, store, http):
    victim, victim_token = _reader(store, "slow.body.target@example.org")
    reader, token = _reader(store, "one.click@example.org")
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as slow:
        slow.sendall(f"POST /unsubscribe/{victim_token} HTTP/1.1\r\nHost: x\r\n"
                     "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 30\r\n\r\n"
                     "List-Unsub".encode())
        r = http.post(f"{server}/unsubscribe/{token}", data="List-Unsubscribe=One-Click", timeout=TIMEOUT,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 200 and "You are unsubscribed" in r.text
        assert store.get(reader.id).status == "unsubscribed"
        # The body never completes: the server hangs up (NEWSLETTER_SERVE_TIMEOUT=2), bounded polls.
        closed = False
        for _ in range(40):
            if select.select([slow], [], [], 0.5)[0]:
                try:
                    closed = slow.recv(4096) == b""
                except OSError:
                    closed = True
                break
        assert closed
        assert store.get(victim.id).status == "active"  # the incomplete request changed nothing


def test_oversized_and_malformed_requests(server, store, http):
    _, token = _reader(store, "big.body@example.org")
    assert http.post(f"{server}/unsubscribe/{token}", data="x=" + "y" * 50_000, timeout=TIMEOUT).status_code == 413
    assert http.post(f"{server}/subscribe", data=b"\xff" * 2_000_000, timeout=TIMEOUT).status_code == 413
    assert http.put(f"{server}/unsubscribe/{token}", timeout=TIMEOUT).status_code == 405
    r = http.get(f"{server}/healthz", headers={"X-Big": "a" * 40_000}, timeout=TIMEOUT)
    assert r.status_code == 431 or r.status_code == 400
    r = http.get(f"{server}/subscribe", timeout=TIMEOUT)
    assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["Strict-Transport-Security"].startswith("max-age=")


@pytest.mark.parametrize("path", ["//./issues/x", "//issues/x", "//evil.example/"])
def test_odd_paths_over_the_wire(server, path):
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    status = int(reply.split(b" ", 2)[1])
    assert status < 500 and b"\r\nLocation: //" not in reply


# ---- signup end to end ------------------------------------------------------------------------
def _wait_for_mail(smtp, address: str, *, polls: int = 200) -> str:
    """The (first) message to ``address``, polling aiosmtpd a bounded number of times."""
    for _ in range(polls):
        for m in list(smtp.messages):
            if address in m.rcpt_tos:
                return m.parse().as_string()
        threading.Event().wait(0.05)
    raise AssertionError(f"no mail to {address}")


def _mails_to(smtp, address: str) -> int:
    return sum(address in m.rcpt_tos for m in list(smtp.messages))


def _signup(http, server, email, *, ip="192.0.2.10", name=""):
    page = http.get(f"{server}/subscribe", timeout=TIMEOUT).text
    stamp = re.search(r'name="form" value="([^"]+)"', page).group(1)
    return http.post(f"{server}/subscribe", data={"email": email, "name": name, "website": "", "form": stamp},
                     headers={"X-Forwarded-For": ip}, timeout=TIMEOUT)


def _settle(http, server, smtp, tag: str) -> None:
    """Mail goes out from one queue in order: once a fresh signup's mail arrived, all earlier ones have."""
    sentinel = f"sentinel.{tag}@example.org"
    assert _signup(http, server, sentinel, ip=f"198.51.100.{random.randint(1, 250)}").status_code == 200
    _wait_for_mail(smtp, sentinel)


def test_signup_confirm_then_a_send_includes_the_reader(server, store, smtp, http, root, env):
    r = _signup(http, server, "joiner@example.org", name="Jo Iner")
    assert r.status_code == 200 and "Check your inbox" in r.text
    mail = _wait_for_mail(smtp, "joiner@example.org")
    assert "Subject: Confirm your subscription to The Server Letter" in mail
    path = re.search(r"https://news\.example\.org(/confirm/[A-Za-z0-9_-]{32})", mail).group(1)
    assert store.get_by_email("joiner@example.org").status == "pending"
    page = http.get(f"{server}{path}", timeout=TIMEOUT)
    assert page.status_code == 200 and "Confirm subscription</button>" in page.text
    assert store.get_by_email("joiner@example.org").status == "pending"  # GET changed nothing
    r = http.post(f"{server}{path}", data={"confirm": "yes"}, headers={"X-Forwarded-For": "203.0.113.99"},
                  timeout=TIMEOUT)
    assert r.status_code == 200 and "You are subscribed" in r.text
    assert store.get_by_email("joiner@example.org").status == "active"
    consent = store.conn.execute("SELECT consent_ip, consent_confirmed_at FROM subscribers WHERE email=?",
                                 ("joiner@example.org",)).fetchone()
    assert consent[0] == "203.0.113.99" and consent[1]  # the IP through the one trusted proxy
    before = _mails_to(smtp, "joiner@example.org")
    result = subprocess.run([sys.executable, "-m", "newsletter", "--root", str(root), "send", "007", "--yes",
                             "--skip-checks"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert _mails_to(smtp, "joiner@example.org") == before + 1


def test_twenty_signups_for_one_address_send_one_email(server, smtp, http):
    for i in range(20):
        assert _signup(http, server, "repeat@example.org", ip=f"192.0.2.{50 + i}").status_code == 200
    _settle(http, server, smtp, "repeat")
    assert _mails_to(smtp, "repeat@example.org") == 1


def test_two_hundred_signups_from_one_ip_are_capped(server, smtp, http):
    pages = {_signup(http, server, f"flood{i}@example.org", ip="192.0.2.200").text for i in range(200)}
    assert len(pages) == 1 and "Check your inbox" in pages.pop()  # the same page every time
    _settle(http, server, smtp, "flood")
    assert sum(_mails_to(smtp, f"flood{i}@example.org") for i in range(200)) == 10


def test_suppressed_address_gets_the_same_page_and_no_email(server, store, smtp, http):
    sub = store.add("gone@example.org")
    store.mark_bounced(sub.id, "550 no such user")
    new = _signup(http, server, "brand.new@example.org", ip="192.0.2.31")
    gone = _signup(http, server, "gone@example.org", ip="192.0.2.32")
    strip = lambda t: re.sub(r'value="[^"]*"', "", t)  # noqa: E731
    assert gone.status_code == new.status_code == 200 and strip(gone.text) == strip(new.text)
    _settle(http, server, smtp, "gone")
    assert _mails_to(smtp, "gone@example.org") == 0 and store.get(sub.id).status == "bounced"


def test_header_injection_in_name_never_reaches_a_header(server, store, smtp, http):
    r = _signup(http, server, "inject@example.org", name="Eve\r\nBcc: victim@example.org", ip="192.0.2.40")
    assert r.status_code == 400 and "Traceback" not in r.text
    assert store.get_by_email("inject@example.org") is None
    _settle(http, server, smtp, "inject")
    assert _mails_to(smtp, "victim@example.org") == 0
