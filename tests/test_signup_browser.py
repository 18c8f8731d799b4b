"""The signup form page in Debian's headless Chromium at 375 and 800 px: labels, keyboard, axe.

Served by the real app on waitress (127.0.0.1), so its Content-Security-Policy is in force:
the page must look right with the stylesheet allowed only by its hash.
"""

from __future__ import annotations

import threading

import pytest

from newsletter.config import load_settings
from newsletter.web import make_app
from newsletter.web.server import ServerLimits, create_server
from tests.test_archive import axe_source  # noqa: F401 - the shared fixture (skips without chromium/axe)


@pytest.fixture
def form_url(tmp_path):
    (tmp_path / "newsletter.toml").write_text('name = "The Letter"\nbase_url = "https://news.example.org"\n'
                                              'tagline = "Weekly notes"\naccent_color = "#1d4ed8"\n')
    settings = load_settings(tmp_path, environ={"NEWSLETTER_SECRET_KEY": "k" * 20})
    server = create_server(make_app(settings, store_path=tmp_path / "s.db"), "127.0.0.1", 0, ServerLimits())
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}/subscribe"
    finally:
        server.close()
        thread.join(timeout=10)


def _press_tab(tab) -> str:
    for kind in ("keyDown", "keyUp"):
        tab.call("Input.dispatchKeyEvent", type=kind, key="Tab", code="Tab", windowsVirtualKeyCode=9)
    return tab.evaluate("document.activeElement.id || document.activeElement.tagName")


@pytest.mark.parametrize("width", [375, 800])
def test_form_page_is_accessible_and_keyboard_usable(axe_source, form_url, width):  # noqa: F811
    from newsletter.browser import Chromium

    with Chromium() as browser:
        tab = browser.open(form_url, width=width)
        # Every visible input has a label, and the stylesheet applied (the CSP hash matched).
        assert tab.evaluate("[...document.querySelectorAll('input:not([type=hidden])')]"
                            ".filter(i => i.offsetParent).every(i => i.labels.length === 1)")
        assert tab.evaluate("getComputedStyle(document.querySelector('button')).backgroundColor") == "rgb(29, 78, 216)"
        # Nothing wider than the viewport (no sideways scrolling on a phone).
        assert tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        # Keyboard: email, name, then the button; the hidden honeypot is skipped.
        assert [_press_tab(tab) for _ in range(3)] == ["nl-email", "nl-name", "BUTTON"]
        tab.evaluate(axe_source)
        violations = tab.evaluate(
            "axe.run(document).then(r => r.violations.map(v => ({id: v.id, impact: v.impact})))",
            await_promise=True)
    assert [v for v in violations if v["impact"] in ("serious", "critical")] == []
