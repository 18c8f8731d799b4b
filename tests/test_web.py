"""The unsubscribe app, through werkzeug's test client and once through a real loopback server."""

from __future__ import annotations

import threading

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.test import Client

from newsletter.config import load_settings
from newsletter.errors import ConfigError
from newsletter.store import SubscriberStore
from newsletter.tokens import make_token
from newsletter.web import NOT_FOUND_BODY, create_app, make_app, mask_email

SECRET = "test-secret-key-0123456789"


@pytest.fixture
def settings(tmp_path):
    (tmp_path / "newsletter.toml").write_text('name = "The Tsinghua Letter"\nlang = "zh-Hans"\n')
    return load_settings(tmp_path, environ={"NEWSLETTER_SECRET_KEY": SECRET})


@pytest.fixture(params=["sqlite", "postgresql-web-role"])
def db(request, tmp_path):
    """A SQLite file, or a PostgreSQL database reached as the least-privilege web role (migrated
    by its owner): the web app runs on both, and on PostgreSQL needs no more than that role."""
    if request.param != "sqlite" and request.node.get_closest_marker("sqlite_only"):
        pytest.skip("the unsubscribe spool and SQLite's lock exist on SQLite only")
    return tmp_path / "subs.db" if request.param == "sqlite" else request.getfixturevalue("pg_web_url")


@pytest.fixture
def store(db):
    s = SubscriberStore.open(db)
    yield s
    s.close()


@pytest.fixture
def sub(store):
    return store.add("sam.lee@tsinghua.edu.cn", "Sam")


@pytest.fixture
def client(settings, db, store):
    return Client(make_app(settings, store_path=db))


def token_for(sub, secret=SECRET):
    return make_token(secret, sub.id, sub.email)


def test_get_shows_confirmation_and_changes_nothing(client, store, sub):
    before = store.get(sub.id)
    r = client.get(f"/unsubscribe/{token_for(sub)}")
    assert r.status_code == 200
    page = r.get_data(as_text=True)
    assert r.mimetype == "text/html"
    assert '<html lang="zh-Hans">' in page
    assert "The Tsinghua Letter" in page
    assert "s***@tsinghua.edu.cn" in page
    assert "sam.lee" not in page  # never the full address
    assert '<form method="post"' in page and ">退订</button>" in page  # the publication's language (zh-Hans)
    english = client.get(f"/unsubscribe/{token_for(sub)}", headers={"Accept-Language": "en-GB,en;q=0.8"})
    assert ">Unsubscribe</button>" in english.get_data(as_text=True)  # the visitor's
    assert store.get(sub.id) == before  # GET unsubscribes nobody (status and changed_at unchanged)
    r = client.head(f"/unsubscribe/{token_for(sub)}")
    assert r.status_code == 200 and store.get(sub.id) == before


def test_post_form_button_unsubscribes(client, store, sub):
    r = client.post(f"/unsubscribe/{token_for(sub)}", data={"confirm": "yes"})
    assert r.status_code == 200
    page = r.get_data(as_text=True)
    assert "您已退订" in page and "sam.lee" not in page
    assert store.get(sub.id).status == "unsubscribed"
    assert store.status_reason(sub.id) == "unsubscribe page"


def test_rfc8058_one_click_body(client, store, sub):
    r = client.post(f"/unsubscribe/{token_for(sub)}", data="List-Unsubscribe=One-Click",
                    content_type="application/x-www-form-urlencoded")
    assert r.status_code == 200
    assert store.get(sub.id).status == "unsubscribed"
    assert store.status_reason(sub.id) == "one-click (RFC 8058)"


def test_post_twice_is_fine(client, store, sub):
    url = f"/unsubscribe/{token_for(sub)}"
    assert client.post(url, data="List-Unsubscribe=One-Click",
                       content_type="application/x-www-form-urlencoded").status_code == 200
    first = store.get(sub.id)
    r = client.post(url, data={"confirm": "yes"})
    assert r.status_code == 200 and "您已退订" in r.get_data(as_text=True)
    assert store.get(sub.id) == first
    # And the page now says so instead of offering the button again.
    page = client.get(url).get_data(as_text=True)
    assert "您已退订" in page and "<form" not in page


def test_bounced_reader_stays_bounced(client, store, sub):
    store.mark_bounced(sub.id, "550 user unknown")
    assert client.post(f"/unsubscribe/{token_for(sub)}", data={"confirm": "yes"}).status_code == 200
    assert store.get(sub.id).status == "bounced"


