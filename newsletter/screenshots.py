"""`newsletter preview --screenshot DIR`: the built email as PNGs, phone and desktop, light and dark.

The email is what subscribers get, with sample values in the per-recipient
placeholders, rendered by headless Chromium. Dark mode is the
``prefers-color-scheme: dark`` media feature emulated through CDP, which is
what the template's dark ``@media`` rules answer to (Apple Mail, iOS Mail and
Outlook for Mac honour them), so the dark shots show what those readers see.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from newsletter.browser import Chromium, file_url
from newsletter.preview import fill_sample
from newsletter.render import RenderedEmail

WIDTHS = (375, 800)
SCHEMES = ("light", "dark")


def screenshot_name(slug: str, width: int, scheme: str) -> str:
    return f"{slug}-{width}-{scheme}.png"


def take_screenshots(rendered: RenderedEmail, out_dir: Path, *, executable: str | None = None) -> list[Path]:
    """Write ``<slug>-<width>-<light|dark>.png`` for each width and scheme; returns their paths.

    Raises :class:`~newsletter.errors.ConfigError` when Chromium is not installed.
    """
    with Chromium(executable) as browser, tempfile.TemporaryDirectory(prefix="newsletter-shot-") as tmp:
        page = Path(tmp) / "email.html"
        page.write_text(fill_sample(rendered.html), encoding="utf-8")
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for width in WIDTHS:
            for scheme in SCHEMES:
                tab = browser.open(file_url(page), width=width, dark=scheme == "dark")
                target = out_dir / screenshot_name(rendered.slug, width, scheme)
                target.write_bytes(tab.screenshot())
                tab.call("Page.close")
                written.append(target)
        return written
