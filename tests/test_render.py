"""Rendering: issue #6 end to end, the inliner configuration, and content rules."""

from __future__ import annotations

import re

import lxml.html
import pytest

from newsletter.config import load_settings
from newsletter.errors import InputError
from newsletter.render import PLACEHOLDERS, render_issue
from tests.conftest import seed_lines


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def html_text(html: str) -> str:
    doc = lxml.html.fromstring(html.encode("utf-8"))
    for bad in doc.xpath("//style|//title|//head"):
        bad.drop_tree()
    return squash(doc.text_content())


def test_every_seed_paragraph_and_heading_in_both_parts(rendered6):
    html, text = html_text(rendered6.html), squash(rendered6.text)
    lines = seed_lines()
    assert len(lines) == 67
    missing_html = [line for line in lines if squash(line) not in html]
    missing_text = [line for line in lines if squash(line) not in text]
    assert missing_html == [] and missing_text == []


def test_structure_of_issue6_is_kept(rendered6):
    doc = lxml.html.fromstring(rendered6.html)
    h2 = [squash(h.text_content()) for h in doc.iter("h2")]
    assert h2[:5] == ["Chinese Scholars on The Global Governance of Artificial Intelligence", "Background",
                      "Summary", "Insights", "Conclusion"]
    articles = [squash(h.text_content()) for h in doc.iter("h3")]
    assert [a.split(":")[0] for a in articles] == ["XIAO Qian", "XUE Lan", "After DeepSeek’s Emergence", "LU Chuanying", "LIANG Zheng"]
    assert len(list(doc.iter("h4"))) == 16
    # Feedback contact: the seed's address is the Reply-To and a visible mailto link.
    assert rendered6.reply_to == "sunchenghao@tsinghua.edu.cn"
    assert doc.xpath('//a[@href="mailto:sunchenghao@tsinghua.edu.cn"]')


def test_responsive_and_dark_mode_rules_survive_inlining(rendered6):
    html = rendered6.html
    assert html.startswith("<!doctype html>")
    styles = " ".join(lxml.html.fromstring(html).xpath("//style/text()"))
    assert re.search(r"@media only screen and \(min-width: ?480px\)[^}]*\.mj-column-per-100\s*\{[^}]*width:\s*100% !important", styles)
    assert re.search(r"@media \(prefers-color-scheme: dark\)[^@]*!important", styles)
    assert re.search(r"@media only screen and \(max-width: ?480px\)[^@]*!important", styles)
    # ...while ordinary rules were inlined into style attributes.
    h2 = lxml.html.fromstring(html).xpath("//h2")[0]
    assert "color:#9b1c1c" in h2.get("style").replace(" ", "")


def test_html_meets_email_rules(rendered6):
    html = rendered6.html
    doc = lxml.html.fromstring(html)
    assert doc.get("lang") == "en"
    assert doc.xpath('//meta[@name="color-scheme" and @content="light dark"]')
    assert all(img.get("alt") for img in doc.iter("img"))
    size = len(html.encode("utf-8"))
    assert size < 60 * 1024, f"{size} bytes"  # the budget; Gmail clips at ~102 KB
    # The preheader is present and hidden.
    hidden = doc.xpath('//div[contains(@style, "display:none")]')
    assert hidden and rendered6.preheader in hidden[0].text_content()


def test_only_named_placeholders_are_left(rendered6):
    for part in (rendered6.html, rendered6.text):
        assert "%%UNSUBSCRIBE_URL%%" in part and "%%EMAIL%%" in part
        leftovers = set(re.findall(r"%%[A-Z_]+%%", part)) - set(PLACEHOLDERS.values())
        assert not leftovers
        assert "{{" not in part and "{%" not in part and "<mj-" not in part


def test_plain_text_is_written_from_source(tmp_path, settings):
    path = settings.issues_dir / "007-links.md"
    path.write_text(
        "---\nnumber: 7\ntitle: Links\ndate: 2025-04-01\n---\n\n## Heading\n\n"
        "Read [the report](https://example.org/report) and <https://example.org/raw>.\n\n"
        "- one\n- two\n\n1. first\n2. second\n\n> quoted words\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
        encoding="utf-8",
    )
    text = render_issue(path, settings).text
    assert "Heading\n=======" in text
    assert "Read the report [link\u00a01] and https://example.org/raw." in text
    assert "[link\u00a01] https://example.org/report" in text
    assert "- one\n- two" in text and "1. first\n2. second" in text
    assert "> quoted words" in text and "a | b\n1 | 2" in text
    html = render_issue(path, settings).html
    assert 'class="nl-table-wrap"' in html


def test_image_without_alt_text_names_file_and_line(settings):
    path = settings.issues_dir / "007-img.md"
    path.write_text("---\nnumber: 7\ntitle: T\ndate: 2025-04-01\n---\n\nText\n\n![](https://example.org/a.png)\n", encoding="utf-8")
    with pytest.raises(InputError, match="has no alt text") as err:
        render_issue(path, settings)
    assert err.value.line == 9 and str(path) in err.value.format_message()


def test_image_with_alt_text_renders_responsive(settings):
    path = settings.issues_dir / "007-img.md"
    path.write_text("---\nnumber: 7\ntitle: T\ndate: 2025-04-01\n---\n\n![A chart of summits](https://example.org/a.png)\n", encoding="utf-8")
    img = lxml.html.fromstring(render_issue(path, settings).html).xpath("//img[@class='nl-img']")[0]
    assert img.get("alt") == "A chart of summits" and "max-width:100%" in img.get("style").replace(" ", "")


def test_broken_template_is_one_clear_error(settings):
    (settings.templates_dir / "email.mjml.j2").write_text("<mjml>{% if %}</mjml>", encoding="utf-8")
    from newsletter.issue import find_issue

    with pytest.raises(InputError, match="template error") as err:
        render_issue(find_issue(settings.issues_dir, "6"), settings)
    assert "email.mjml.j2:1" in err.value.format_message()


def test_publication_without_templates_uses_shipped_defaults(tmp_path):
    root = tmp_path / "other"
    (root / "issues").mkdir(parents=True)
    (root / "issues" / "001-hi.md").write_text("---\nnumber: 1\ntitle: Hi\ndate: 2025-01-01\n---\n\nHello there.\n", encoding="utf-8")
    settings = load_settings(root, environ={"NEWSLETTER_NAME": "Other Weekly"})
    rendered = render_issue(root / "issues" / "001-hi.md", settings)
    assert "Other Weekly" in rendered.html and "Hello there." in rendered.text


def test_render_is_deterministic(settings):
    from newsletter.issue import find_issue

    path = find_issue(settings.issues_dir, "6")
    assert render_issue(path, settings).content_hash == render_issue(path, settings).content_hash


def test_publication_logo_has_alt_text_and_width(settings):
    from newsletter.issue import find_issue

    logo = settings._replace(publication=settings.publication._replace(logo_url="https://example.org/logo.png",
                                                                       logo_alt="ChinAffairs+ logo"))
    doc = lxml.html.fromstring(render_issue(find_issue(settings.issues_dir, "6"), logo).html)
    img = doc.xpath('//img[@src="https://example.org/logo.png"]')[0]
    assert img.get("alt") == "ChinAffairs+ logo" and img.get("width") == "160"
    assert not lxml.html.fromstring(render_issue(find_issue(settings.issues_dir, "6"), settings).html).xpath(
        '//img[@src="https://example.org/logo.png"]')
