"""Input that used to be lost silently, or to crash far from its cause, is refused with
``file:line: reason`` (exit 2, nothing written), or kept.

Issue files (duplicate keys, unknown credits keys, overlong fields, deep nesting, control
characters, RFC 2047 words), ``new`` with a hostile title, duplicate slugs, plain-name
credits, ``NEWSLETTER_FROM`` with a display name, ``NEWSLETTER_DB`` in a missing folder,
and ``check --online`` against a server that trickles its answer.
"""

from __future__ import annotations

import email
import os
import socket
import threading
from email import policy
from pathlib import Path
from typing import Iterator

import lxml.html
import pytest
from click.testing import CliRunner

from newsletter.cli import cli
from newsletter.config import load_settings
from newsletter.content import parse_body
from newsletter.errors import ConfigError, InputError
from newsletter.issue import CreditGroup, Person, find_issue, parse_issue

BASE_ENV = {"NEWSLETTER_TRANSPORT": "dryrun", "NEWSLETTER_SECRET_KEY": "test-secret"}
HEAD = "number: 7\ntitle: A title\ndate: 2025-04-01\n"


def run(root: Path, *args: str, env: dict | None = None):
    return CliRunner().invoke(cli, ["--root", str(root), *args], env={**BASE_ENV, **(env or {})})


def one_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def assert_refused(root: Path, path: Path, line: int | None, needle: str, *args: str) -> None:
    """`build` (or ARGS) exits 2 with one line `path:line: …needle…` and writes nothing."""
    result = run(root, *(args or ("build", "7")))
    assert result.exit_code == 2, result.output
    where = f"{path}:{line}: " if line else f"{path}:"
    text = one_line(result)
    assert where in text and needle in text, text
    assert written(root) == []


def written(root: Path) -> list[Path]:
    """Build output, not counting the renderer's template cache (build/.cache)."""
    return [p for p in (root / "build").rglob("*") if ".cache" not in p.relative_to(root / "build").parts]


def issue_file(root: Path, front: str, body: str = "Body.\n", name: str = "007-a-title.md") -> Path:
    path = root / "issues" / name
    path.write_text(f"---\n{front}---\n\n{body}", encoding="utf-8")
    return path


CREDITS = "credits:\n  - role: Writers\n    people:\n"

# ---- Issue files: each refused with file:line, exit 2, nothing built ------------------------
BAD_FRONT = [
    (HEAD + "title: Another title\n", 5, "'title' is given twice (first on line 3)"),
    (HEAD + CREDITS + "      - {name: A, name: B}\n", 8, "'name' is given twice"),
    (HEAD + CREDITS + "      - name: Alice\n        affilation: Tsinghua\n", 9,
     "unknown field 'affilation' in a credits person"),
    (HEAD + "credits:\n  - role: Writers\n    notes: x\n    people: [Alice]\n", 7,
     "unknown field 'notes' in a credits entry"),
    (HEAD.replace("A title", "T" * 2000), 3, "'title' is 2000 characters long; the limit is 200"),
    (HEAD + "subtitle: " + "s" * 301 + "\n", 5, "'subtitle' is 301 characters long; the limit is 300"),
    (HEAD + CREDITS + "      - {name: " + "n" * 201 + "}\n", 8, "'name' is 201 characters long"),
    (HEAD.replace("A title", "Hi=?utf-8?q?x=0D=0ABcc=3A_victim@example.org?="), 3, "RFC 2047 encoded-word"),
    (HEAD + "series: =?UTF-8?B?SGkNCkJjYzo=?=\n", 5, "RFC 2047 encoded-word"),
    (HEAD.replace("A title", "A\x0btitle"), 3, "control character U+000B"),
    (HEAD.replace("A title", "A\x1b[31mtitle"), 3, "control character U+001B"),
    (HEAD.replace("A title", '"A\\etitle"'), 3, "control character U+001B in 'title'"),  # YAML escapes
    (HEAD + CREDITS + '      - {name: "A\\x00B"}\n', 8, "control character U+0000 in 'name'"),
]


