"""Pre-flight checks: each one made to fail by one change to a clean fixture, and to pass without it."""

from __future__ import annotations

import dataclasses
import http.server
import socket
import threading
from pathlib import Path
from typing import Callable, Iterator

import pytest

from newsletter.checks import Finding, run_checks
from newsletter.checks.contrast import contrast_ratio, parse_color
from newsletter.checks.css import parse_stylesheet
from newsletter.config import Settings, load_settings
from newsletter.render import RenderedEmail, render_issue

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CLEAN = FIXTURES / "007-clean.md"
# A sender that is not a reserved example domain, with one-click unsubscribe enabled.
GOOD_ENV = {"NEWSLETTER_FROM": "news@chinaffairs-plus.org", "NEWSLETTER_BASE_URL": "https://chinaffairs-plus.org",
            "NEWSLETTER_REPLY_TO": "editors@chinaffairs-plus.org"}
# Without a base URL the masthead has no home-page link (which the shipped text template leaves out).
NO_BASE_ENV = {k: v for k, v in GOOD_ENV.items() if k != "NEWSLETTER_BASE_URL"}


def findings_for(settings: Settings, path: Path, *, online: bool = False,
                 mutate: Callable[[RenderedEmail], RenderedEmail] | None = None) -> list[Finding]:
    rendered = render_issue(path, settings)
    if mutate is not None:
        rendered = mutate(rendered)
    return run_checks(settings, rendered, online=online)


def having(findings: list[Finding], code: str) -> list[Finding]:
    return [f for f in findings if f.code == code]


@pytest.fixture
def root(publication_root: Path) -> Path:
    """The repo's publication plus the clean fixture issue as 007-clean.md."""
    (publication_root / "issues" / CLEAN.name).write_text(CLEAN.read_text(encoding="utf-8"), encoding="utf-8")
    return publication_root


def clean_path(root: Path) -> Path:
    return root / "issues" / CLEAN.name


def edit_clean(root: Path, old: str, new: str) -> Path:
    path = clean_path(root)
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def test_clean_fixture_has_no_errors_or_warnings_of_its_own(root):
    findings = findings_for(load_settings(root, environ=GOOD_ENV), clean_path(root))
    problems = [f.format() for f in findings if f.level != "info"]
    assert problems == []
    # The masthead's home-page link is in the plain text too.
    assert having(findings, "text.link-missing") == []


@pytest.mark.parametrize("environ", [{}, {"NEWSLETTER_BASE_URL": "https://chinaffairs.example"}])
def test_issue6_passes_with_no_errors(publication_root, environ):
    settings = load_settings(publication_root, environ=environ)
    findings = findings_for(settings, publication_root / "issues" / "006-global-governance-of-ai.md")
    assert [f.format() for f in findings if f.level == "error"] == []


# ---- Finding -------------------------------------------------------------------------
def test_finding_formats_as_one_line():
    assert Finding("error", "x.y", "bad", "issues/a.md", 3).format() == "issues/a.md:3: error: bad [x.y]"
    assert Finding("warning", "x.y", "meh", "issues/a.md").format() == "issues/a.md: warning: meh [x.y]"
    assert Finding("info", "x.y", "fyi").format() == "info: fyi [x.y]"
    assert Finding("info", "x.y", "fyi").as_dict() == {"level": "info", "code": "x.y", "message": "fyi",
                                                        "path": None, "line": None}
    with pytest.raises(ValueError):
        Finding("fatal", "x.y", "no such level")


def test_errors_come_first(root):
    path = edit_clean(root, "The end.", "The end. TODO")
    levels = [f.level for f in findings_for(load_settings(root, environ={}), path)]
    assert levels == sorted(levels, key=["error", "warning", "info"].index) and levels[0] == "error"


