"""The email as a phone and a desktop show it, in Debian's headless chromium: tables keep
their words whole, CJK names get real glyphs, rules line up with the text."""

from __future__ import annotations

import shutil

import pytest

from newsletter.browser import Chromium, file_url
from newsletter.config import load_settings
from newsletter.preview import fill_sample
from newsletter.render import render_issue
from tests.editor_fixtures import make_publication

pytestmark = pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")

# Every word in a table cell, as ranges: a word whose fragments sit on more than one line is split.
# A word is letters and digits (a line may break after a hyphen or slash, and between Han
# characters); words inside a link that shows a bare URL (class nl-url) may break, by design.
SPLIT_WORDS = r"""(() => {
  const split = [], seen = [];
  for (const cell of document.querySelectorAll('.nl-table td, .nl-table th, table td, table th')) {
    if (!cell.closest('.nl-table') || seen.includes(cell)) continue;
    seen.push(cell);
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    let node;
    while ((node = walker.nextNode())) {
      if (node.parentElement.closest('a.nl-url')) continue;
      const re = /(?:(?!\p{Script=Han})[\p{L}\p{N}’'.,:])+/gu; let m;
      while ((m = re.exec(node.data))) {
        const r = document.createRange();
        r.setStart(node, m.index); r.setEnd(node, m.index + m[0].length);
        const tops = new Set([...r.getClientRects()].filter(x => x.width > 0).map(x => Math.round(x.top)));
        if (tops.size > 1) split.push(m[0]);
      }
    }
  }
  return [seen.length, split];
})()"""
PAGE_WIDTH = "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """The newcomer's issue as the email and as its web archive page, in one Chromium."""
    import datetime as dt

    from newsletter.archive import build_archive

    tmp = tmp_path_factory.mktemp("layout")
    root, path = make_publication(tmp)
    settings = load_settings(root, environ={})
    page = tmp / "email.html"
    page.write_text(fill_sample(render_issue(path, settings).html), encoding="utf-8")
    build_archive(settings, tmp / "site", today=dt.date(2025, 4, 1), sent=set())
    web = tmp / "site" / "issues" / "trade-and-the-global-south" / "index.html"
    with Chromium() as browser:
        yield browser, {"email": file_url(page), "web": file_url(web)}


@pytest.fixture(scope="module")
def email_page(pages):
    browser, urls = pages
    return browser, urls["email"]


@pytest.mark.parametrize("page", ["email", "web"])
@pytest.mark.parametrize("width", [375, 800])
def test_no_word_in_a_table_cell_is_split_across_lines(pages, page, width):
    browser, urls = pages
    tab = browser.open(urls[page], width=width)
    cells, split = tab.evaluate(SPLIT_WORDS)
    assert cells >= 20  # the fixture's 4 x 5 table was found
    assert split == []
    scroll, client = tab.evaluate(PAGE_WIDTH)
    assert scroll <= client  # the page never scrolls sideways: a wide table scrolls inside its wrapper
    if width == 800:  # a long bare URL breaks instead of widening the table past the column
        wrap = tab.evaluate("(() => { const w = document.querySelector('.nl-table-wrap');"
                            " return [w.scrollWidth, w.clientWidth]; })()")
        assert wrap[0] <= wrap[1], wrap


def test_rules_line_up_with_the_text_at_375(email_page):
    browser, url = email_page
    tab = browser.open(url, width=375)
    rule, heading = tab.evaluate(
        "[document.querySelector('.nl-rule p').getBoundingClientRect().left,"
        " document.querySelector('.nl-masthead h1').getBoundingClientRect().left]")
    assert rule == heading


def platform_fonts(tab, selector: str) -> dict[str, int]:
    """The fonts Chromium really drew ``selector``'s text with: family → glyph count."""
    tab.call("DOM.enable")
    tab.call("CSS.enable")
    root = tab.call("DOM.getDocument")["root"]["nodeId"]
    node = tab.call("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
    assert node, selector
    fonts = tab.call("CSS.getPlatformFontsForNode", nodeId=node)["fonts"]
    return {f["familyName"]: f["glyphCount"] for f in fonts}


def test_chinese_names_are_drawn_with_a_simplified_chinese_font(email_page):
    """Fails on a machine without a CJK font (the names would be boxes), and with a font stack
    that leaves the choice to fallback (Chromium then picks a Japanese face for Han characters)."""
    browser, url = email_page
    tab = browser.open(url, width=800)
    credit = platform_fonts(tab, ".nl-credits .nl-credit")
    cjk = {family: n for family, n in credit.items() if "CJK" in family or "Hei" in family or "Song" in family}
    assert cjk and all(family.endswith("SC") for family in cjk), credit
    assert sum(cjk.values()) >= 7  # 孙成昊 and 清华大学: every Han character has a real glyph
    heading = platform_fonts(tab, ".nl-article-text h3")
    assert any(family.endswith("CJK SC") for family in heading), heading


def test_latin_text_is_not_drawn_with_the_cjk_font(email_page):
    """A CJK face's Latin punctuation is full width ("world ’ s"): Latin text must get a Latin
    face wherever Georgia is missing (Linux, Android), and only Han characters the CJK one."""
    browser, url = email_page
    tab = browser.open(url, width=375)
    dek = platform_fonts(tab, ".nl-dek")
    assert dek and not any("CJK" in family for family in dek), dek


def test_a_table_wider_than_the_column_scrolls_inside_itself(tmp_path):
    """Eight columns of long words cannot fit 576 px: the table scrolls in its wrapper, at
    desktop width too, and the email itself never grows wider than the window."""
    cols = ["Jurisdiction", "Instrument", "Responsibility", "Accountability", "Transparency",
            "Implementation", "Enforcement", "International"]
    body = f"| {' | '.join(cols)} |\n|{'---|' * len(cols)}\n| {' | '.join(cols)} |\n"
    root, path = make_publication(tmp_path, body)
    page = tmp_path / "email.html"
    page.write_text(fill_sample(render_issue(path, load_settings(root, environ={})).html), encoding="utf-8")
    with Chromium() as browser:
        for width in (375, 800):
            tab = browser.open(file_url(page), width=width)
            scroll, client = tab.evaluate(PAGE_WIDTH)
            inner, outer = tab.evaluate("(() => { const w = document.querySelector('.nl-table-wrap');"
                                        " return [w.scrollWidth, w.clientWidth]; })()")
            assert scroll <= client and inner > outer, (width, scroll, inner, outer)
            assert tab.evaluate(SPLIT_WORDS)[1] == []
