"""Editions of one issue: files, inheritance, language matching, build, new --lang, and the
one delivery that gives each reader their language (dry run and the ledger)."""

from __future__ import annotations

import email
import email.policy
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter.cli import cli
from newsletter.editions import (MAIN, edition_files, load_editions, new_edition, render_editions,
                                 split_edition_path)
from newsletter.errors import ContentChangedError, InputError
from newsletter.issue import list_issues, refuse_shared_slug
from newsletter.lang import match, maximize, normalise_tag
from newsletter.ledger import edition_counts, open_ledger, start_or_resume
from newsletter.delivery import run_delivery
from newsletter.sendplan import dry_run_all, prepare_editions
from newsletter.store import SubscriberStore
from tests.editions_fixtures import MAIN as MAIN_FILE, READERS, ZH, bilingual_publication, bilingual_settings
from tests.test_delivery import FakeTime, Recorder, Sink, options


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return bilingual_publication(tmp_path / "pub")


@pytest.fixture
def settings(root: Path):
    return bilingual_settings(root)


def _editions(settings):
    return load_editions(settings.issues_dir / MAIN_FILE, settings.publication.lang)


def _add_readers(settings, readers=READERS) -> None:
    with SubscriberStore.open(settings.db_path) as store:
        for address, lang, _ in readers:
            store.add(address, lang=lang)


# ---- language tags ----------------------------------------------------------------------------
@pytest.mark.parametrize("reader, expected", [
    ("zh", "zh-Hans"), ("zh-CN", "zh-Hans"), ("zh-Hans", "zh-Hans"), ("zh-SG", "zh-Hans"), ("zh-hans-cn", "zh-Hans"),
    ("zh_CN", "zh-Hans"), ("zh-TW", None), ("zh-Hant", None), ("zh-HK", None), ("fr", None), ("ja", None),
    (None, None), ("", None), ("not a tag", None), ("en-GB", "en"), ("en", "en"),
])
def test_readers_match_editions_by_cldr_likely_subtags(reader, expected):
    assert match(reader, ["en", "zh-Hans"]) == expected


def test_a_region_that_agrees_wins_among_editions_of_one_script():
    assert match("pt-PT", ["pt-BR", "pt-PT"]) == "pt-PT"
    assert match("pt", ["pt-PT", "pt-BR"]) == "pt-BR"  # CLDR: pt is pt-Latn-BR
    assert maximize("zh") == ("zh", "Hans", "CN") and maximize("zh-TW") == ("zh", "Hant", "TW")


@pytest.mark.parametrize("bad", ["", "z", "zh--Hans", "zh Hans", "x" * 40, "zh-\nHans", "../etc", "zh-Hans;"])
def test_a_bad_tag_is_one_clear_error(bad):
    with pytest.raises(InputError, match="not a language tag"):
        normalise_tag(bad)


# ---- edition files ------------------------------------------------------------------------------
def test_an_edition_inherits_what_does_not_change_with_language(settings):
    eds = _editions(settings)
    zh = eds.others["zh-Hans"]
    assert (zh.number, zh.slug, zh.date, zh.reply_to, zh.status) == (8, "bilingual-test", eds.main.date,
                                                                      "editors@example.org", "ready")
    assert zh.lang == "zh-Hans" and zh.title == "双语测试期" and eds.main_lang == "en"


def test_an_edition_is_neither_an_issue_of_its_own_nor_a_duplicate_slug(settings):
    assert [p.name for p in list_issues(settings.issues_dir)] == ["006-global-governance-of-ai.md", MAIN_FILE]
    refuse_shared_slug(settings.issues_dir)  # no error: the edition shares the slug by design
    assert list(edition_files(settings.issues_dir / MAIN_FILE)) == ["zh-Hans"]
    assert split_edition_path(settings.issues_dir / ZH) == (settings.issues_dir / MAIN_FILE, "zh-Hans")


