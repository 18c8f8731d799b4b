"""What a new editor meets in a half hour: footnotes, the heading, images, raw HTML, the
preheader, drafts and the archive, `init`, the plain text. Fixture publications in tmp."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess

import lxml.html
import pytest

from newsletter.archive import build_archive, load_entries, publishing
from newsletter.checks import run_checks
from newsletter.config import load_settings
from newsletter.content import parse_body
from newsletter.errors import InputError
from newsletter.issue import parse_issue
from newsletter.render import render_issue
from newsletter.scaffold import init_publication, new_issue
from tests.editor_fixtures import NEWCOMER_BODY, make_publication, write_issue

TODAY = dt.date(2025, 4, 1)
GOOD_ENV = {"NEWSLETTER_FROM": "news@chinaffairs.org", "NEWSLETTER_BASE_URL": "https://news.chinaffairs.org",
            "NEWSLETTER_SECRET_KEY": "a-test-secret-key-0123456789"}


@pytest.fixture
def pub(tmp_path):
    root, path = make_publication(tmp_path)
    return load_settings(root, environ=GOOD_ENV), path


def html_of(settings, path) -> lxml.html.HtmlElement:
    return lxml.html.document_fromstring(render_issue(path, settings).html)


# ---- 3. footnotes -------------------------------------------------------------------------
def test_email_footnotes_read_without_anchors_and_the_archive_keeps_them(pub, tmp_path):
    settings, path = pub
    doc = html_of(settings, path)
    assert doc.xpath("//a[starts-with(@href, '#')]") == []  # no local anchors in the email
    assert [s.text_content() for s in doc.xpath("//sup")] == ["[1]", "[2]"]
    notes = doc.xpath("//ol[contains(@class, 'footnotes-list')]/li")
    assert [n.text_content().strip() for n in notes] == ["Both at Tsinghua University.", "Published in Chinese in 2024."]
    assert doc.xpath("//section") == []  # Outlook for Windows does not know <section>

    site = tmp_path / "site"
    build_archive(settings, site, today=TODAY, sent=set())
    page = lxml.html.parse(str(site / "issues" / "trade-and-the-global-south" / "index.html")).getroot()
    assert page.xpath("//sup//a/@href") == ["#fn1", "#fn2"]
    assert len(page.xpath("//li[@id='fn1']//a[@href='#fnref1']")) == 1


def test_check_reports_nothing_the_editor_cannot_act_on(pub):
    """The newcomer's issue (a table, footnotes, an image with a width, CJK names) on a
    configured publication: no warning at all, and none about the tool's own templates."""
    settings, path = pub
    findings = run_checks(settings, render_issue(path, settings))
    assert [f.format() for f in findings if f.level != "info"] == []
    assert not any("templates" in (f.path or "") for f in findings)


# ---- 4. the heading -----------------------------------------------------------------------
def test_the_kicker_does_not_repeat_the_heading(pub):
    settings, path = pub
    rendered = render_issue(path, settings)
    doc = lxml.html.document_fromstring(rendered.html)
    kicker = doc.xpath("string(//p[@class='nl-kicker'])")
    assert doc.xpath("string(//h1)") == "#7 China Scholar Insights: Trade and the Global South"
    assert kicker.strip() == "1 April 2025"
    head = rendered.text.split("Trade and the Global South")[0]
    assert "No. 7" not in rendered.text and head.count("China Scholar Insights") == 1


# ---- 6. images and raw HTML ---------------------------------------------------------------
def test_an_image_takes_its_width_from_the_markdown(pub):
    settings, path = pub
    img = html_of(settings, path).xpath("//img[contains(@class, 'nl-img')]")[0]
    style = img.get("style").replace(" ", "")
    assert img.get("width") == "560" and "max-width:560px" in style and "width:100%" in style
    assert img.get("alt") == "A chart of tariffs by year"


