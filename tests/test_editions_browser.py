"""The Chinese email passes the checks the English one does, in Debian's headless Chromium: no
sideways scrolling at 375 px, no axe violations, every paragraph of the source in both parts,
and CJK text drawn with real Simplified Chinese glyphs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from markdown_it.tree import SyntaxTreeNode

from newsletter.browser import Chromium, file_url
from newsletter.content import parse_body
from newsletter.editions import load_editions, render_editions
from newsletter.preview import fill_sample
from tests.editions_fixtures import MAIN, bilingual_publication, bilingual_settings
from tests.test_archive import axe_source, axe_violations  # noqa: F401 - the archive tests' axe harness
from tests.test_email_layout import PAGE_WIDTH, platform_fonts

pytestmark = pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
EDITIONS = ["", "zh-Hans"]


@pytest.fixture(scope="module")
def emails(tmp_path_factory):
    """Both editions rendered once, and written as pages (placeholders filled as a preview does)."""
    tmp = tmp_path_factory.mktemp("editions")
    settings = bilingual_settings(bilingual_publication(tmp / "pub"))
    eds = load_editions(settings.issues_dir / MAIN, "en")
    rendered = render_editions(eds, settings)
    pages = {}
    for tag, r in rendered.items():
        pages[tag] = tmp / f"email{tag or '-en'}.html"
        pages[tag].write_text(fill_sample(r.html), encoding="utf-8")
    return eds, rendered, pages


@pytest.fixture(scope="module")
def browser():
    with Chromium() as b:
        yield b


@pytest.mark.parametrize("edition", EDITIONS)
@pytest.mark.parametrize("width", [375, 800])
def test_no_sideways_scrolling(emails, browser, edition, width):
    tab = browser.open(file_url(emails[2][edition]), width=width)
    scroll, client = tab.evaluate(PAGE_WIDTH)
    assert scroll <= client


@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
def test_axe_finds_nothing_serious_and_nothing_the_english_email_lacks(axe_source, emails, dark):  # noqa: F811
    """As for the archive pages: no serious or critical violation. The email has no <main> landmark
    (a moderate finding every email layout shares), so the Chinese one is held to the English one's."""
    english = axe_violations(axe_source, emails[2][""], dark=dark)
    chinese = axe_violations(axe_source, emails[2]["zh-Hans"], dark=dark)
    assert [v for v in english + chinese if v["impact"] in ("serious", "critical")] == []
    assert {v["id"] for v in chinese} <= {v["id"] for v in english}, chinese


def _paragraphs(issue) -> list[str]:
    """The text of every paragraph and heading of the source, markup left out."""
    tree = SyntaxTreeNode(list(parse_body(issue.body, path=issue.path, first_line=issue.body_line).tokens))
    out = []

    def text(node) -> str:
        if node.type in ("text", "code_inline"):
            return node.content
        if node.type in ("softbreak", "hardbreak"):
            return " "
        if node.type in ("image", "footnote_ref"):
            return ""
        return "".join(text(c) for c in node.children)

    def walk(node) -> None:
        if node.type in ("paragraph", "heading"):
            value = text(node).strip()
            if value:
                out.append(value)
            return
        for child in node.children:
            walk(child)

    walk(tree)
    return out


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


@pytest.mark.parametrize("edition", EDITIONS)
def test_every_paragraph_of_the_source_is_in_both_parts(emails, edition):
    eds, rendered, _ = emails
    issue = eds.main if not edition else eds.others[edition]
    html = re.sub(r"<sup[^>]*>.*?</sup>", "", rendered[edition].html, flags=re.S)  # less the note numbers
    html_text = _squash(re.sub(r"<[^>]+>", "", html).replace("&amp;", "&"))
    plain = _squash(re.sub(r"\s?\[\^?\d+\]", "", rendered[edition].text))  # less the link and note numbers
    paragraphs = _paragraphs(issue)
    assert len(paragraphs) >= 8
    for paragraph in paragraphs:
        assert _squash(paragraph) in html_text, paragraph
        assert _squash(paragraph) in plain, paragraph


def test_cjk_text_is_drawn_with_real_simplified_chinese_glyphs(emails, browser):
    tab = browser.open(file_url(emails[2]["zh-Hans"]), width=375)
    body = platform_fonts(tab, ".nl-article-text p")
    cjk = {family: n for family, n in body.items() if "CJK" in family or "Song" in family or "Hei" in family}
    han = len(re.findall(r"[\u4e00-\u9fff]", "各标准组织在日内瓦开会讨论各国规则之间的互操作性问题并约定下次会议的议程"))
    assert cjk and all(family.endswith("SC") for family in cjk), body
    assert sum(cjk.values()) >= han  # every Han character has a glyph (no boxes)
    heading = platform_fonts(tab, ".nl-masthead h1")
    assert any(family.endswith("SC") for family in heading), heading


def test_chinese_emphasis_is_not_slanted(emails, browser):
    tab = browser.open(file_url(emails[2]["zh-Hans"]), width=800)
    style = tab.evaluate("(() => { const s = getComputedStyle(document.querySelector('em'));"
                         " return [s.fontStyle, s.fontWeight]; })()")
    assert style[0] == "normal" and int(style[1]) >= 600
    english = browser.open(file_url(emails[2][""]), width=800)
    assert english.evaluate("getComputedStyle(document.querySelector('em')).fontStyle") == "italic"