@pytest.mark.parametrize("front, line, needle", BAD_FRONT)
def test_bad_front_matter_is_refused_with_file_and_line(publication_root, front, line, needle):
    path = issue_file(publication_root, front)
    assert_refused(publication_root, path, line, needle)


@pytest.mark.parametrize("body, line, needle", [
    ("Fine.\n\nA \x00 in the body\n", 9, "control character U+0000"),
    ("Fine.\n\n" + "".join("  " * i + f"- level {i}\n" for i in range(9)), 17, "nested too deeply"),
    ("Intro.\n\n" + "> " * 17 + "quoted\n", 9, "nested too deeply"),
])
def test_bad_body_is_refused_with_file_and_line(publication_root, body, line, needle):
    path = issue_file(publication_root, HEAD, body)
    assert_refused(publication_root, path, line, needle)


def test_eight_list_levels_are_kept_whole(tmp_path):
    body = "".join("  " * i + f"- level {i}\n" for i in range(8))
    html = "".join(block.html for block in parse_body(body).blocks)
    assert all(f"level {i}" in html for i in range(8))


def test_a_list_nested_5000_deep_is_refused_before_markdown_sees_it(publication_root):
    body = "".join(" " * (2 * i) + "- x\n" for i in range(5000))  # 25 MB; markdown-it took ~30 s
    path = issue_file(publication_root, HEAD, body)
    with pytest.raises(InputError, match="128 KB") as err:
        parse_issue(path)
    assert err.value.line and err.value.line > 6 and err.value.path == path
    assert_refused(publication_root, path, err.value.line, "128 KB")


# ---- Credits given as plain names --------------------------------------------------------
def test_plain_name_credits_print_in_html_text_and_web_page(publication_root, tmp_path):
    group = CreditGroup("Writers", (Person("Alice Smith"), Person("Bob Jones")))
    assert group.lines() == ["Alice Smith and Bob Jones"]
    mixed = CreditGroup("Editors", (Person("A", "X"), Person("B"), Person("C")))
    assert mixed.lines() == ["A, X", "B and C"]

    issue_file(publication_root, HEAD + "credits:\n  - role: Writers\n    people: [Alice Smith, Bob Jones]\n",
               name="007-plain.md")
    result = run(publication_root, "build", "7")
    assert result.exit_code == 0, result.output
    out = publication_root / "build" / "plain"
    html = lxml.html.fromstring((out / "email.html").read_text(encoding="utf-8")).text_content()
    text = (out / "email.txt").read_text(encoding="utf-8")
    assert "Alice Smith and Bob Jones" in html and "Alice Smith and Bob Jones" in text
    result = run(publication_root, "archive", "--out", str(tmp_path / "site"))
    assert result.exit_code == 0, result.output
    page = (tmp_path / "site" / "issues" / "plain" / "index.html").read_text(encoding="utf-8")
    assert "Alice Smith and Bob Jones" in lxml.html.fromstring(page).text_content()


# ---- Slugs -----------------------------------------------------------------------------
def test_two_issues_with_one_slug_are_refused_before_anything_is_built(publication_root):
    path = issue_file(publication_root, HEAD + "slug: global-governance-of-ai\n", name="007-other.md")
    needle = "slug 'global-governance-of-ai' is also the slug of 006-global-governance-of-ai.md"
    assert_refused(publication_root, path, 5, needle)
    assert_refused(publication_root, path, 5, needle, "build")  # every issue
    six = publication_root / "issues" / "006-global-governance-of-ai.md"
    assert_refused(publication_root, six, 1, "also the slug of 007-other.md", "build", "6")


def test_a_shared_slug_elsewhere_does_not_block_another_issue(publication_root):
    for name in ("007-twin.md", "008-twin-too.md"):
        issue_file(publication_root, HEAD + "slug: twin\n", name=name)
    assert find_issue(publication_root / "issues", "6").name == "006-global-governance-of-ai.md"
    with pytest.raises(InputError, match="also the slug of 007-twin.md"):
        find_issue(publication_root / "issues", "8")