# ---- Source-level checks: one edit to the clean issue makes exactly that check fail ----
SOURCE_CASES = [
    # (id, old, new, code, level, line of the finding in the edited file or None)
    ("no-subtitle", "subtitle: Every pre-flight check passes on this issue; the tests change one thing at a time "
     "to make each fail.\n", "", "frontmatter.subtitle", "warning", 1),
    ("no-writers", "  - role: Writers\n    people:\n      - {name: DOE Jane, affiliation: Example University}\n"
     "      - {name: ROE Richard, affiliation: Example University}\n", "", "frontmatter.writers", "info", 8),
    ("date-too-old", "date: 2025-04-01", "date: 1985-04-01", "frontmatter.date", "warning", 6),
    ("date-far-ahead", "date: 2025-04-01", "date: 2999-04-01", "frontmatter.date", "warning", 6),
    ("number-not-filename", "number: 7", "number: 8", "frontmatter.number-filename", "warning", 2),
    ("number-reused", "number: 7", "number: 6", "frontmatter.number-reused", "error", 2),
    ("slug-reused", "date: 2025-04-01", "date: 2025-04-01\nslug: global-governance-of-ai",
     "frontmatter.slug-reused", "error", 7),
    ("heading-skip", "### DOE Jane: An Article Title\n\nThe article's text.\n\n", "", "content.heading-skip",
     "warning", 26),
    ("heading-h1", "## Background", "# Background", "content.heading-h1", "warning", 20),
    ("todo", "The end.", "The end. TODO: check the figures.", "content.leftover", "error", 38),
    ("tktk", "The end.", "The end, TKTK.", "content.leftover", "error", 38),
    ("unknown-placeholder", "The end.", "Dear %%FIRSTNAME%%.", "content.leftover", "error", 38),
    ("jinja-syntax", "The end.", "Dear {{ name }}.", "content.leftover", "error", 38),
    ("mjml-syntax", "The end.", "`<mj-text>` was left here.", "content.leftover", "error", 38),
    ("http-link", "https://example.org/report", "http://example.org/report", "links.insecure", "warning", 22),
    ("relative-link", "https://example.org/report", "report.html", "links.malformed", "error", 22),
    ("bad-port", "https://example.org/report", "https://example.org:99999/report", "links.malformed", "error", 22),
    ("no-domain", "https://example.org/report", "https://intranet/report", "links.malformed", "error", 22),
    ("bad-mailto", "The end.", "Write to [us](mailto:not-an-address).", "links.malformed", "error", 38),
    ("click-here", "[report on AI governance]", "[click here]", "a11y.link-text", "warning", 22),
    ("here", "[report on AI governance]", "[here]", "a11y.link-text", "warning", 22),
    ("read-more", "[report on AI governance]", "[Read more]", "a11y.link-text", "warning", 22),
    ("image-no-width", "The end.", "![A chart of the summits](https://example.org/chart.png)", "content.img-width",
     "warning", 38),
    ("webp-image", "The end.", "![A chart of the summits](https://example.org/chart.webp)", "support.image-webp",
     "warning", 38),
    ("anchor-links", "The end.", "The end, [back to the top](#background).", "support.html-anchor-links", "warning", 38),
    ("long-subject", "title: A Clean Issue", "title: A Clean Issue Whose Title Runs On Far Longer Than Inboxes Show",
     "deliver.subject-length", "warning", 4),
    ("caps-subject", "title: A Clean Issue", "title: A CLEAN ISSUE ABOUT EVERYTHING", "deliver.subject-caps",
     "warning", 4),
    ("spam-subject", "title: A Clean Issue", "title: Act Now, Limited Time", "deliver.spam-phrase", "warning", 4),
    ("short-preheader", "subtitle: Every pre-flight check passes on this issue; the tests change one thing at a time "
     "to make each fail.", "subtitle: Short.", "deliver.preheader-length", "warning", None),
    ("long-preheader", "subtitle: Every", "subtitle: " + "Very long words " * 8 + "and every", "deliver.preheader-length",
     "warning", None),
]


@pytest.mark.parametrize("old, new, code, level, line", [c[1:] for c in SOURCE_CASES], ids=[c[0] for c in SOURCE_CASES])
def test_source_check_fails_on_its_fixture_and_passes_on_the_clean_one(root, old, new, code, level, line):
    settings = load_settings(root, environ=GOOD_ENV)
    assert having(findings_for(settings, clean_path(root)), code) == []
    found = having(findings_for(settings, edit_clean(root, old, new)), code)
    assert found, f"{code} not reported"
    assert found[0].level == level
    assert found[0].path == f"issues/{CLEAN.name}"
    assert found[0].line == line, found[0].format()