def _failures(sub, other):
    good = token_for(sub)
    flipped = good[:-1] + ("A" if good[-1] != "A" else "B")
    legacy = _legacy(sub)
    return {
        "forged with another key": token_for(sub, secret="attacker-key"),
        "altered signature": flipped,
        "altered id part": ("A" if good[0] != "A" else "B") + good[1:],
        "truncated": good[:-2],
        "other reader's id, this tag": _splice(token_for(other), good),
        "unknown id": make_token(SECRET, 99999, sub.email),
        "malformed": "not-a-token",
        "negative legacy id": "-1." + legacy.partition(".")[2],
        "legacy with another key": _legacy(sub, secret="attacker-key"),
        "too long": "1." + "A" * 500,
        "padding": good[:-1] + "=",
        "confirm token used to unsubscribe": make_token(SECRET, sub.id, sub.email, "confirm"),
    }


def _splice(id_from, tag_from):
    import base64

    raw = base64.urlsafe_b64decode(id_from)[:8] + base64.urlsafe_b64decode(tag_from)[8:]
    return base64.urlsafe_b64encode(raw).decode()


def _legacy(sub, secret=SECRET):
    from newsletter.tokens import _legacy_token

    return _legacy_token(secret, sub.id, sub.email)


@pytest.mark.parametrize("method", ["get", "post"])
def test_every_failure_is_the_same_404(client, store, sub, method):
    other = store.add("other@example.org")
    bodies = set()
    for what, token in _failures(sub, other).items():
        if token is None:
            continue
        r = getattr(client, method)(f"/unsubscribe/{token}", data="List-Unsubscribe=One-Click",
                                    content_type="application/x-www-form-urlencoded")
        assert r.status_code == 404, what
        bodies.add((r.get_data(), r.mimetype))
        assert r.headers["Cache-Control"] == "no-store"
    assert bodies == {(NOT_FOUND_BODY.encode(), "text/plain")}
    assert store.get(sub.id).status == "active" and store.get(other.id).status == "active"


def test_removed_reader_is_the_same_404(client, store, sub):
    token = token_for(sub)
    store.remove(sub.email)
    r = client.get(f"/unsubscribe/{token}")
    assert r.status_code == 404 and r.get_data() == NOT_FOUND_BODY.encode()


def test_token_for_changed_address_no_longer_works(client, store, sub):
    token = token_for(sub)
    store.conn.execute("UPDATE subscribers SET email='new@example.org' WHERE id=?", (sub.id,))
    assert client.get(f"/unsubscribe/{token}").status_code == 404


def test_security_headers(client, sub):
    r = client.get(f"/unsubscribe/{token_for(sub)}")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "same-origin"  # never cross-origin; a form's POST keeps its Origin
    assert r.headers["Cache-Control"] == "no-store"
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "form-action 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert len(r.headers.getlist("Content-Security-Policy")) == 1


def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.get_data() == b"ok\n"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "no-store" not in r.headers.get("Cache-Control", "")


def test_unknown_route_is_404(client):
    r = client.get("/admin")
    assert r.status_code == 404 and r.get_data() == NOT_FOUND_BODY.encode()


def test_oversized_post_is_refused(client, store, sub):
    r = client.post(f"/unsubscribe/{token_for(sub)}", data={"x": "y" * 100_000})
    assert r.status_code == 413
    assert store.get(sub.id).status == "active"


def test_serves_static_site(settings, db, store, sub, tmp_path):
    site = tmp_path / "site"
    (site / "2025" / "first-issue").mkdir(parents=True)
    (site / "index.html").write_text("<h1>Archive</h1>")
    (site / "2025" / "first-issue" / "index.html").write_text("<h1>First</h1>")
    (site / "feed.xml").write_text("<feed/>")
    (site / "unsubscribe").mkdir()
    (site / "unsubscribe" / "index.html").write_text("shadow")
    client = Client(make_app(settings, store_path=db, site_dir=site))
    r = client.get("/")
    assert r.status_code == 200 and r.get_data() == b"<h1>Archive</h1>"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "script-src 'none'" in r.headers["Content-Security-Policy"]
    assert client.get("/2025/first-issue/").get_data() == b"<h1>First</h1>"
    r = client.get("/2025/first-issue")
    assert r.status_code == 308 and r.headers["Location"].endswith("/2025/first-issue/")
    assert client.get("/feed.xml").get_data() == b"<feed/>"
    assert client.get("/missing.html").status_code == 404
    assert client.get("/../subs.db").status_code == 404
    # The app's own routes win over files in the archive.
    r = client.get(f"/unsubscribe/{token_for(sub)}")
    assert r.status_code == 200 and "s***@tsinghua.edu.cn" in r.get_data(as_text=True)
    assert client.get("/healthz").get_data() == b"ok\n"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