@pytest.mark.parametrize("front, line, needle", [
    (HEAD.replace("A title", "[unclosed") + "status: draft\n", 4, "front matter is not valid YAML"),
    (HEAD.replace("A title", "\ufffe") + "status: draft\n", 3, "front matter is not valid YAML"),  # a YAML ReaderError
])
def test_a_broken_draft_does_not_stop_another_issue(publication_root, front, line, needle):
    path = issue_file(publication_root, front)
    built = run(publication_root, "build", "6")
    assert built.exit_code == 0 and "Built 006-global-governance-of-ai.md" in built.output, built.output
    dry = run(publication_root, "send", "6", "--dry-run")
    assert dry.exit_code == 0 and "Dry run: 0 message(s)" in dry.output, dry.output
    for ref in ("7", "a-title", str(path)):
        result = run(publication_root, "build", ref)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert one_line(result).startswith(f"error: {path}:{line}: {needle}"), result.output


def test_find_issue_parses_only_the_issues_that_could_share_its_slug(publication_root, monkeypatch):
    import newsletter.issue as issue_module

    for n in range(7, 12):
        issue_file(publication_root, HEAD.replace("7", str(n)), name=f"{n:03}-issue-{n}.md")
    claims = issue_file(publication_root, HEAD.replace("7", "12") + "slug: issue-9\n", name="012-other.md")
    parsed: list[str] = []
    real = issue_module.parse_issue

    def counting(path):
        parsed.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(issue_module, "parse_issue", counting)
    assert find_issue(publication_root / "issues", "6").name == "006-global-governance-of-ai.md"
    assert parsed == ["006-global-governance-of-ai.md"]
    parsed.clear()
    with pytest.raises(InputError, match="also the slug of 012-other.md"):
        find_issue(publication_root / "issues", "issue-9")
    assert sorted(parsed) == ["009-issue-9.md", claims.name]


@pytest.mark.parametrize("target, spelt", [
    ("16", "0x10"), ("16", "020"), ("16", "1_6"), ("16", "0b10000"), ("60", "1:00"),  # YAML 1.1 integers
    ("inf", ".Inf"), ("nan", ".NaN"), ("1e-05", "0.00001"),  # floats whose str() is a slug
])
def test_a_slug_yaml_would_read_as_a_number_keeps_its_text(publication_root, target, spelt):
    """YAML 1.1 read ``slug: 0x10`` as 16: the slug is the text as written (or refused when that
    text is no slug), so it never takes another issue's slug by a number's other spelling."""
    issue_file(publication_root, HEAD, name=f"007-{target}.md")
    other = issue_file(publication_root, HEAD.replace("7", "8") + f"slug: {spelt}\n", name="008-other.md")
    try:
        assert parse_issue(other).slug == spelt
    except InputError as exc:
        assert "must be lower-case words joined by hyphens" in exc.message and exc.line == 5
    assert find_issue(publication_root / "issues", "7").name == f"007-{target}.md"


# ---- `newsletter new` ----------------------------------------------------------------------
@pytest.mark.parametrize("title", ["Ends with backslash \\", 'He said "no": # not a comment', "Yes", "007: *bold*"])
def test_new_writes_yaml_it_can_read_back(publication_root, title):
    result = run(publication_root, "new", title)
    assert result.exit_code == 0, result.output
    (path,) = (publication_root / "issues").glob("007-*.md")
    assert parse_issue(path).title == title


def test_new_gives_a_title_already_used_its_own_slug(publication_root):
    result = run(publication_root, "new", "Global Governance of AI")  # issue #6's slug
    assert result.exit_code == 0, result.output
    assert (publication_root / "issues" / "007-global-governance-of-ai-7.md").exists()
    found = find_issue(publication_root / "issues", "7")  # not refused as a shared slug
    assert parse_issue(found).slug == "global-governance-of-ai-7"


@pytest.mark.parametrize("title", ["Bell\x07", "T" * 201, "=?utf-8?q?x?="])
def test_new_refuses_a_title_the_build_would_refuse_and_writes_nothing(publication_root, title):
    result = run(publication_root, "new", title)
    assert result.exit_code == 2 and one_line(result)
    assert sorted(p.name for p in (publication_root / "issues").iterdir()) == ["006-global-governance-of-ai.md"]