def test_an_image_without_width_gets_a_warning_that_says_how(tmp_path):
    root, path = make_publication(tmp_path, "Text.\n\n![A chart](https://example.org/c.png)\n")
    settings = load_settings(root, environ=GOOD_ENV)
    found = [f for f in run_checks(settings, render_issue(path, settings)) if f.code == "content.img-width"]
    assert len(found) == 1 and "{width=600}" in found[0].message and found[0].line == 15


@pytest.mark.parametrize("body, line, words", [
    ("Text.\n\nA chart: <img src=\"https://example.org/c.png\" width=600>\n", 15, ["<img", "{width=600}"]),
    ("Text.\n\n<div align=center>\nHello\n</div>\n", 15, ["<div"]),
    ("Text.\n\n![A chart](https://example.org/c.png){width=wide}\n", 15, ["width", "1 to 2000"]),
    ("Text.\n\n![A chart](https://example.org/c.png){onerror=x}\n", 15, ["onerror", "not supported"]),
])
def test_what_would_show_as_literal_text_is_refused_with_its_line(tmp_path, body, line, words):
    root, path = make_publication(tmp_path, body)
    with pytest.raises(InputError) as err:
        render_issue(path, load_settings(root, environ={}))
    assert err.value.line == line and all(w in err.value.message for w in words), err.value.format_message()
    assert "\n" not in err.value.format_message()


def test_code_spans_and_autolinks_are_not_raw_html():
    html = "".join(b.html for b in parse_body("Write `<img>` or see <https://example.org/x>.\n").blocks)
    assert "&lt;img&gt;" in html and 'class="nl-url"' in html


# ---- 11. the preheader --------------------------------------------------------------------
def test_the_preheader_is_hidden_without_a_text_colour(pub):
    settings, path = pub
    doc = html_of(settings, path)
    hidden = [d for d in doc.xpath("//body//div") if "display:none" in (d.get("style") or "").replace(" ", "")]
    assert len(hidden) == 1 and hidden[0].text_content().startswith("Chinese scholars on tariffs")
    style = hidden[0].get("style").replace(" ", "")
    assert "color" not in style and "mso-hide:all" in style and "max-height:0" in style


# ---- 14. the plain text -------------------------------------------------------------------
def test_plain_text_says_what_is_struck_out_and_curls_straight_quotes(tmp_path):
    root, path = make_publication(tmp_path, 'Notes ~~no~~ some. He said "it\'s done" in `"code"`.\n')
    text = render_issue(path, load_settings(root, environ={})).text
    assert "Notes [struck out: no] some." in text and "~~" not in text
    assert "He said “it’s done” in \"code\"." in text


# ---- 5. drafts and the archive ------------------------------------------------------------
def test_status_is_draft_or_ready_and_defaults_to_ready(tmp_path):
    root, path = make_publication(tmp_path, "Text.\n", extra="status: draft\n")
    assert parse_issue(path).is_draft
    path = write_issue(root, "Text.\n", number=8, slug="b")
    assert parse_issue(path).status == "ready"
    path = write_issue(root, "Text.\n", number=9, slug="c", extra="status: done\n")
    with pytest.raises(InputError) as err:
        parse_issue(path)
    assert err.value.line == 11 and "draft or ready" in err.value.message


def test_new_scaffolds_a_draft_the_archive_leaves_out(tmp_path):
    root, _ = make_publication(tmp_path, "Text.\n", extra="status: ready\n", date="2025-03-01")
    settings = load_settings(root, environ={})
    path = new_issue(settings.issues_dir, "Half written", today=TODAY)
    assert parse_issue(path).is_draft
    assert [e.issue.number for e in load_entries(settings, TODAY, sent=set())] == [7]


@pytest.mark.parametrize("status, date, sent, published", [
    ("draft", TODAY, False, False),
    ("ready", TODAY, False, True),
    ("ready", TODAY + dt.timedelta(days=1), False, False),
    ("ready", TODAY + dt.timedelta(days=1), True, True),
    ("draft", TODAY + dt.timedelta(days=1), True, True),
])
def test_published_once_ready_and_dated_or_once_sent(tmp_path, status, date, sent, published):
    root, path = make_publication(tmp_path, "Text.\n", extra=f"status: {status}\n", date=date.isoformat())
    issue = parse_issue(path)
    decision = publishing(issue, TODAY, sent)
    assert decision.published is published and decision.reason