def test_archive_files_answer_only_get_and_head(settings, db, store, sub, tmp_path, method):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>Archive</h1>")
    (site / "feed.xml").write_text("<feed/>")
    client = Client(make_app(settings, store_path=db, site_dir=site))
    for path in ("/", "/feed.xml", "/missing.html"):
        r = client.open(path, method=method, data=b"x=1")
        assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD" and b"Archive" not in r.get_data()
    assert client.head("/feed.xml").status_code == 200
    assert client.open(f"/unsubscribe/{token_for(sub)}", method="PUT").status_code == 405  # the app's own 405


def test_missing_site_dir_is_a_config_error(settings, db, tmp_path):
    with pytest.raises(ConfigError):
        make_app(settings, store_path=db, site_dir=tmp_path / "nope")


def test_mask_email():
    assert mask_email("sam@tsinghua.edu.cn") == "s***@tsinghua.edu.cn"
    assert mask_email("s@example.org") == "s***@example.org"
    assert mask_email("nonsense") == "***"


def test_create_app_needs_a_secret_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for key in ("NEWSLETTER_SECRET_KEY", "NEWSLETTER_ROOT", "NEWSLETTER_DB", "NEWSLETTER_SITE_DIR"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ConfigError, match="NEWSLETTER_SECRET_KEY"):
        create_app()
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", SECRET)
    monkeypatch.setenv("NEWSLETTER_ROOT", str(tmp_path))
    monkeypatch.setenv("NEWSLETTER_DB", "prod.db")
    store = SubscriberStore.open(tmp_path / "prod.db")
    sub = store.add("a@example.org")
    client = Client(create_app())
    assert client.post(f"/unsubscribe/{token_for(sub)}", data={"confirm": "yes"}).status_code == 200
    assert store.get(sub.id).status == "unsubscribed"
    store.close()