# ---- Configuration ---------------------------------------------------------------------------
def test_from_with_a_display_name_sets_from_name(publication_root):
    settings = load_settings(publication_root, environ={"NEWSLETTER_FROM": "ChinAffairs+ <news@example.org>"})
    assert (settings.publication.from_email, settings.publication.from_name) == ("news@example.org", "ChinAffairs+")
    named = load_settings(publication_root, environ={"NEWSLETTER_FROM": '"Chin, Affairs" <news@example.org>',
                                                     "NEWSLETTER_FROM_NAME": "Explicit Name"})
    assert (named.publication.from_email, named.publication.from_name) == ("news@example.org", "Explicit Name")

    env = {"NEWSLETTER_FROM": "ChinAffairs+ <news@example.org>"}
    assert run(publication_root, "subscribers", "add", "reader@example.org", env=env).exit_code == 0
    result = run(publication_root, "send", "6", "--dry-run", env=env)
    assert result.exit_code == 0, result.output
    (eml,) = (publication_root / "outbox").rglob("*.eml")
    message = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert message["From"] == "ChinAffairs+ <news@example.org>"


@pytest.mark.parametrize("value", ["a <b> <c@example.org>", "Name <news@example.org> trailing", "Name <news@"])
def test_a_malformed_from_is_a_config_error(publication_root, value):
    with pytest.raises(ConfigError, match="Name <address>"):
        load_settings(publication_root, environ={"NEWSLETTER_FROM": value})


def test_encoded_word_in_the_publication_name_is_refused(publication_root):
    with pytest.raises(ConfigError, match="encoded-word"):
        load_settings(publication_root, environ={"NEWSLETTER_NAME": "=?utf-8?q?News=0D=0ABcc:_x@y.org?="})


def test_database_in_a_missing_folder_is_one_line_and_creates_nothing(publication_root):
    result = run(publication_root, "subscribers", "count", env={"NEWSLETTER_DB": "dta/newsletter.db"})
    assert result.exit_code == 3
    assert "NEWSLETTER_DB='dta/newsletter.db'" in one_line(result) and "does not exist" in result.output
    assert not (publication_root / "dta").exists()


# ---- check --online: a total deadline per link --------------------------------------------
@pytest.fixture
def trickling_server() -> Iterator[str]:
    """Answers a valid 200, one byte every 20 ms (about 3 s in all): each read is quick, the
    whole answer is not. Stops trickling when the test ends."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Padding: " + b"x" * 120 + b"\r\n\r\n"
    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)

    def serve() -> None:
        for _ in range(50):  # bounded: at most 50 connections or until stopped
            if stop.is_set():
                return
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.recv(4096)
                for byte in answer:
                    if stop.wait(0.02):
                        return
                    try:
                        conn.sendall(bytes([byte]))
                    except OSError:
                        break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/slow"
    stop.set()
    thread.join(5)
    listener.close()


def test_a_trickling_server_is_cut_off_at_the_links_deadline(trickling_server):
    from newsletter.checks.links import probe_all

    (result,) = probe_all([trickling_server], timeout=5, deadline=0.5)
    assert result.level == "warning" and result.message == "did not answer within 0.5 s"


def test_a_slow_but_whole_answer_within_the_deadline_works(trickling_server):
    from newsletter.checks.links import probe_within

    # The same server, given a deadline longer than its whole answer: the link works.
    assert probe_within(trickling_server, deadline=30, timeout=5).level is None


def test_an_issue_that_is_a_fifo_is_refused_not_read(publication_root):
    """A FIFO (git can hold a symlink to one) blocks a reader until a writer comes: one line, no wait,
    and the issues beside it are still found."""
    fifo = publication_root / "issues" / "008-pipe.md"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        parse_issue(fifo)
    assert find_issue(publication_root / "issues", "6").name == "006-global-governance-of-ai.md"
