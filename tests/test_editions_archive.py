"""The web archive of a two-edition issue: one URL per edition, hreflang alternates both ways,
the right <html lang> and citation metadata per edition, an index and feeds per language."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import feedparser
import pytest

from newsletter.archive import build_archive
from tests.editions_fixtures import ZH, bilingual_publication, bilingual_settings

TODAY = dt.date(2026, 1, 1)


@pytest.fixture
def site(tmp_path: Path):
    settings = bilingual_settings(bilingual_publication(tmp_path / "pub"))
    out = tmp_path / "site"
    build_archive(settings, out, today=TODAY, sent=set())
    return settings, out


def _read(out: Path, path: str) -> str:
    return (out / path).read_text(encoding="utf-8")


def test_each_edition_has_its_own_page_linking_the_other(site):
    _, out = site
    en, zh = _read(out, "issues/bilingual-test/index.html"), _read(out, "issues/bilingual-test/zh-Hans/index.html")
    assert '<html lang="en">' in en and '<html lang="zh-Hans">' in zh
    for page in (en, zh):
        assert '<link rel="alternate" hreflang="en" href="https://news.example.org/issues/bilingual-test/">' in page
        assert ('<link rel="alternate" hreflang="zh-Hans" href="https://news.example.org/issues/bilingual-test/'
                'zh-Hans/">') in page
    assert 'lang="zh-Hans">中文 (简体)</a>' in en and 'lang="en">English</a>' in zh
    assert '<meta name="citation_title" content="双语测试期">' in zh
    assert '<meta name="citation_language" content="zh-Hans">' in zh
    assert '<meta name="citation_title" content="A Bilingual Test Issue">' in en
    assert "2025年5月2日" in zh and "全部往期" in zh and "All issues" in en


def test_an_index_and_feeds_per_language(site):
    _, out = site
    assert "双语测试期" in _read(out, "zh-Hans/index.html") and "双语测试期" not in _read(out, "index.html")
    main, zh = feedparser.parse(_read(out, "feed.xml")), feedparser.parse(_read(out, "feed.zh-Hans.xml"))
    assert [e.title for e in zh.entries] == ["#8 测试笔记: 双语测试期"]
    assert "#8 测试笔记: 双语测试期" not in [e.title for e in main.entries]
    assert zh.feed.language == "zh-Hans" and zh.entries[0].link.endswith("/issues/bilingual-test/zh-Hans/")
    feed = json.loads(_read(out, "feed.zh-Hans.json"))
    assert feed["language"] == "zh-Hans" and [i["title"] for i in feed["items"]] == ["#8 测试笔记: 双语测试期"]
    assert feed["feed_url"] == "https://news.example.org/feed.zh-Hans.json"
    assert "https://news.example.org/issues/bilingual-test/zh-Hans/" in _read(out, "sitemap.xml")


def test_a_draft_edition_is_not_published(tmp_path):
    settings = bilingual_settings(bilingual_publication(tmp_path / "pub"))
    path = settings.issues_dir / ZH
    path.write_text(path.read_text(encoding="utf-8").replace("---\n", "---\nstatus: draft\n", 1), encoding="utf-8")
    out = tmp_path / "site"
    build_archive(settings, out, today=TODAY, sent=set())
    assert not (out / "issues/bilingual-test/zh-Hans").exists() and not (out / "feed.zh-Hans.xml").exists()
    assert 'hreflang="zh-Hans"' not in _read(out, "issues/bilingual-test/index.html")
