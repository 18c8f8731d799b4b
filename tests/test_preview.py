"""The live preview, driven in Debian's headless chromium: widths, overflow, live edits, errors."""

from __future__ import annotations

import shutil
import threading

import pytest

from tests.helpers import wait_until
import requests

from newsletter.issue import find_issue
from newsletter.preview import PreviewServer

pytestmark = pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")

IFRAME_TEXT = "(() => {{ const f = document.getElementById('{id}'); return f && f.contentDocument && f.contentDocument.body ? f.contentDocument.body.innerText : ''; }})()"
READY = ("document.readyState === 'complete' && ['desktop', 'phone'].every(id => {"
         " const f = document.getElementById(id); return f && f.contentDocument && f.contentDocument.readyState === 'complete'"
         " && f.contentDocument.body && f.contentDocument.body.innerText.length > 0; })")


@pytest.fixture
def preview(settings):
    logs: list[str] = []
    server = PreviewServer(settings, find_issue(settings.issues_dir, "6"), log=logs.append)
    httpd = server.make_server(0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{httpd.server_port}/", logs
    server.stop()
    httpd.shutdown()




def test_preview_binds_loopback_and_shows_both_widths_and_text(preview):
    from newsletter.browser import Chromium

    server, url, _ = preview
    assert url.startswith("http://127.0.0.1:")
    with Chromium() as browser:
        tab = browser.open(url, width=1400, height=900)
        assert wait_until(lambda: tab.evaluate(READY))
        widths = tab.evaluate("[...document.querySelectorAll('iframe')].map(f => [f.id, f.clientWidth])")
        assert dict(widths) == {"desktop": 800, "phone": 375}
        assert "Welcome to the sixth edition" in tab.evaluate("document.getElementById('text').innerText")
        assert "#6 China Scholar Insights" in tab.evaluate("document.querySelector('.inbox .subject').innerText")
        # At 375 px the email itself never scrolls sideways.
        overflow = tab.evaluate(
            "(() => { const d = document.getElementById('phone').contentDocument;"
            " return [d.documentElement.scrollWidth, d.documentElement.clientWidth]; })()")
        assert overflow[0] <= overflow[1] == 375


def test_email_alone_has_no_horizontal_scroll_at_375(rendered6, tmp_path):
    from newsletter.browser import Chromium, file_url
    from newsletter.preview import fill_sample

    page = tmp_path / "email.html"
    page.write_text(fill_sample(rendered6.html), encoding="utf-8")
    with Chromium() as browser:
        for dark in (False, True):
            tab = browser.open(file_url(page), width=375, height=800, dark=dark)
            assert wait_until(lambda: tab.evaluate("document.readyState === 'complete' && document.body.innerText.length > 0"))
            scroll, client = tab.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
            assert scroll <= client == 375


def test_live_edit_shows_up_and_errors_keep_the_server_running(preview, settings):
    from newsletter.browser import Chromium

    server, url, logs = preview
    path = find_issue(settings.issues_dir, "6")
    original = path.read_text(encoding="utf-8")
    with Chromium() as browser:
        tab = browser.open(url, width=1400, height=900)
        assert wait_until(lambda: tab.evaluate(READY))
        assert "LIVE-EDIT-MARKER" not in tab.evaluate(IFRAME_TEXT.format(id="phone"))
        path.write_text(original + "\nLIVE-EDIT-MARKER paragraph.\n", encoding="utf-8")
        assert wait_until(lambda: tab.evaluate(READY) and "LIVE-EDIT-MARKER" in tab.evaluate(IFRAME_TEXT.format(id="desktop")))
        assert "LIVE-EDIT-MARKER" in tab.evaluate("document.getElementById('text').innerText")

        # A broken edit: the page shows the error, the last good render stays, the server lives on.
        path.write_text(original.replace("number: 6", "number: six"), encoding="utf-8")
        assert wait_until(lambda: tab.evaluate(READY) and "'number' must be a whole number" in (
            tab.evaluate("(document.querySelector('.error') || {}).innerText || ''")))
        assert "LIVE-EDIT-MARKER" in tab.evaluate(IFRAME_TEXT.format(id="desktop"))
        assert any("must be a whole number" in line for line in logs)
        assert requests.get(url + "version", timeout=5).json()["error"]

        path.write_text(original, encoding="utf-8")
        assert wait_until(lambda: tab.evaluate(READY) and tab.evaluate("document.querySelector('.error') === null")
                          and "LIVE-EDIT-MARKER" not in tab.evaluate(IFRAME_TEXT.format(id="desktop")))


def test_template_change_triggers_rebuild(preview, settings):
    server, url, _ = preview
    before = requests.get(url + "version", timeout=5).json()["version"]
    css = settings.templates_dir / "email.css.j2"
    css.write_text(css.read_text(encoding="utf-8") + "\n.nl-extra { color: #000; }\n", encoding="utf-8")
    assert wait_until(lambda: requests.get(url + "version", timeout=5).json()["version"] > before)


def test_preview_refuses_other_host_names(preview):
    """DNS rebinding: a page at attacker.example resolving to 127.0.0.1 must not read the draft."""
    import requests

    base = preview[1].rstrip("/")
    with requests.Session() as http:
        http.trust_env = False
        assert http.get(base + "/", timeout=10).status_code == 200
        for host in ("attacker.example", "attacker.example:8025", "127.0.0.1.nip.io", "localhost.attacker.example"):
            r = http.get(base + "/", headers={"Host": host}, timeout=10)
            assert r.status_code == 421 and "Global Governance" not in r.text
        assert http.get(base + "/version", headers={"Host": "evil.example"}, timeout=10).status_code == 421


def test_loopback_host_names():
    from newsletter.preview import loopback_host

    assert all(map(loopback_host, ["localhost", "localhost:8025", "127.0.0.1:1", "[::1]:8025", "LOCALHOST"]))
    assert not any(map(loopback_host, ["", "evil.example", "127.0.0.2", "localhost.evil", "127.0.0.1:x"]))
