"""Readers choose their edition: the signed switch link in every email, and public pages in the
reader's language (stored, else Accept-Language, else the publication's)."""

from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path

import pytest
from werkzeug.test import Client

from newsletter.editions import load_editions, render_editions
from newsletter.sendplan import dry_run_all, prepare_editions
from newsletter.store import SubscriberStore
from newsletter.tokens import make_token
from newsletter.web import make_app
from tests.editions_fixtures import MAIN, SECRET, bilingual_publication, bilingual_settings


@pytest.fixture
def settings(tmp_path: Path, any_db):
    """The bilingual publication, its readers on SQLite or on PostgreSQL."""
    return bilingual_settings(bilingual_publication(tmp_path / "pub"), NEWSLETTER_DB=str(any_db))


@pytest.fixture
def client(settings):
    return Client(make_app(settings, mail_sender=lambda message: None))


def _dry_run(settings) -> None:
    eds = load_editions(settings.issues_dir / MAIN, "en")
    prepared = prepare_editions(settings, eds, render_editions(eds, settings, include_drafts=False))
    dry_run_all(settings, prepared.rendered, prepared=prepared)


def _message(settings, address: str) -> email.message.EmailMessage:
    path = next((settings.outbox / "bilingual-test").glob(f"*-{address}.eml"))
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)


def test_the_switch_link_changes_the_language_of_the_readers_next_issue(settings, client):
    with SubscriberStore.open(settings.db_target) as store:
        store.add("reader@example.org", lang="en")
    _dry_run(settings)
    text = _message(settings, "reader@example.org").get_body(("plain",)).get_content()
    assert "Test Notes: A Bilingual Test Issue" in text
    link = re.search(r"以后都给我发中文版: (https://news\.example\.org(/language/\S+))", text)
    assert link is not None, text
    path = link.group(2)
    assert path.endswith("/zh-Hans")
    page = client.get(path)
    assert page.status_code == 200 and "<form method=\"post\"" in page.get_data(as_text=True)
    assert '<html lang="zh-Hans">' in page.get_data(as_text=True)  # in the language being chosen
    with SubscriberStore.open(settings.db_target) as store:
        assert store.get_by_email("reader@example.org").lang == "en"  # a GET changes nothing
    done = client.post(path, data={"lang": "zh-Hans"})
    assert done.status_code == 200 and "语言已更改" in done.get_data(as_text=True)
    with SubscriberStore.open(settings.db_target) as store:
        assert store.get_by_email("reader@example.org").lang == "zh-Hans"
    _dry_run(settings)
    assert str(_message(settings, "reader@example.org")["Subject"]) == "#8 测试笔记: 双语测试期"


def test_the_chinese_email_links_back_to_english(settings):
    with SubscriberStore.open(settings.db_target) as store:
        store.add("zh@example.org", lang="zh-CN")
    _dry_run(settings)
    msg = _message(settings, "zh@example.org")
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "Read in English: https://news.example.org/issues/bilingual-test/" in text
    assert re.search(r"Send me this edition from now on: https://news\.example\.org/language/[A-Za-z0-9_-]{32}/en\b",
                     text)
    assert 'href="https://news.example.org/issues/bilingual-test/"' in html and ">Read in English</a>" in html


@pytest.mark.parametrize("make_path", [
    lambda sid, email: f"/language/{make_token(SECRET, sid, email, 'unsubscribe')}/zh-Hans",  # another purpose
    lambda sid, email: f"/language/{make_token(SECRET, sid, email + 'x', 'language')}/zh-Hans",  # another address
    lambda sid, email: f"/language/{make_token('other-secret-0123456789', sid, email, 'language')}/zh-Hans",
    lambda sid, email: f"/language/{make_token(SECRET, sid, email, 'language')}/zh Hans!",  # not a tag
    lambda sid, email: f"/language/{make_token(SECRET, sid, email, 'language')}/" + "x" * 200,
    lambda sid, email: "/language/short/zh-Hans",
])
def test_every_bad_link_is_the_same_404_and_changes_nothing(settings, client, make_path):
    with SubscriberStore.open(settings.db_target) as store:
        sub = store.add("reader@example.org", lang="en")
    for method in ("get", "post"):
        r = getattr(client, method)(make_path(sub.id, sub.email))
        assert r.status_code == 404
    with SubscriberStore.open(settings.db_target) as store:
        assert store.get(sub.id).lang == "en"


def test_an_unsubscribed_reader_cannot_switch(settings, client):
    with SubscriberStore.open(settings.db_target) as store:
        sub = store.add("reader@example.org")
        store.unsubscribe(sub.id)
    path = f"/language/{make_token(SECRET, sub.id, sub.email, 'language')}/zh-Hans"
    assert client.post(path).status_code == 404


