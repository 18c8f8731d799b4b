"""The web archive invites readers to subscribe: the signup form on the index and every issue
page, posting to the public server (a plain link when the archive is published elsewhere), and
held to /subscribe's origin check, honeypot and minimum time. In Chromium: axe finds nothing,
nothing is wider than a 375 px phone, and a reader who fills it in becomes a pending signup."""

from __future__ import annotations

import socket
import sqlite3
import threading
from pathlib import Path

import pytest

from newsletter.clock import FakeClock
from newsletter.config import load_settings
from newsletter.web import make_app
from newsletter.web.server import ServerLimits, create_server
from tests.test_archive import ISSUE6_PAGE, ISSUE7_PAGE, axe_source, build, page  # noqa: F401 - fixtures
from tests.test_archive import root  # noqa: F401 - the fixture publication with two issues

BASE = "https://news.example.org"


def _forms(path: Path) -> list:
    return page(path).xpath("//aside[@class='subscribe']//form")


@pytest.mark.parametrize("relative", ["index.html", ISSUE6_PAGE, ISSUE7_PAGE])
def test_every_archive_page_carries_the_signup_form(root, tmp_path, relative):  # noqa: F811
    build(root, tmp_path, NEWSLETTER_BASE_URL=BASE)
    (form,) = _forms(tmp_path / relative)
    assert form.get("action") == f"{BASE}/subscribe" and form.get("method") == "post"
    assert form.xpath(".//input[@name='email' and @type='email' and @required]")
    assert form.xpath(".//*[@hidden]//input[@name='website']")  # the honeypot, hidden
    assert not form.xpath(".//input[@name='form']")  # no stamp on a static page: the server issues it
    assert "By subscribing you agree" in form.text_content()


def test_an_archive_published_elsewhere_links_instead(root, tmp_path):  # noqa: F811
    build(root, tmp_path, NEWSLETTER_BASE_URL=BASE, NEWSLETTER_ARCHIVE_URL="https://archive.example.net/letters")
    doc = page(tmp_path / "index.html")
    assert not _forms(tmp_path / "index.html")  # the server would refuse its posts (origin check)
    assert doc.xpath("//aside[@class='subscribe']//a/@href") == [f"{BASE}/subscribe"]


def test_an_archive_elsewhere_that_may_post_gets_the_form(root, tmp_path):  # noqa: F811
    build(root, tmp_path, NEWSLETTER_BASE_URL=BASE, NEWSLETTER_ARCHIVE_URL="https://archive.example.net/letters",
          NEWSLETTER_FORM_ORIGINS="https://ARCHIVE.example.net")
    assert len(_forms(tmp_path / "index.html")) == 1


def test_no_public_server_no_invitation(root, tmp_path):  # noqa: F811
    build(root, tmp_path)
    assert not page(tmp_path / "index.html").xpath("//aside[@class='subscribe']")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served_archive(root, tmp_path):  # noqa: F811
    """The archive built for, and served by, a real app on waitress (its CSP in force)."""
    port = _free_port()
    environ = {"NEWSLETTER_BASE_URL": f"http://127.0.0.1:{port}", "NEWSLETTER_SECRET_KEY": "k" * 20,
               "NEWSLETTER_TRANSPORT": "dryrun"}
    site = tmp_path / "site"
    build(root, site, **environ)
    clock = FakeClock()
    sent: list = []
    app = make_app(load_settings(root, environ=environ), store_path=tmp_path / "s.db", site_dir=site, clock=clock,
                   mail_sender=sent.append)
    server = create_server(app, "127.0.0.1", port, ServerLimits())
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/", clock, tmp_path / "s.db"
    finally:
        server.close()
        thread.join(timeout=10)


@pytest.mark.parametrize("relative", ["", ISSUE6_PAGE.removesuffix("index.html")])
@pytest.mark.parametrize("width", [375, 800])
@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
def test_the_form_in_chromium_axe_and_no_overflow(axe_source, served_archive, relative, width, dark):  # noqa: F811
    from newsletter.browser import Chromium

    url, _, _ = served_archive
    with Chromium() as browser:
        tab = browser.open(url + relative, width=width, dark=dark)
        assert tab.evaluate("document.querySelectorAll('aside.subscribe form').length") == 1
        assert tab.evaluate("getComputedStyle(document.querySelector('.nl-hp')).display") == "none"
        assert tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert tab.evaluate("[...document.querySelectorAll('aside.subscribe *')]"
                            ".every(e => e.getBoundingClientRect().right <= window.innerWidth)")
        tab.evaluate(axe_source)
        violations = tab.evaluate(
            "axe.run(document).then(r => r.violations.map(v => ({id: v.id, impact: v.impact,"
            " nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))})))", await_promise=True)
    assert violations == []


def test_a_reader_subscribes_from_an_issue_page(axe_source, served_archive):  # noqa: F811
    """Filled in on the archive page, the post comes back as the server's own form (with its stamp);
    pressed again once a human's time has passed, the reader is a pending signup with mail queued."""
    from newsletter.browser import Chromium

    url, clock, db = served_archive
    with Chromium() as browser:
        tab = browser.open(url + ISSUE6_PAGE.removesuffix("index.html"))
        tab.evaluate("document.getElementById('nl-email').value = 'reader@example.org';"
                     "document.querySelector('aside.subscribe button').click()")
        browser.wait_event("Page.loadEventFired", tab.session)
        assert "One more step" in tab.evaluate("document.body.innerText")
        assert tab.evaluate("document.getElementById('nl-email').value") == "reader@example.org"
        clock.advance(10)
        tab.evaluate("document.querySelector('form.nl-signup button').click()")
        browser.wait_event("Page.loadEventFired", tab.session)
        assert "Check your inbox" in tab.evaluate("document.body.innerText")
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT status FROM subscribers WHERE email='reader@example.org'").fetchall() == [("pending",)]
    conn.close()


def test_the_subscribe_page_posts_in_a_browser(axe_source, served_archive):  # noqa: F811
    """Under ``Referrer-Policy: no-referrer`` Chromium sent ``Origin: null`` with the post, and the
    server's own form was refused by its own origin check (403)."""
    from newsletter.browser import Chromium

    url, clock, db = served_archive
    with Chromium() as browser:
        tab = browser.open(url + "subscribe")
        clock.advance(10)
        tab.evaluate("document.getElementById('nl-email').value = 'page@example.org';"
                     "document.querySelector('form.nl-signup button').click()")
        browser.wait_event("Page.loadEventFired", tab.session)
        assert "Check your inbox" in tab.evaluate("document.body.innerText")
