"""`check` lists every problem in one run, including what stops a build, each with file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter.checks import check_issue
from newsletter.cli import cli
from newsletter.config import load_settings

CLEAN = Path(__file__).resolve().parent / "fixtures" / "007-clean.md"
ENV = {"NEWSLETTER_TRANSPORT": "dryrun", "NEWSLETTER_SECRET_KEY": "k" * 32}


@pytest.fixture
def issue(publication_root: Path) -> Path:
    path = publication_root / "issues" / CLEAN.name
    path.write_text(CLEAN.read_text(encoding="utf-8"), encoding="utf-8")
    return path


def edit(path: Path, *pairs: tuple[str, str]) -> Path:
    text = path.read_text(encoding="utf-8")
    for old, new in pairs:
        assert old in text, old
        text = text.replace(old, new, 1)
    path.write_text(text, encoding="utf-8")
    return path


def line_of(path: Path, needle: str) -> int:
    return next(n for n, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1) if needle in line)


def check(root: Path, *args: str):
    return CliRunner().invoke(cli, ["--root", str(root), "check", *args], env=ENV)


BODY_BREAKS = (
    ("Some background,", "![](https://example.org/a.png){width=300} Some background,"),
    ("The article's text.", "The article's text. <span>raw</span>"),
    ("More of the article", "![a chart](https://example.org/b.png){width=0} More of the article"),
    ("The end.", "The end, [old](http://example.org/old). TODO: figures"),
)


def test_every_body_problem_and_every_other_finding_in_one_run(publication_root, issue):
    edit(issue, *BODY_BREAKS)
    result = check(publication_root, "7")
    assert result.exit_code == 6, result.output
    rel = f"issues/{CLEAN.name}"
    out = result.output
    assert f"{rel}:{line_of(issue, '![](https')}: error: image https://example.org/a.png has no alt text" in out
    assert f"{rel}:{line_of(issue, '<span>')}: error: raw HTML '<span>'" in out
    assert f"{rel}:{line_of(issue, '{width=0}')}: error: image width '0'" in out
    # ... and the checks that need a rendering still ran on it
    assert f"{rel}:{line_of(issue, 'TODO')}: error: 'TODO' is a drafting note" in out
    assert "http://example.org/old uses http" in out


def test_build_still_stops_at_the_first_of_them(publication_root, issue):
    edit(issue, *BODY_BREAKS)
    result = CliRunner().invoke(cli, ["--root", str(publication_root), "build", "7"], env=ENV)
    assert result.exit_code == 2
    assert result.output.count("error") <= 1 and "alt text" in result.output


def test_every_front_matter_error_with_its_line_and_the_body_problems(publication_root, issue):
    edit(issue, ("date: 2025-04-01", "date: someday"), ("series: Test Notes", "series: [a, list]"),
         ("title: A Clean Issue", "title: A Clean Issue\nmood: cheerful"),
         ("The end.", "The end. <br>"))
    findings = check_issue(load_settings(publication_root, environ=ENV), issue)
    got = {(f.line, f.code) for f in findings}
    assert (line_of(issue, "date: someday"), "issue.invalid") in got
    assert (line_of(issue, "series: [a"), "issue.invalid") in got
    assert (line_of(issue, "mood:"), "issue.invalid") in got
    assert (line_of(issue, "<br>"), "issue.refused") in got
    assert all(f.level == "error" and f.path == f"issues/{CLEAN.name}" for f in findings)


def test_a_missing_required_field_does_not_hide_the_next_error(publication_root, issue):
    edit(issue, ("number: 7\n", ""), ("date: 2025-04-01", "date: 2025-02-30"))
    messages = [f.message for f in check_issue(load_settings(publication_root, environ=ENV), issue)]
    assert any("'number'" in m for m in messages) and any("'date'" in m for m in messages), messages


def test_front_matter_that_is_not_yaml_is_one_error(publication_root, issue):
    edit(issue, ("title: A Clean Issue", "title: [unclosed"))
    findings = check_issue(load_settings(publication_root, environ=ENV), issue)
    assert [f.code for f in findings] == ["issue.invalid"] and findings[0].line


def test_json_for_an_issue_that_does_not_build(publication_root, issue):
    edit(issue, ("date: 2025-04-01", "date: someday"), ("Some background,", "![](x.png) Some background,"))
    result = check(publication_root, "7", "--format", "json")
    assert result.exit_code == 6
    data = json.loads(result.stdout)
    assert {d["code"] for d in data} == {"issue.invalid", "issue.refused"}
    assert all(d["level"] == "error" and d["line"] for d in data)


def test_json_even_when_the_issue_is_not_found(publication_root):
    result = check(publication_root, "999", "--format", "json")
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert data[0]["level"] == "error" and "999" in data[0]["message"]


def test_a_clean_issue_still_exits_zero(publication_root, issue):
    result = check(publication_root, "7", "--format", "json")
    assert result.exit_code == 0, result.output
    assert all(d["level"] != "error" for d in json.loads(result.stdout))


# ---- the scaffold's own text ----------------------------------------------------------
def test_check_flags_each_paragraph_new_wrote_that_is_still_there(publication_root):
    from newsletter.scaffold import new_issue, scaffold_lines

    path = new_issue(publication_root / "issues", "Trade and the Global South")
    lines = path.read_text(encoding="utf-8").split("\n")
    first = scaffold_lines()[0]
    # The editor replaces only the first line and sets status: ready, as in the report.
    text = "\n".join(lines).replace(first, "Our issue on trade.").replace("status: draft", "status: ready")
    path.write_text(text.replace('subtitle: ""', "subtitle: On trade"), encoding="utf-8")
    findings = [f for f in check_issue(load_settings(publication_root, environ=ENV), path)
                if f.code == "content.scaffold"]
    assert findings and all(f.level == "error" for f in findings)
    numbered = path.read_text(encoding="utf-8").split("\n")
    assert [numbered[f.line - 1].strip() for f in findings] == [scaffold_lines()[1], scaffold_lines()[2]]


def test_scaffold_lines_come_from_what_new_and_init_write(publication_root, tmp_path):
    from newsletter.scaffold import init_publication, new_issue, scaffold_lines

    text = new_issue(publication_root / "issues", "Anything").read_text(encoding="utf-8")
    init_publication(tmp_path / "other")
    text += (tmp_path / "other" / "issues" / "001-hello-world.md").read_text(encoding="utf-8")
    assert scaffold_lines() and all(line in text for line in scaffold_lines())


def test_new_issue_text_is_true_about_drafts(publication_root):
    """`send` on a draft with the dry-run transport is a dry run, not a refusal: the scaffold says so."""
    from newsletter.scaffold import new_issue

    text = new_issue(publication_root / "issues", "Anything").read_text(encoding="utf-8")
    assert "send refuses it;" not in text and "dry-run" in text


@pytest.mark.parametrize("link", ["[run](javascript:alert(1))", "[page](data:text/html,hi)", "<vbscript:msgbox>",
                                  "[disk](FILE:///etc/passwd)", "![pic](javascript:x)"])
def test_a_link_the_parser_would_drop_is_refused_with_its_line(publication_root, issue, link):
    edit(issue, ("The end.", f"The end, {link}."))
    findings = [f for f in check_issue(load_settings(publication_root, environ=ENV), issue) if f.code == "issue.refused"]
    assert len(findings) == 1 and findings[0].line == line_of(issue, "The end,"), findings
    assert "scheme" in findings[0].message
    built = CliRunner().invoke(cli, ["--root", str(publication_root), "build", "7"], env=ENV)
    assert built.exit_code == 2 and "scheme" in built.output


def test_prose_that_mentions_a_scheme_is_not_a_link(publication_root, issue):
    edit(issue, ("The end.", "The end: data: 5%, and `javascript:` in code."))
    findings = check_issue(load_settings(publication_root, environ=ENV), issue)
    assert [f for f in findings if f.code == "issue.refused"] == []


def test_check_flags_the_sample_text_init_wrote(tmp_path):
    from newsletter.scaffold import init_publication

    root = tmp_path / "pub"
    init_publication(root)
    findings = [f for f in check_issue(load_settings(root, environ=ENV), root / "issues" / "001-hello-world.md")
                if f.code == "content.scaffold"]
    assert len(findings) >= 2 and all(f.level == "error" for f in findings)