def test_an_issue_sent_before_its_date_is_in_the_archive(tmp_path):
    """The real path: a delivery in a real SQLite ledger makes the archive publish the issue."""
    from tests.helpers import add_subscribers, make_prepared, send

    tomorrow = TODAY + dt.timedelta(days=1)
    root, path = make_publication(tmp_path, "Text.\n", extra="status: ready\n", date=tomorrow.isoformat())
    settings = load_settings(root, environ={"NEWSLETTER_DB": str(tmp_path / "news.db")})
    assert load_entries(settings, TODAY) == []
    add_subscribers(settings.db_path, 3)
    send(settings.db_path, make_prepared(slug="trade-and-the-global-south"))
    assert [e.issue.slug for e in load_entries(settings, TODAY)] == ["trade-and-the-global-south"]
    found = [f for f in run_checks(settings, render_issue(path, settings)) if f.code.startswith("archive.")]
    assert [(f.code, "sent" in f.message) for f in found] == [("archive.published", True)]


def test_check_says_what_the_archive_will_do(tmp_path):
    root, path = make_publication(tmp_path, "Text.\n", extra="status: draft\n")
    settings = load_settings(root, environ=GOOD_ENV)
    found = [f for f in run_checks(settings, render_issue(path, settings)) if f.code.startswith("archive.")]
    assert len(found) == 1 and found[0].code == "archive.held" and "draft" in found[0].message
    assert found[0].line == 11


# ---- 12. init -----------------------------------------------------------------------------
def test_init_keeps_secrets_and_subscribers_out_of_git(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path / "letter"
    init_publication(root)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    for name in (".env", "newsletter.db", "newsletter.db-wal", "newsletter.db.unsubscribe-spool", "dkim.pem"):
        (root / name).write_text("secret\n")
    status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=all"],
                            capture_output=True, text=True, check=True).stdout
    listed = {line[3:] for line in status.splitlines()}
    assert listed.isdisjoint({".env", "newsletter.db", "newsletter.db-wal", "newsletter.db.unsubscribe-spool", "dkim.pem"})
    assert {".gitignore", "newsletter.toml", ".env.example"} <= listed


def test_init_adds_to_an_existing_gitignore_once(tmp_path):
    root = tmp_path / "letter"
    root.mkdir()
    (root / ".gitignore").write_text("node_modules/\n.env\n")
    init_publication(root)
    lines = (root / ".gitignore").read_text().splitlines()
    assert lines[:2] == ["node_modules/", ".env"] and lines.count(".env") == 1 and "newsletter.db" in lines


def test_the_sample_postal_address_fails_check(tmp_path):
    root = tmp_path / "letter"
    init_publication(root)
    settings = load_settings(root, environ=GOOD_ENV)
    path = next(settings.issues_dir.glob("001-*.md"))
    found = [f for f in run_checks(settings, render_issue(path, settings)) if f.code == "deliver.postal-address"]
    assert len(found) == 1 and found[0].level == "error" and "sample" in found[0].message


def test_the_newcomer_issue_is_well_under_the_clip(pub):
    settings, path = pub
    html = render_issue(path, settings).html
    assert len(html.encode()) < 60_000 and "!important" in html and "@media" in html
    assert re.search(r'<html[^>]* lang="en"', html)


# ---- the commands: drafts refused, [TEST] copies, schedule list in the editor's zone -------
def newsletter(root, *args, **env):
    """The real command in a subprocess: exit codes and output exactly as an editor sees them."""
    import os
    import sys

    environ = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSLETTER_", "SMTP_"))}
    environ.update({"NEWSLETTER_TRANSPORT": "dryrun", "NEWSLETTER_SECRET_KEY": "a-test-secret-key-0123456789",
                    "NEWSLETTER_DB": str(root / "news.db"), **env})
    return subprocess.run([sys.executable, "-m", "newsletter", "--root", str(root), *args], env=environ,
                          capture_output=True, text=True, timeout=60)