@pytest.mark.parametrize("line, message", [
    ("number: 9", "number is 9"),
    ("slug: another-slug", "slug is 'another-slug'"),
    ("lang: fr", "'lang' is 'fr' but the file name says zh-Hans"),
])
def test_an_edition_that_is_not_the_same_issue_is_named_with_its_line(settings, line, message):
    path = settings.issues_dir / ZH
    text = path.read_text(encoding="utf-8").replace("---\n", f"---\n{line}\n", 1)
    text = text.replace("number: 8\n", "", 1) if line.startswith("number") else text
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=message) as err:
        _editions(settings)
    assert err.value.path == path and err.value.line == 2


def test_an_edition_in_the_main_editions_language_is_refused(settings):
    (settings.issues_dir / MAIN_FILE.replace(".md", ".en.md")).write_text(
        (settings.issues_dir / ZH).read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(InputError, match="main edition is already en"):
        _editions(settings)


def test_new_lang_starts_a_draft_edition_with_the_text_to_translate(root, settings):
    (settings.issues_dir / ZH).unlink()
    result = CliRunner().invoke(cli, ["--root", str(root), "new", "--lang", "zh-hans", "8"])
    assert result.exit_code == 0, result.output
    path = settings.issues_dir / ZH
    text = path.read_text(encoding="utf-8")
    assert "lang: zh-Hans" in text and "status: draft" in text
    for inherited in ("number:", "date:", "reply_to:", "\nslug:"):
        assert inherited not in text.split("---")[1]
    edition = _editions(settings).others["zh-Hans"]
    assert edition.is_draft and edition.body == _editions(settings).main.body
    again = CliRunner().invoke(cli, ["--root", str(root), "new", "--lang", "zh-Hans", "8"])
    assert again.exit_code != 0 and "already exists" in again.output
    with pytest.raises(InputError, match="main edition's language"):
        new_edition(settings.issues_dir / MAIN_FILE, "en")


def test_build_builds_every_edition_or_the_one_named(root, settings):
    runner = CliRunner()
    result = runner.invoke(cli, ["--root", str(root), "build", "8"])
    assert result.exit_code == 0, result.output
    main_dir, zh_dir = settings.build_dir / "bilingual-test", settings.build_dir / "bilingual-test" / "zh-Hans"
    assert '<html lang="en"' in (main_dir / "email.html").read_text(encoding="utf-8")
    assert '<html lang="zh-Hans"' in (zh_dir / "email.html").read_text(encoding="utf-8")
    (zh_dir / "email.txt").unlink()
    (main_dir / "email.txt").unlink()
    result = runner.invoke(cli, ["--root", str(root), "build", "8", "--lang", "zh"])
    assert result.exit_code == 0, result.output
    assert (zh_dir / "email.txt").exists() and not (main_dir / "email.txt").exists()
    result = runner.invoke(cli, ["--root", str(root), "build", "8", "--lang", "fr"])
    assert result.exit_code != 0 and "no fr edition" in result.output


# ---- one delivery, every edition -----------------------------------------------------------------
def _eml(settings, address: str) -> email.message.EmailMessage:
    path = next((settings.outbox / "bilingual-test").glob(f"*-{address}.eml"))
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)


def test_a_dry_run_writes_each_reader_their_language(settings):
    _add_readers(settings)
    eds = _editions(settings)
    prepared = prepare_editions(settings, eds, render_editions(eds, settings, include_drafts=False))
    summary = dry_run_all(settings, prepared.rendered, prepared=prepared)
    assert summary.messages == len(READERS) and summary.editions == {"": 4, "zh-Hans": 3}
    for address, _, edition in READERS:
        msg = _eml(settings, address)
        html = msg.get_body(("html",)).get_content()
        text = msg.get_body(("plain",)).get_content()
        if edition:
            assert str(msg["Subject"]) == "#8 测试笔记: 双语测试期"
            assert '<html lang="zh-Hans"' in html and "中文测试期到此结束。" in text and "阅读中文版" not in text
            assert "Read in English: https://news.example.org/issues/bilingual-test/" in text
        else:
            assert str(msg["Subject"]) == "#8 Test Notes: A Bilingual Test Issue"
            assert '<html lang="en"' in html and "The end of the English test issue." in text
            assert "阅读中文版: https://news.example.org/issues/bilingual-test/zh-Hans/" in text
        assert "/language/" in text and "/language/" in html  # the switch link, signed per reader


