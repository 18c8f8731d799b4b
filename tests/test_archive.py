"""The web archive: pages, permanent anchors, scholarly metadata, feeds, sitemap, accessibility."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from pathlib import Path

import feedparser
import lxml.etree
import lxml.html
import pytest

from newsletter.archive import build_archive
from newsletter.config import load_settings
from newsletter.errors import InputError

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
BASE = "https://chinaffairs.example"
AXE_VERSION = "4.14.1"
AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
ISSUE6_PAGE = "issues/global-governance-of-ai/index.html"
ISSUE7_PAGE = "issues/clean/index.html"


@pytest.fixture
def root(publication_root: Path) -> Path:
    """Issue #6 plus a second issue (the clean fixture, dated later)."""
    shutil.copy(FIXTURES / "007-clean.md", publication_root / "issues" / "007-clean.md")
    return publication_root


def build(root: Path, out: Path, **environ: str) -> list[Path]:
    return build_archive(load_settings(root, environ=environ), out)


def page(path: Path) -> lxml.html.HtmlElement:
    return lxml.html.fromstring(path.read_bytes())


def test_site_has_every_file(root, tmp_path):
    written = build(root, tmp_path, NEWSLETTER_BASE_URL=BASE)
    assert sorted(str(p.relative_to(tmp_path)) for p in written) == sorted(
        ["index.html", "style.css", "feed.xml", "feed.json", "sitemap.xml", ISSUE6_PAGE, ISSUE7_PAGE])


def test_index_lists_issues_newest_first(root, tmp_path):
    build(root, tmp_path)
    doc = page(tmp_path / "index.html")
    items = doc.xpath("//ol[@class='issues']/li")
    assert [li.xpath("string(.//h2)").strip() for li in items] == [
        "#7 Test Notes: A Clean Issue", "#6 China Scholar Insights: The Global Governance of Artificial Intelligence"]
    first = items[0]
    assert first.xpath(".//time/@datetime") == ["2025-04-01"] and "No. 7" not in first.text_content()
    assert "Every pre-flight check passes" in first.text_content()  # the subtitle
    assert first.xpath(".//a/@href") == ["issues/clean/"]


def test_issue_page_is_web_html_with_permanent_anchors(root, tmp_path):
    build(root, tmp_path)
    doc = page(tmp_path / ISSUE6_PAGE)
    assert doc.get("lang") == "en" and not doc.xpath("//table[@role='presentation']")  # not the email's tables
    assert doc.xpath("//meta[@name='viewport']")
    headings = doc.xpath("//main//*[self::h2 or self::h3 or self::h4][@id]")
    assert len(headings) >= 20
    for heading in headings:
        (link,) = heading.getparent().xpath("a[@class='anchor']")
        assert link.get("href") == "#" + heading.get("id") and link.text == "¶"
    ids = doc.xpath("//@id")
    assert len(ids) == len(set(ids))
    articles = doc.xpath("//article[@class='card']")
    assert len(articles) == 5
    for article in articles:
        assert article.xpath(f".//h3[@id='{article.get('aria-labelledby')}']")
    assert doc.xpath("//h3[@id]")[0].get("id").startswith("xiao-qian")
    assert "Welcome to the sixth edition" in doc.text_content()


def test_the_emails_view_in_browser_link_reaches_the_page(root, tmp_path):
    from newsletter.render import render_issue

    build(root, tmp_path, NEWSLETTER_BASE_URL=BASE)
    settings = load_settings(root, environ={"NEWSLETTER_BASE_URL": BASE})
    email = lxml.html.fromstring(render_issue(root / "issues" / "006-global-governance-of-ai.md", settings).html)
    (href,) = email.xpath("//a[contains(., 'Read this issue in your browser')]/@href")
    assert href.startswith(BASE + "/") and (tmp_path / href.removeprefix(BASE + "/") / "index.html").is_file()