def test_footnotes_raise_no_finding_about_the_tools_own_output(root):
    """Footnotes render as plain numbered notes in the email: no #fn anchors, no <section>."""
    path = edit_clean(root, "The end.", "The end.[^1]\n\n[^1]: A note.")
    found = findings_for(load_settings(root, environ=GOOD_ENV), path)
    assert [f.format() for f in found if f.code.startswith("support.")] == []


# ---- Output-level checks: a change to settings, templates or the rendered email ------------
def _inject_body(html: str) -> Callable[[RenderedEmail], RenderedEmail]:
    return lambda r: dataclasses.replace(r, html=r.html.replace("</body>", html + "</body>", 1))


def _pad_html(kb: int) -> Callable[[RenderedEmail], RenderedEmail]:
    def pad(r: RenderedEmail) -> RenderedEmail:
        missing = kb * 1024 - len(r.html.encode("utf-8"))
        return dataclasses.replace(r, html=r.html.replace("</body>", f"<!--{'x' * missing}--></body>", 1))

    return pad


OUTPUT_CASES = [
    # (id, mutate the rendered email, code, level); the unmutated clean issue passes each.
    ("img-no-alt", _inject_body('<img src="https://example.org/logo.png" width="100">'), "a11y.img-alt", "error"),
    ("img-no-width", _inject_body('<img src="https://example.org/logo.png" alt="Logo">'), "content.img-width", "warning"),
    ("no-lang", lambda r: dataclasses.replace(r, html=r.html.replace('<html lang="en"', "<html", 1)), "a11y.lang", "error"),
    ("clipped", _pad_html(103), "size.gmail-clip", "error"),
    ("near-clip", _pad_html(95), "size.gmail-clip", "warning"),
    ("no-text", lambda r: dataclasses.replace(r, text=""), "text.missing", "error"),
    ("short-text", lambda r: dataclasses.replace(r, text=r.text[:200] + "\n%%UNSUBSCRIBE_URL%%\n"), "text.short", "warning"),
    ("link-not-in-text", lambda r: dataclasses.replace(r, text=r.text.replace("https://example.org/report", "")),
     "text.link-missing", "warning"),
]


@pytest.mark.parametrize("mutate, code, level", [c[1:] for c in OUTPUT_CASES], ids=[c[0] for c in OUTPUT_CASES])
def test_output_check_fails_on_its_fixture_and_passes_on_the_clean_one(root, mutate, code, level):
    settings = load_settings(root, environ=NO_BASE_ENV)
    found = having(findings_for(settings, clean_path(root)), code)
    assert [f for f in found if f.level != "info"] == []
    found = having(findings_for(settings, clean_path(root), mutate=mutate), code)
    assert found and found[0].level == level, [f.format() for f in found]


def test_image_with_alt_and_width_passes(root):
    mutate = _inject_body('<img src="https://example.org/logo.png" alt="Logo" width="100">')
    findings = findings_for(load_settings(root, environ=GOOD_ENV), clean_path(root), mutate=mutate)
    assert having(findings, "a11y.img-alt") == having(findings, "content.img-width") == []


def test_size_is_reported_as_a_note(root):
    (note,) = having(findings_for(load_settings(root, environ=GOOD_ENV), clean_path(root)), "size.message")
    assert note.level == "info" and "KB" in note.message


@pytest.mark.parametrize("environ, code, level", [
    ({"NEWSLETTER_TEXT_COLOR": "#b0b0b0"}, "a11y.contrast", "error"),
    ({"NEWSLETTER_FROM": "news@chinaffairs.example"}, "deliver.example-domain", "warning"),
    ({"NEWSLETTER_REPLY_TO": "someone@tsinghua.edu.cn"}, "deliver.reply-to-domain", "info"),
    ({"NEWSLETTER_BASE_URL": ""}, "deliver.one-click", "warning"),
    ({"NEWSLETTER_BASE_URL": "http://chinaffairs-plus.org"}, "deliver.one-click", "warning"),
], ids=["low-contrast", "example-domain", "reply-to-elsewhere", "no-base-url", "http-base-url"])
def test_settings_check_fails_on_its_setting(root, environ, code, level):
    assert having(findings_for(load_settings(root, environ=GOOD_ENV), clean_path(root)), code) == []
    found = having(findings_for(load_settings(root, environ={**GOOD_ENV, **environ}), clean_path(root)), code)
    assert found and found[0].level == level