def test_send_and_schedule_refuse_a_draft_but_a_test_copy_works(tmp_path):
    root, path = make_publication(tmp_path, "Text.\n", extra="status: draft\n")
    for args, env in ((("send", "7", "--yes"), {"NEWSLETTER_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1"}),
                      (("schedule", "7", "--at", "2031-03-10T09:00+08:00"), {})):
        result = newsletter(root, *args, **env)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert "007-trade-and-the-global-south.md:11:" in lines[0] and "draft" in lines[0]
    assert not (root / "news.db").exists() or "scheduled" not in newsletter(root, "schedule", "list").stdout

    result = newsletter(root, "send", "7", "--test", "editor@example.org")
    assert result.returncode == 0, result.stderr
    eml = next((root / "outbox").rglob("*.eml")).read_bytes()
    import email as email_lib
    from email import policy as email_policy

    msg = email_lib.message_from_bytes(eml, policy=email_policy.default)
    text = msg.get_body(("plain",)).get_content()
    assert msg["Subject"].startswith("[TEST] ")
    assert "This is a [TEST] copy for editor@example.org" in text and "because editor@example.org subscribed" not in text
    html = msg.get_body(("html",)).get_content()
    assert "[TEST] copy for editor@example.org" in html and "editor@example.org subscribed" not in html


def test_schedule_list_shows_the_time_in_the_zone_the_editor_wrote(tmp_path):
    root, path = make_publication(tmp_path, "Text.\n", extra="status: ready\nsend_at: 2031-03-10T09:00+08:00\n")
    result = newsletter(root, "schedule", "7", "--skip-checks")
    assert result.returncode == 0, result.stderr
    listed = newsletter(root, "schedule", "list")
    assert listed.returncode == 0 and "2031-03-10 09:00 +08:00 (01:00 UTC)" in listed.stdout, listed.stdout


def test_display_time_names_both_zones():
    from datetime import datetime, timedelta, timezone

    from newsletter.cli.formatting import display_time

    when = datetime(2031, 3, 9, 23, 30, tzinfo=timezone.utc)
    assert display_time(when, timezone(timedelta(hours=8))) == "2031-03-10 07:30 +08:00 (2031-03-09 23:30 UTC)"
    assert display_time(when, timezone.utc) == "2031-03-09 23:30 +00:00 (UTC)"
    assert display_time(None) == "-"


# ---- 13. the README tells the truth ---------------------------------------------------------
def test_every_newsletter_toml_key_is_documented_in_the_configuration_docs():
    from newsletter.config import Publication
    from tests.editor_fixtures import REPO

    readme = (REPO / "docs" / "production.md").read_text(encoding="utf-8")
    missing = [name for name in Publication._fields if f"`{name}`" not in readme]
    assert missing == []


def test_the_set_up_command_writes_the_files_the_readme_names(tmp_path):
    from tests.editor_fixtures import REPO

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    sentence = re.search(r"It writes `build/global-governance-of-ai/` \(([^)]*)\)", readme)
    assert sentence, "the README's set-up sentence moved"
    claimed = re.findall(r"`([^`]+)`", sentence.group(1))
    root = tmp_path / "pub"
    (root / "issues").mkdir(parents=True)
    shutil.copy(REPO / "newsletter.toml", root)
    shutil.copy(next((REPO / "issues").glob("006-*.md")), root / "issues")
    assert newsletter(root, "subscribers", "add", "reader@example.org", "--name", "Sample Reader").returncode == 0
    result = newsletter(root, "send", "6", "--dry-run")
    assert result.returncode == 0, result.stderr
    built = root / "build" / "global-governance-of-ai"
    assert claimed and [name for name in claimed if not (built / name).is_file()] == []
    assert len(list((root / "outbox" / "global-governance-of-ai").glob("*.eml"))) == 1


def test_an_image_error_names_the_line_of_the_image_not_of_its_paragraph(tmp_path):
    root, path = make_publication(tmp_path, "Text.\n\nA chart,\nthen ![](https://example.org/c.png)\n")
    with pytest.raises(InputError) as err:
        render_issue(path, load_settings(root, environ={}))
    assert err.value.line == 16 and "alt text" in err.value.message