def test_a_draft_edition_sends_everyone_the_main_edition_and_says_so(root, settings):
    path = settings.issues_dir / ZH
    path.write_text(path.read_text(encoding="utf-8").replace("---\n", "---\nstatus: draft\n", 1), encoding="utf-8")
    _add_readers(settings)
    result = CliRunner().invoke(cli, ["--root", str(root), "send", "8", "--dry-run"],
                                env={"NEWSLETTER_BASE_URL": "https://news.example.org"})
    assert result.exit_code == 0, result.output
    assert "the zh-Hans edition is a draft: its readers get the main edition (en)" in result.output
    for address, _, _ in READERS:
        assert str(_eml(settings, address)["Subject"]) == "#8 Test Notes: A Bilingual Test Issue"
        assert "阅读中文版" not in _eml(settings, address).get_body(("plain",)).get_content()


def _deliver(settings, *, transport=None, sink=None, stop=None):
    eds = _editions(settings)
    prepared = prepare_editions(settings, eds, render_editions(eds, settings, include_drafts=False))
    sink = sink or Sink()
    conn = open_ledger(settings.db_path)
    try:
        did = start_or_resume(conn, prepared)
        report = run_delivery(conn, did, prepared, lambda: transport or Recorder(sink), options=options(batch_size=2),
                              clock=FakeTime().clock, sleep=FakeTime().sleep, stop=stop)
    finally:
        conn.close()
    return did, report, sink


def _ledger_editions(settings, did: int) -> dict[str, str]:
    conn = sqlite3.connect(settings.db_path)
    try:
        return dict(conn.execute("SELECT email, edition FROM ledger WHERE delivery_id=?", (did,)))
    finally:
        conn.close()


def test_one_delivery_sends_each_reader_their_edition_and_records_it(settings):
    _add_readers(settings)
    did, report, sink = _deliver(settings)
    assert report.state == "done" and report.sent == len(READERS)
    assert _ledger_editions(settings, did) == {a: e for a, _, e in READERS}
    for address, _, edition in READERS:
        assert sink.messages[address].prepared.rendered.edition == edition
    conn = open_ledger(settings.db_path)
    try:
        counts = edition_counts(conn, did)
    finally:
        conn.close()
    assert {tag: c["sent"] for tag, c in counts.items()} == {"": 4, "zh-Hans": 3}


def test_a_resume_after_a_crash_sends_the_edition_recorded_at_the_freeze(settings):
    _add_readers(settings)

    class Crash(BaseException):
        pass

    calls = []

    def crash_on_second_batch(messages, key):
        calls.append(key)
        if len(calls) == 2:
            raise Crash()

    with pytest.raises(Crash):
        _deliver(settings, transport=Recorder(Sink(), before=crash_on_second_batch))
    with SubscriberStore.open(settings.db_path) as store:  # the reader changes language meanwhile
        store.set_lang("zhcn@example.org", "fr")
        store.set_lang("en@example.org", "zh")
    did, report, sink = _deliver(settings)
    assert report.state == "done"
    assert _ledger_editions(settings, did) == {a: e for a, _, e in READERS}
    for address, _, edition in READERS:
        if address in sink.messages:
            assert sink.messages[address].prepared.rendered.edition == edition


def test_a_changed_edition_is_a_changed_issue_for_a_delivery_under_way(settings):
    eds = _editions(settings)
    one = prepare_editions(settings, eds, render_editions(eds, settings, only=MAIN))
    assert one.rendered.content_hash == one.main.rendered.content_hash  # one edition: the hash it always had
    both = prepare_editions(settings, eds, render_editions(eds, settings))
    assert both.rendered.content_hash != one.rendered.content_hash
    _add_readers(settings, READERS[:1])
    conn = open_ledger(settings.db_path)
    try:
        start_or_resume(conn, both)
        path = settings.issues_dir / ZH
        path.write_text(path.read_text(encoding="utf-8").replace("中文测试期到此结束。", "中文测试期到此结束！"),
                        encoding="utf-8")
        eds = _editions(settings)
        changed = prepare_editions(settings, eds, render_editions(eds, settings))
        with pytest.raises(ContentChangedError):
            start_or_resume(conn, changed)
    finally:
        conn.close()