@pytest.mark.parametrize("stored, header, expected", [
    ("", None, "en"),                          # the publication's
    ("", "zh-CN,zh;q=0.9,en;q=0.5", "zh-Hans"),  # the request's
    ("", "fr-FR, zh;q=0.4", "zh-Hans"),        # the first the catalogs have
    ("", "fr-FR, de", "en"),
    ("", "zh-TW", "en"),                       # Traditional Chinese: no catalog
    ("zh", "en-US", "zh-Hans"),                # the stored language wins
    ("en", "zh-CN", "en"),
    ("", "zh;q=0, en", "en"),                  # q=0: not wanted
    ("", "x" * 5000, "en"),                    # junk
])
def test_public_pages_follow_the_readers_language(settings, client, stored, header, expected):
    with SubscriberStore.open(settings.db_target) as store:
        sub = store.add("reader@example.org", lang=stored)
    headers = {"Accept-Language": header} if header is not None else {}
    page = client.get(f"/unsubscribe/{make_token(SECRET, sub.id, sub.email)}", headers=headers).get_data(as_text=True)
    assert f'<html lang="{expected}">' in page
    assert ("退订" in page) == (expected == "zh-Hans")


# ---- the signup form ------------------------------------------------------------------------------------
from tests.test_signup import World, clock, env  # noqa: E402,F401 - the signup tests' world and fixtures


@pytest.fixture
def world(tmp_path, env, clock):  # noqa: F811
    """The signup tests' publication, with an issue that has a Simplified Chinese edition."""
    (tmp_path / "issues").mkdir()
    (tmp_path / "issues" / "001-first.zh-Hans.md").write_text("---\ntitle: 第一期\n---\n\n正文。\n", encoding="utf-8")
    w = World(tmp_path, env, clock)
    yield w
    w.store.close()


def test_a_publication_in_one_language_offers_no_choice(tmp_path, env, clock):  # noqa: F811
    w = World(tmp_path, env, clock)
    try:
        assert 'name="lang"' not in w.client.get("/subscribe").get_data(as_text=True)
    finally:
        w.store.close()


@pytest.mark.parametrize("header, selected, heading", [
    ("zh-CN,zh;q=0.9", "zh-Hans", "订阅 The Letter"), ("en-US", "en", "Subscribe to The Letter"),
    (None, "en", "Subscribe to The Letter"), ("fr, zh-SG;q=0.5", "zh-Hans", "订阅 The Letter"),
])
def test_the_signup_form_offers_a_language_defaulting_to_accept_language(world, header, selected, heading):
    headers = {"Accept-Language": header} if header else {}
    page = world.client.get("/subscribe", headers=headers).get_data(as_text=True)
    assert f"<h1>{heading}</h1>" in page
    assert re.search(rf'<option value="{selected}"[^>]*\bselected>', page)
    assert len(re.findall(r' selected>', page)) == 1


@pytest.mark.parametrize("chosen, stored", [("zh-Hans", "zh-Hans"), ("zh_cn", "zh-CN"), ("", ""),
                                            ("<script>", ""), ("x" * 400, None)])
def test_the_chosen_language_is_the_new_readers(world, chosen, stored):
    r = world.signup("new@example.org", lang=chosen)
    if stored is None:  # an over-long field: refused like any other
        assert r.status_code == 400
        return
    assert r.status_code == 200
    assert world.store.get_by_email("new@example.org").lang == stored


def test_a_signup_never_changes_a_confirmed_readers_language(world):
    world.store.add("known@example.org", lang="en")
    assert world.signup("known@example.org", lang="zh-Hans").status_code == 200
    assert world.store.get_by_email("known@example.org").lang == "en"


# ---- the archive index served by `newsletter serve` -----------------------------------------------------
@pytest.mark.parametrize("header, location", [("zh-CN,zh;q=0.9", "/zh-Hans/"), ("en", None), (None, None),
                                               ("zh-TW", None), ("fr, zh;q=0.5", "/zh-Hans/")])
def test_the_archive_index_follows_accept_language(tmp_path, settings, header, location):
    import datetime as dt

    from newsletter.archive import build_archive

    site = tmp_path / "site"
    build_archive(settings, site, today=dt.date(2026, 1, 1), sent=set())
    client = Client(make_app(settings, site_dir=site, mail_sender=lambda message: None))
    r = client.get("/", headers={"Accept-Language": header} if header else {})
    assert "Accept-Language" in r.headers.get("Vary", "")
    if location is None:
        assert r.status_code == 200 and '<html lang="en">' in r.get_data(as_text=True)
    else:
        assert r.status_code == 302 and r.headers["Location"] == location
        page = client.get(location)
        assert page.status_code == 200 and '<html lang="zh-Hans">' in page.get_data(as_text=True)


def test_language_pages_are_never_cached_or_framed(settings, client):
    with SubscriberStore.open(settings.db_target) as store:
        sub = store.add("reader@example.org")
    r = client.get(f"/language/{make_token(SECRET, sub.id, sub.email, 'language')}/zh-Hans")
    assert r.status_code == 200
    assert r.headers["Cache-Control"] == "no-store" and r.headers["X-Frame-Options"] == "DENY"