def test_an_unreadable_database_is_a_warning_not_a_crash_of_check(tmp_path):
    root, path = make_publication(tmp_path, "Text.\n")
    (tmp_path / "news.db").write_bytes(b"this is not a database" * 100)
    settings = load_settings(root, environ={**GOOD_ENV, "NEWSLETTER_DB": str(tmp_path / "news.db")})
    found = [f for f in run_checks(settings, render_issue(path, settings)) if f.code.startswith("archive.")]
    assert [f.code for f in found] == ["archive.unknown"] and "\n" not in found[0].message


def test_a_publication_template_hiding_the_preheader_by_colour_is_warned_about(tmp_path):
    """A publication whose email.mjml.j2 predates the fix (it uses <mj-preview>) is told where."""
    from tests.editor_fixtures import REPO

    root, path = make_publication(tmp_path)
    (root / "templates").mkdir()
    shipped = (REPO / "templates" / "email.mjml.j2").read_text(encoding="utf-8")
    old = re.sub(r"\s*\{#- The preheader.*?\{% endif %\}\n", "\n", shipped, count=1, flags=re.S)
    old = old.replace("    <mj-title>", "    <mj-preview>{{ issue.preheader }}</mj-preview>\n    <mj-title>", 1)
    assert old != shipped and "nl-preheader" not in old
    (root / "templates" / "email.mjml.j2").write_text(old, encoding="utf-8")
    settings = load_settings(root, environ=GOOD_ENV)
    found = [f for f in run_checks(settings, render_issue(path, settings)) if f.code == "deliver.hidden-text-colour"]
    assert len(found) == 1 and found[0].path == "templates/email.mjml.j2"
    assert old.splitlines()[found[0].line - 1].strip().startswith("<mj-preview>")
    shutil.rmtree(root / "templates")  # the shipped template: nothing to say
    assert not [f for f in run_checks(settings, render_issue(path, settings)) if f.code == "deliver.hidden-text-colour"]


def test_a_gitignore_that_cannot_be_written_is_one_line(tmp_path):
    root = tmp_path / "letter"
    (root / ".gitignore").mkdir(parents=True)
    with pytest.raises(InputError) as err:
        init_publication(root)
    assert "cannot write .gitignore" in err.value.format_message() and "\n" not in err.value.format_message()


def test_a_scheduled_issue_set_back_to_draft_is_held_not_sent(tmp_path):
    """The worker's path: scheduled while ready, then made a draft again; dispatch holds it
    and says why. (The SMTP transport points at a closed port: nothing may be sent.)"""
    from datetime import datetime, timedelta, timezone

    due = (datetime.now(timezone.utc) - timedelta(minutes=1)).replace(microsecond=0)
    root, path = make_publication(tmp_path, "Text.\n", extra=f"status: ready\nsend_at: {due.isoformat()}\n")
    smtp = {"NEWSLETTER_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": "9", "SMTP_SECURITY": "none"}
    assert newsletter(root, "subscribers", "add", "reader@example.org").returncode == 0
    assert newsletter(root, "schedule", "7", "--skip-checks").returncode == 0
    path.write_text(path.read_text(encoding="utf-8").replace("status: ready", "status: draft"), encoding="utf-8")
    result = newsletter(root, "dispatch", **smtp)
    assert "draft" in result.stdout + result.stderr, result.stdout + result.stderr
    listed = newsletter(root, "schedule", "list").stdout
    assert "\theld" in listed, listed


def test_an_image_wider_than_the_email_is_a_warning(tmp_path):
    root, path = make_publication(tmp_path, "Text.\n\n![A chart](https://example.org/c.png){width=1200}\n")
    settings = load_settings(root, environ=GOOD_ENV)
    found = [f for f in run_checks(settings, render_issue(path, settings)) if f.code.startswith("content.img")]
    assert [(f.code, f.line) for f in found] == [("content.img-too-wide", 15)] and "{width=600}" in found[0].message