def test_status_shows_the_readers_of_each_edition(root, settings):
    _add_readers(settings)
    _deliver(settings)
    result = CliRunner().invoke(cli, ["--root", str(root), "status", "8"])
    assert result.exit_code == 0, result.output
    assert "editions: en 4 (4 sent); zh-Hans 3 (3 sent)" in result.output


# ---- readers' languages -------------------------------------------------------------------------------
def test_subscribers_add_lang_sets_and_checks_the_language(root, settings):
    runner = CliRunner()
    ok = runner.invoke(cli, ["--root", str(root), "subscribers", "add", "a@example.org", "--lang", "zh_hans"])
    assert ok.exit_code == 0 and "(zh-Hans)" in ok.output
    bad = runner.invoke(cli, ["--root", str(root), "subscribers", "add", "b@example.org", "--lang", "zh Hans!"])
    assert bad.exit_code != 0 and "not a language tag" in bad.output
    with SubscriberStore.open(settings.db_path) as store:
        assert store.get_by_email("a@example.org").lang == "zh-Hans"
        assert store.get_by_email("b@example.org") is None  # nothing changed
        assert store.add("a@example.org").lang == "zh-Hans"  # no --lang: kept
        assert store.add("a@example.org", lang="").lang == ""


def test_csv_import_and_export_carry_the_language(tmp_path, settings):
    from newsletter.csvio import export_csv, import_csv
    import io

    csv_path = tmp_path / "list.csv"
    csv_path.write_text("email,name,lang\na@example.org,A,zh-CN\nb@example.org,B,\nc@example.org,C,zh Hans!\n",
                        encoding="utf-8")
    with SubscriberStore.open(settings.db_path) as store:
        store.add("b@example.org", lang="fr")
        report = import_csv(store, csv_path)
        assert report.added == 1 and [line for line, _ in report.errors] == [4]
        assert store.get_by_email("a@example.org").lang == "zh-CN"
        assert store.get_by_email("b@example.org").lang == "fr"  # an empty cell keeps the stored language
        out = io.StringIO()
        export_csv(store, out)
    rows = out.getvalue().splitlines()
    assert rows[0].endswith(",lang") and any(r.startswith("a@example.org,") and r.endswith(",zh-CN") for r in rows)
    exported = tmp_path / "export.csv"
    exported.write_text(out.getvalue(), encoding="utf-8")
    with SubscriberStore.open(tmp_path / "restored.db") as restored:  # export → import restores the language
        import_csv(restored, exported)
        assert {s.email: s.lang for s in restored.iter_subscribers()} == {
            "a@example.org": "zh-CN", "b@example.org": "fr"}


def test_the_live_preview_shows_an_edition_and_watches_its_main_edition(settings):
    from newsletter.preview import PreviewServer

    server = PreviewServer(settings, settings.issues_dir / ZH, log=lambda m: None)
    assert server.state.error == "" and server.state.last_good.lang == "zh-Hans"
    assert "双语测试期" in server.state.page
    assert settings.issues_dir / MAIN_FILE in server.watched()


@pytest.mark.parametrize("limit", [1, 2, 200])
def test_every_language_is_matched_however_many_there_are(monkeypatch, settings, limit):
    """The freeze matches languages in one CASE of up to _CASE_LIMIT; more are set in chunks after."""
    from newsletter import ledger

    monkeypatch.setattr(ledger, "_CASE_LIMIT", limit)
    readers = READERS + [("sg@example.org", "zh-SG", "zh-Hans"), ("hanscn@example.org", "zh-Hans-CN", "zh-Hans")]
    _add_readers(settings, readers)
    did, report, _ = _deliver(settings)
    assert report.state == "done"
    assert _ledger_editions(settings, did) == {a: e for a, _, e in readers}