def test_real_server_on_loopback(settings, db, store, sub):
    server = make_server("127.0.0.1", 0, make_app(settings, store_path=db), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    http = requests.Session()
    http.trust_env = False  # never route loopback traffic through a configured proxy
    try:
        assert http.get(f"{base}/healthz", timeout=5).text == "ok\n"
        url = f"{base}/unsubscribe/{token_for(sub)}"
        r = http.get(url, timeout=5)
        assert r.status_code == 200 and "s***@tsinghua.edu.cn" in r.text
        assert store.get(sub.id).status == "active"
        # What a mail client sends for RFC 8058 one-click.
        r = http.post(url, data="List-Unsubscribe=One-Click", timeout=5,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 200 and "您已退订" in r.text
        assert r.headers["Cache-Control"] == "no-store"
        assert store.get(sub.id).status == "unsubscribed"
        bad = http.post(f"{base}/unsubscribe/1.forged", timeout=5)
        assert bad.status_code == 404 and bad.text == NOT_FOUND_BODY
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ---- paths a WSGI server may hand over (gunicorn passes these through) -----------------------
@pytest.mark.parametrize("path", ["//./issues/x", "//issues/x", "//issues", "/./x", "/a/../subs.db",
                                  "/unsubscribe/%00", "/\\evil.example", "//evil.example/"])
def test_odd_paths_never_500_or_redirect_off_site(settings, db, store, tmp_path, path):
    from werkzeug.test import EnvironBuilder, run_wsgi_app

    site = tmp_path / "site"
    (site / "issues" / "x").mkdir(parents=True)
    (site / "issues" / "x" / "index.html").write_text("x")
    (site / "issues" / "index.html").write_text("i")
    app = make_app(settings, store_path=db, site_dir=site)
    for host in ("localhost", ".", "", "exa mple"):
        environ = EnvironBuilder(path="/", headers={"Host": host} if host else {}).get_environ()
        environ["PATH_INFO"] = path
        if host:
            environ["HTTP_HOST"] = environ["SERVER_NAME"] = host
        _body, status, headers = run_wsgi_app(app, environ, buffered=True)
        assert int(status.split()[0]) < 500, (path, host)
        location = headers.get("Location", "")
        assert not location.startswith("//") and "://" not in location, (path, location)


def test_double_slash_directory_redirect_is_site_relative(settings, db, store, tmp_path):
    site = tmp_path / "site"
    (site / "issues").mkdir(parents=True)
    (site / "issues" / "index.html").write_text("i")
    from werkzeug.test import EnvironBuilder, run_wsgi_app

    environ = EnvironBuilder(path="/").get_environ()
    environ["PATH_INFO"] = "//issues"
    _body, status, headers = run_wsgi_app(make_app(settings, store_path=db, site_dir=site), environ, buffered=True)
    assert status.startswith("308") and headers["Location"] == "/issues/"


# ---- a locked database never loses an unsubscribe -------------------------------------------
@pytest.mark.sqlite_only
def test_locked_database_is_retried_then_spooled_and_applied(settings, db, store, sub, monkeypatch):
    import sqlite3

    from newsletter.clock import FakeClock
    from newsletter.web import app as web_app_module
    from newsletter.unsubscribe_spool import spool_path

    monkeypatch.setattr(web_app_module, "DB_BUSY_MS", 50)
    clock = FakeClock()
    wsgi = make_app(settings, store_path=db, clock=clock)
    client = Client(wsgi)
    other = store.add("other@example.org")
    forged = make_token(SECRET, other.id, "someone.else@example.org")  # a real id, another address's tag
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        r = client.post(f"/unsubscribe/{token_for(sub)}", data="List-Unsubscribe=One-Click",
                        content_type="application/x-www-form-urlencoded")
        assert r.status_code == 200 and "您已退订" in r.get_data(as_text=True)
        assert len(clock.sleeps) == 3  # bounded retries inside the request, on the injected clock
        spool = spool_path(wsgi.web_app.store_path)
        assert spool.exists()
        kept = spool.read_bytes()
        # Something not shaped like a token is never spooled ...
        assert client.post("/unsubscribe/not-a-token").status_code == 404
        assert spool.read_bytes() == kept
        # ... a well-shaped forged one is kept (it cannot be checked while locked), and verified when applied.
        assert client.post(f"/unsubscribe/{forged}").status_code == 200
        assert spool.read_bytes() != kept
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.get(sub.id).status == "active"  # not yet applied ...
    assert client.get("/unsubscribe/" + "B" * 32).status_code == 404
    client.post("/unsubscribe/" + "B" * 32)  # ... the next POST drains the spool first
    assert store.get(sub.id).status == "unsubscribed"
    assert store.get(other.id).status == "active"  # the forged line changed nobody
    assert store.status_reason(sub.id) == "one-click (RFC 8058) (spooled)"
    assert not spool_path(wsgi.web_app.store_path).exists()


@pytest.mark.sqlite_only
def test_a_write_the_database_refuses_past_the_retries_is_503_not_500(tmp_path, db, store, sub, monkeypatch):
    """Confirming a signup while another process holds the write lock: try again later, never a 500."""
    import sqlite3

    from newsletter.clock import FakeClock
    from newsletter.tokens import CONFIRM
    from newsletter.web import app as web_app_module

    monkeypatch.setattr(web_app_module, "DB_BUSY_MS", 50)
    settings = load_settings(tmp_path, environ={"NEWSLETTER_SECRET_KEY": SECRET,
                                                "NEWSLETTER_BASE_URL": "https://news.example.org"})
    client = Client(make_app(settings, store_path=db, clock=FakeClock(), mail_sender=lambda message: None))
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        r = client.post(f"/confirm/{make_token(SECRET, sub.id, sub.email, CONFIRM)}", data={"confirm": "yes"})
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"
    assert "Traceback" not in r.get_data(as_text=True)
    assert store.get(sub.id).status == "active"


@pytest.mark.sqlite_only
def test_spool_is_applied_at_startup(settings, db, store, sub):
    import json

    from newsletter.unsubscribe_spool import spool_path

    app = make_app(settings, store_path=db)
    line = json.dumps({"token": token_for(sub), "reason": "one-click"})
    spool_path(app.web_app.store_path).write_text(line + "\nnot json\n")
    make_app(settings, store_path=db)
    assert store.get(sub.id).status == "unsubscribed"


def test_pending_reader_can_say_this_was_not_me(client, store):
    from newsletter.clock import FakeClock
    from newsletter.signups import Signups

    Signups(store, clock=FakeClock()).request("who@example.org", ip="192.0.2.1", source="t", consent="c")
    pending = store.get_by_email("who@example.org")
    assert pending.status == "pending"
    assert client.post(f"/unsubscribe/{token_for(pending)}").status_code == 200
    assert store.get(pending.id).status == "unsubscribed"


def _odd_paths() -> list[str]:
    """Paths the file system cannot take: an over-long segment, an over-long whole path in bytes
    (each é is two bytes), deep nesting, and bytes that are not UTF-8 or are surrogates."""
    return ["/" + "a" * 300, "/%e9" * 254, "/" + "%C3%A9" * 200, "/" + "a/" * 1020, "/x/" + "b" * 256 + "/y",
            "/" + "é" * 130, "/%ed%a0%80", "/%ff%fe/index.html", "/" + "a" * 255 + ".html", "/" + "a" * 2000 + "/"]


@pytest.mark.parametrize("path", _odd_paths())
def test_paths_the_file_system_refuses_are_404_not_500(settings, db, store, tmp_path, path, caplog):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>Archive</h1>")
    client = Client(make_app(settings, store_path=db, site_dir=site))
    for method in ("GET", "HEAD"):
        r = client.open(path, method=method)
        assert r.status_code == 404, (path, r.status_code)
    assert client.get("/").status_code == 200
    assert not [rec for rec in caplog.records if rec.levelname == "ERROR"]