def test_scholarly_metadata(root, tmp_path):
    build(root, tmp_path)
    doc = page(tmp_path / ISSUE6_PAGE)
    meta = lambda name: doc.xpath(f"//meta[@name='{name}']/@content")  # noqa: E731
    assert meta("citation_title") == ["The Global Governance of Artificial Intelligence"]
    assert meta("citation_author") == ["BAI Xuhan", "WANG Jiaying", "GAO Liangyu", "HU Lingzhi", "HNIN Lei Lei Wai"]
    assert meta("citation_publication_date") == ["2025/03/10"]
    assert meta("citation_journal_title") == ["ChinAffairs+"]
    assert meta("citation_issue") == ["6"]


def test_urls_are_relative_without_a_base_url_and_absolute_with_one(root, tmp_path):
    build(root, tmp_path / "rel")
    rel = page(tmp_path / "rel" / ISSUE6_PAGE)
    assert not rel.xpath("//link[@rel='canonical']")
    assert rel.xpath("//link[@rel='stylesheet']/@href") == ["../../style.css"]
    assert rel.xpath("//link[@type='application/atom+xml']/@href") == ["../../feed.xml"]
    assert not (tmp_path / "rel" / "sitemap.xml").exists()  # the protocol allows only absolute URLs

    build(root, tmp_path / "abs", NEWSLETTER_BASE_URL=BASE)
    absolute = page(tmp_path / "abs" / ISSUE6_PAGE)
    assert absolute.xpath("//link[@rel='canonical']/@href") == [f"{BASE}/issues/global-governance-of-ai/"]
    assert absolute.xpath("//link[@type='application/atom+xml']/@href") == [f"{BASE}/feed.xml"]


@pytest.mark.parametrize("environ", [{}, {"NEWSLETTER_BASE_URL": BASE}], ids=["relative", "absolute"])
def test_atom_feed_is_valid_with_full_content(root, tmp_path, environ):
    build(root, tmp_path, **environ)
    feed = feedparser.parse((tmp_path / "feed.xml").read_bytes())
    assert feed.bozo == 0, feed.get("bozo_exception")
    assert feed.version == "atom10"
    assert feed.feed.title == "ChinAffairs+" and feed.feed.id and feed.feed.updated == "2025-04-01T00:00:00Z"
    assert [e.title for e in feed.entries] == [
        "#7 Test Notes: A Clean Issue", "#6 China Scholar Insights: The Global Governance of Artificial Intelligence"]
    for entry in feed.entries:
        assert entry.id and entry.updated and entry.link and entry.content[0].type == "text/html"
    assert len({e.id for e in feed.entries}) == 2
    six = feed.entries[1]
    assert "Welcome to the sixth edition" in six.content[0].value and "LIANG Zheng" in six.content[0].value
    assert [a.name for a in six.authors][:2] == ["BAI Xuhan", "WANG Jiaying"]
    if environ:
        assert six.id == six.link == f"{BASE}/issues/global-governance-of-ai/"
    else:
        assert six.id.startswith("tag:chinaffairs.example,2025-03-10:")


@pytest.mark.parametrize("environ", [{}, {"NEWSLETTER_BASE_URL": BASE}], ids=["relative", "absolute"])
def test_json_feed_has_the_spec_required_fields(root, tmp_path, environ):
    build(root, tmp_path, **environ)
    feed = json.loads((tmp_path / "feed.json").read_text(encoding="utf-8"))
    assert feed["version"] == "https://jsonfeed.org/version/1.1" and feed["title"] == "ChinAffairs+"
    assert len(feed["items"]) == 2
    for item in feed["items"]:
        assert isinstance(item["id"], str) and item["id"]
        assert item.get("content_html") or item.get("content_text")
        dt.datetime.fromisoformat(item["date_published"].replace("Z", "+00:00"))
    assert ("home_page_url" in feed) == bool(environ)
    assert "The end." in feed["items"][0]["content_html"]


