"""Markdown that would render as an empty element, an unpaired footnote, or a link an email must
not carry is refused with file:line, as raw HTML is: `build` exits 2 and writes nothing, `check`
reports it as an error.

markdown-it leaves ``[x](javascript:…)``, ``data:`` links and images as literal Markdown text; an
undefined ``[^1]`` stays literal too, and a note nobody references is dropped without a word.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from newsletter.cli import cli
from newsletter.content import parse_body
from newsletter.errors import InputError

HEAD = "---\nnumber: 7\ntitle: A title\ndate: 2025-04-01\n---\n\nIntro.\n\n"  # the body's line 1 is file line 7
ENV = {"NEWSLETTER_TRANSPORT": "dryrun", "NEWSLETTER_SECRET_KEY": "test-secret"}

REFUSED = [
    ("##\n", 9, "an empty heading"),
    ("### \n", 9, "an empty heading"),
    ("Text.\n\n#\n", 11, "an empty heading"),
    ("[](https://example.org)\n", 9, "has no text"),
    ("See [ ](https://example.org).\n", 9, "has no text"),
    ("See [`` ``](https://example.org) here.\n", 9, "has no text"),
    ("[a link]()\n", 9, "has no address"),
    ("- one\n-\n- three\n", 10, "an empty list item"),
    ("1. one\n2.\n", 10, "an empty list item"),
    (">\n", 9, "an empty quote"),
    ("A claim.[^1]\n", 9, "footnote reference [^1] has no note"),
    ("A claim.[^note]\n\n[^other]: text\n", 9, "footnote reference [^note] has no note"),
    ("A claim.[^1]\n\n[^1]: used\n[^2]: never used\n", 12, "note [^2] is never referenced"),
    ("[x](javascript:alert(1))\n", 9, "the scheme 'javascript:'"),
    ("[x](JAVASCRIPT:alert(1))\n", 9, "the scheme 'javascript:'"),
    ("[x](&#106;avascript:alert(1))\n", 9, "the scheme 'javascript:'"),
    ("<javascript:alert(1)>\n", 9, "the scheme 'javascript:'"),
    ("[x](vbscript:msgbox)\n", 9, "the scheme 'vbscript:'"),
    ("[x](data:text/html;base64,PHNjcmlwdD4=)\n", 9, "the scheme 'data:'"),
    ("![A chart](data:image/png;base64,iVBORw0KGgo=)\n", 9, "image 'data:image/png"),
    ("![A chart](javascript:x)\n", 9, "the scheme 'javascript:'"),
    ("![A chart](cid:chart)\n", 9, "the scheme 'cid:'"),
    ("![A chart](mailto:a@example.org)\n", 9, "the scheme 'mailto:'"),
    ("[x](file:///etc/passwd)\n", 9, "the scheme 'file:'"),
    ("[x](ftp://example.org/a)\n", 9, "the scheme 'ftp:'"),
    ("See [the page][ref].\n\n[ref]: javascript:alert(1)\n", 9, "the scheme 'javascript:'"),
]


def run(root, *args):
    return CliRunner().invoke(cli, ["--root", str(root), *args], env=ENV)


@pytest.mark.parametrize("body, line, needle", REFUSED)
def test_build_refuses_with_file_and_line(publication_root, body, line, needle):
    path = publication_root / "issues" / "007-a-title.md"
    path.write_text(HEAD + body, encoding="utf-8")
    result = run(publication_root, "build", "7")
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, result.output
    assert f"{path}:{line}: " in lines[0] and needle in lines[0], lines[0]
    assert not (publication_root / "build" / "007-a-title").exists()


def test_check_reports_a_refused_link_as_an_error_with_its_line(publication_root):
    path = publication_root / "issues" / "007-a-title.md"
    path.write_text(HEAD + "[x](javascript:alert(1))\n", encoding="utf-8")
    result = run(publication_root, "check", "7")
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert ":9: " in result.output and "javascript:" in result.output, result.output


@pytest.mark.parametrize("body", [
    "[a page](https://example.org) [mail](mailto:a@example.org) [call](tel:+15551234) [top](#notes)",
    "[![A chart](https://example.org/c.png)](https://example.org)",
    "A claim.[^1]\n\n[^1]: The note.",
    "`[^1]` and `[](x)` in code, and [**bold**](https://example.org).",
    "| a | b |\n|---|---|\n|   | x |",  # an empty table cell is a cell
    "- one\n- two",
    "Text with a bare [^ bracket] and [text] alone.",
])
def test_what_renders_whole_is_kept(body):
    html = "".join(block.html for block in parse_body(body + "\n").blocks)
    assert html


def test_the_parser_no_longer_leaves_a_refused_link_as_literal_text():
    """The refusal is what stops it: nothing dangerous is rendered, nothing shows as Markdown."""
    with pytest.raises(InputError) as err:
        parse_body("Intro.\n\n[click](javascript:alert(1))\n", path="x.md", first_line=5)
    assert err.value.line == 7