def test_contrast_names_the_colours(root):
    settings = load_settings(root, environ={**GOOD_ENV, "NEWSLETTER_TEXT_COLOR": "#b0b0b0"})
    messages = [f.message for f in having(findings_for(settings, clean_path(root)), "a11y.contrast")]
    # Body text needs 4.5:1; the large masthead heading only 3:1 (WCAG "large text").
    assert any("#b0b0b0 on #ffffff" in m and "AA's 4.5:1" in m for m in messages)
    assert any("AA's 3:1 (e.g. \u201c#7 Test Notes: A Clean Issue" in m for m in messages)


def test_dark_mode_contrast_uses_the_dark_rules(root):
    css = root / "templates" / "email.css.j2"
    settings = load_settings(root, environ=GOOD_ENV)
    assert having(findings_for(settings, clean_path(root)), "a11y.contrast-dark") == []
    css.write_text(css.read_text(encoding="utf-8").replace("color: #ebe7e0 !important", "color: #3a3a3a !important"),
                   encoding="utf-8")
    found = having(findings_for(settings, clean_path(root)), "a11y.contrast-dark")
    assert found and found[0].level == "error" and "#3a3a3a on #1c1c1e" in found[0].message
    # ...and light mode is untouched by the dark rules.
    assert having(findings_for(settings, clean_path(root)), "a11y.contrast") == []


def test_postal_address_missing_from_settings(root):
    toml = root / "newsletter.toml"
    toml.write_text("\n".join(line for line in toml.read_text(encoding="utf-8").splitlines()
                              if not line.startswith("postal_address")), encoding="utf-8")
    found = having(findings_for(load_settings(root, environ=GOOD_ENV), clean_path(root)), "deliver.postal-address")
    assert found and found[0].level == "error" and found[0].path == "newsletter.toml"


def test_postal_address_missing_from_the_template(root):
    mjml = root / "templates" / "email.mjml.j2"
    mjml.write_text(mjml.read_text(encoding="utf-8").replace("{{ pub.postal_address }}", ""), encoding="utf-8")
    found = having(findings_for(load_settings(root, environ=GOOD_ENV), clean_path(root)), "deliver.postal-address")
    assert found and found[0].level == "error" and "HTML" in found[0].message


@pytest.mark.parametrize("strip, code, level", [
    (b"List-Unsubscribe-Post:", "deliver.one-click", "error"),
    (b"List-Unsubscribe:", "deliver.list-unsubscribe", "error"),
])
def test_unsubscribe_headers_are_required(root, monkeypatch, strip, code, level):
    from newsletter.message import OutgoingMessage

    settings = load_settings(root, environ=GOOD_ENV)
    assert having(findings_for(settings, clean_path(root)), code) == []
    original = OutgoingMessage.as_bytes

    def without_header(self: OutgoingMessage) -> bytes:
        head, sep, body = original(self).partition(b"\r\n\r\n")
        kept, skipping = [], False
        for line in head.split(b"\r\n"):
            skipping = line.startswith(strip) or (skipping and line[:1] in (b" ", b"\t"))
            if not skipping:
                kept.append(line)
        return b"\r\n".join(kept) + sep + body

    monkeypatch.setattr(OutgoingMessage, "as_bytes", without_header)
    found = having(findings_for(settings, clean_path(root)), code)
    assert found and found[0].level == level


def test_template_css_the_defaults_do_not_use_is_reported_with_its_line(root):
    css = root / "templates" / "email.css.j2"
    settings = load_settings(root, environ=GOOD_ENV)
    assert [f for f in findings_for(settings, clean_path(root)) if f.code.startswith("support.")] == []
    lines = css.read_text(encoding="utf-8").splitlines()
    n = next(i for i, line in enumerate(lines) if line.startswith(".nl-text h2 {"))
    lines[n] = lines[n].replace("{", "{ box-shadow: 0 1px 2px #000;", 1)
    css.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (found,) = having(findings_for(settings, clean_path(root)), "support.css-box-shadow")
    assert found.level == "warning" and found.path == "templates/email.css.j2" and found.line == n + 1
    assert "Outlook (Windows" in found.message and "caniemail.com/features/css-box-shadow" in found.message