def test_sitemap_lists_every_page_with_absolute_urls(root, tmp_path):
    build(root, tmp_path, NEWSLETTER_BASE_URL=BASE)
    tree = lxml.etree.parse(str(tmp_path / "sitemap.xml"))
    ns = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9"}
    assert tree.xpath("//s:url/s:loc/text()", namespaces=ns) == [
        f"{BASE}/", f"{BASE}/issues/clean/", f"{BASE}/issues/global-governance-of-ai/"]


def test_future_issues_are_drafts_and_left_out(root, tmp_path):
    written = build_archive(load_settings(root, environ={}), tmp_path, today=dt.date(2025, 3, 31))
    assert not (tmp_path / ISSUE7_PAGE).exists() and (tmp_path / ISSUE6_PAGE) in written
    assert "A Clean Issue" not in (tmp_path / "feed.xml").read_text(encoding="utf-8")


def test_two_issues_with_one_slug_stop_the_build(root, tmp_path):
    clean = root / "issues" / "007-clean.md"
    clean.write_text(clean.read_text(encoding="utf-8").replace("date: 2025-04-01", "date: 2025-04-01\nslug: global-governance-of-ai"),
                     encoding="utf-8")
    with pytest.raises(InputError, match="slug 'global-governance-of-ai' is also used"):
        build(root, tmp_path)


def test_publication_templates_override_the_shipped_ones(root, tmp_path):
    (root / "templates" / "web.css.j2").write_text("body { color: {{ pub.accent_color }}; }\n", encoding="utf-8")
    build(root, tmp_path)
    assert (tmp_path / "style.css").read_text(encoding="utf-8") == "body { color: #9b1c1c; }\n"


def test_a_broken_web_template_is_one_clear_error(root, tmp_path):
    (root / "templates" / "web.html.j2").write_text("{{ nope( }}", encoding="utf-8")
    with pytest.raises(InputError, match="template error") as err:
        build(root, tmp_path)
    assert "web.html.j2:1:" in err.value.format_message()


# ---- accessibility: axe-core in headless Chromium ---------------------------------------------
@pytest.fixture(scope="session")
def axe_source() -> str:
    """axe-core from the repo's (git-ignored) node_modules; installed with npm if missing."""
    if shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed")
    if not AXE.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip(f"axe-core is not installed and npm is missing (npm install axe-core@{AXE_VERSION})")
        result = subprocess.run([npm, "install", "--prefix", str(REPO), "--no-save", "--no-package-lock",
                                 "--no-audit", "--no-fund", f"axe-core@{AXE_VERSION}"],
                                capture_output=True, text=True, timeout=300)
        if result.returncode != 0 or not AXE.exists():
            pytest.skip(f"could not install axe-core with npm: {result.stderr.strip()[-300:]}")
    return AXE.read_text(encoding="utf-8")


def axe_violations(axe: str, path: Path, *, dark: bool) -> list[dict]:
    from newsletter.browser import Chromium, file_url

    with Chromium() as browser:
        tab = browser.open(file_url(path), width=1000, dark=dark)
        tab.evaluate(axe)
        return tab.evaluate(
            "axe.run(document).then(r => r.violations.map(v => ({id: v.id, impact: v.impact,"
            " nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))})))", await_promise=True)


@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
@pytest.mark.parametrize("relative", [ISSUE6_PAGE, "index.html"])
def test_pages_pass_axe_with_no_serious_violations(axe_source, root, tmp_path, relative, dark):
    build(root, tmp_path, NEWSLETTER_BASE_URL=BASE)
    violations = axe_violations(axe_source, tmp_path / relative, dark=dark)
    assert [v for v in violations if v["impact"] in ("serious", "critical")] == []


def test_axe_harness_finds_violations_on_a_bad_page(axe_source, tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text('<!doctype html><html><head><title>x</title></head><body><img src="a.png">'
                   '<p style="color:#ccc;background:#fff">faint</p><a href="/x"></a></body></html>', encoding="utf-8")
    ids = {v["id"] for v in axe_violations(axe_source, bad, dark=False)}
    assert {"html-has-lang", "image-alt", "color-contrast", "link-name"} <= ids