# ---- Links online, against a server on 127.0.0.1 --------------------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    hits: list[tuple[str, str]] = []

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self) -> None:
        self.hits.append((self.command, self.path))
        routes = {"/ok": 200, "/missing": 404, "/gone": 410, "/forbidden": 403, "/broken-server": 500}
        if self.path == "/head-refused":
            status = 405 if self.command == "HEAD" else 200
        elif self.path.startswith("/redirect-to"):
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/redirect-to"))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        else:
            status = routes.get(self.path, 404)
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(b"ok")

    do_HEAD = do_GET = _answer


@pytest.fixture
def link_server() -> Iterator[str]:
    _Handler.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections (in the kernel's backlog) and never answers: every read times out."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/never"
    sock.close()


@pytest.mark.parametrize("path, level, needle", [
    ("/ok", None, ""),
    ("/head-refused", None, ""),
    ("/redirect-to/ok", None, ""),
    ("/missing", "error", "404"),
    ("/gone", "error", "410"),
    ("/redirect-to/missing", "error", "404"),
    ("/forbidden", "warning", "403"),
    ("/broken-server", "warning", "500"),
])
def test_probe_classifies_answers(link_server, path, level, needle):
    from newsletter.checks.links import probe

    result = probe(link_server + path, timeout=10)
    assert result.level == level and needle in result.message


def test_head_refused_falls_back_to_get(link_server):
    from newsletter.checks.links import probe

    assert probe(link_server + "/head-refused").level is None
    assert _Handler.hits == [("HEAD", "/head-refused"), ("GET", "/head-refused")]


def test_a_server_that_never_answers_times_out(silent_server):
    from newsletter.checks.links import probe

    result = probe(silent_server, timeout=0.5)
    assert result.level == "warning" and "did not answer" in result.message


def test_online_check_reports_broken_links_with_their_lines(root, link_server):
    path = edit_clean(root, "https://example.org/report", f"{link_server}/missing")
    edit_clean(root, "https://example.org/declaration", f"{link_server}/ok")
    settings = load_settings(root, environ=GOOD_ENV)
    assert having(findings_for(settings, path), "links.broken") == [] and _Handler.hits == []  # offline by default
    (broken,) = having(findings_for(settings, path, online=True), "links.broken")
    assert broken.level == "error" and broken.line == 22 and "/missing is broken: 404" in broken.message
    assert sorted(p for _, p in _Handler.hits) == ["/missing", "/ok"]  # each unique link once


def test_concurrency_is_bounded_at_eight(monkeypatch):
    from newsletter.checks import links

    barrier = threading.Barrier(links.WORKERS, timeout=10)
    lock = threading.Lock()
    active = [0, 0]  # now, most

    def fake_probe(url: str, timeout: float = 0) -> links.LinkResult:
        with lock:
            active[0] += 1
            active[1] = max(active[1], active[0])
        barrier.wait()  # passes only when exactly WORKERS probes run at once
        with lock:
            active[0] -= 1
        return links.LinkResult(url, None)

    monkeypatch.setattr(links, "probe", fake_probe)
    results = links.probe_all([f"https://example.org/{i}" for i in range(2 * links.WORKERS)])
    assert len(results) == 2 * links.WORKERS and active[1] == links.WORKERS == 8


# ---- Building blocks ------------------------------------------------------------------------
@pytest.mark.parametrize("text, rgba", [
    ("#fff", (255, 255, 255, 1.0)), ("#1F2328", (31, 35, 40, 1.0)), ("rgb(0, 128, 255)", (0, 128, 255, 1.0)),
    ("rgba(0,0,0,0.5)", (0, 0, 0, 0.5)), ("white", (255, 255, 255, 1.0)), ("#12", None), ("inherit", None),
])
def test_parse_color(text, rgba):
    assert parse_color(text) == rgba


def test_contrast_ratio_matches_wcag_examples():
    white, black = parse_color("#fff"), parse_color("#000")
    assert contrast_ratio(white, black) == pytest.approx(21)
    assert contrast_ratio(parse_color("#767676"), white) == pytest.approx(4.54, abs=0.01)  # the lightest AA grey
    assert contrast_ratio(parse_color("#777777"), white) < 4.5


def test_stylesheet_parser_keeps_media_and_at_rules():
    rules, at_rules = parse_stylesheet(
        "@import url(x.css); /* c */ p { color: red } @media (prefers-color-scheme: dark) "
        "{ .a, .b { color: #fff !important; background: #000 } } @font-face { font-family: X }")
    assert at_rules == ["@import url(x.css)", "@media (prefers-color-scheme: dark)", "@font-face"]
    assert [(r.selector, r.media) for r in rules] == [("p", ""), (".a, .b", "@media (prefers-color-scheme: dark)")]
    assert rules[1].declarations[0].important and rules[1].declarations[1].value == "#000"


def test_caniemail_snapshot_is_shipped_with_its_licence_and_source():
    from newsletter.checks import caniemail

    data = caniemail.load()
    folder = caniemail.DATA.parent
    assert "MIT" in (folder / "LICENSE").read_text(encoding="utf-8")
    assert "caniemail@2.0.2" in (folder / "SOURCE.md").read_text(encoding="utf-8")
    assert data["features"]["css-box-shadow"]["support"]["outlook"]["windows"] == "n"
    assert data["features"]["css-display-flex"]["match"] == {"declaration": ["display", "flex"]}


def test_caniemail_trim_keeps_matchers_and_newest_support():
    from newsletter.checks.caniemail import trim

    raw = {"api_version": "1", "last_update_date": "2026-01-01", "nicenames": {"family": {"gmail": "Gmail"}},
           "data": [
               {"slug": "css-box-shadow", "title": "box-shadow", "url": "u", "category": "css", "keywords": None,
                "stats": {"gmail": {"ios": {"2019": "n", "2023": "a #1"}}, "aol": {"ios": {"2019": "y"}}}},
               {"slug": "css-pseudo-class-hover", "title": ":hover", "url": "u", "category": "css", "keywords": "",
                "stats": {}},
               {"slug": "html-del", "title": "<del> element", "url": "u", "category": "html", "keywords": None,
                "stats": {"outlook": {"windows": {"2019": "y"}}}},
           ]}
    data = trim(raw)
    assert set(data["features"]) == {"css-box-shadow", "html-del"}
    assert data["features"]["css-box-shadow"]["support"] == {"gmail": {"ios": "a"}}
    assert data["features"]["html-del"]["match"] == {"elements": ["del"]}


# ---- the SMTP EHLO name (issue 22 #10) --------------------------------------------------------
@pytest.mark.parametrize("name, warned", [
    ("localhost", True), ("vm", True), ("mail.local", True), ("box.localdomain", True), ("host.lan", True),
    ("mail.chinaffairs-plus.org", False), ("mx1.example.net.", False), ("[192.0.2.1]", False), ("a..b", True),
])
def test_check_warns_when_the_ehlo_name_is_not_fully_qualified(root, name, warned):
    env = {**GOOD_ENV, "NEWSLETTER_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_HELO_NAME": name}
    found = having(findings_for(load_settings(root, environ=env), clean_path(root)), "deliver.helo-name")
    assert bool(found) is warned and all(f.level == "warning" for f in found)
    if warned:
        assert "504 5.5.2" in found[0].message and "SMTP_HELO_NAME" in found[0].message


def test_check_judges_this_hosts_own_name_when_no_ehlo_name_is_set(root, monkeypatch):
    import socket

    env = {**GOOD_ENV, "NEWSLETTER_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1"}
    for fqdn, warned in (("vm", True), ("news.chinaffairs-plus.org", False)):
        monkeypatch.setattr(socket, "getfqdn", lambda *a, fqdn=fqdn: fqdn)
        found = having(findings_for(load_settings(root, environ=env), clean_path(root)), "deliver.helo-name")
        assert bool(found) is warned and (not warned or "socket.getfqdn()" in found[0].message)
    # Another transport sends no EHLO of ours: nothing to say.
    assert having(findings_for(load_settings(root, environ=GOOD_ENV), clean_path(root)), "deliver.helo-name") == []
