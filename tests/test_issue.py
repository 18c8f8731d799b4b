"""Issue files: front matter validation, with file:line errors."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from newsletter.errors import InputError
from newsletter.issue import find_issue, join_names, parse_issue

GOOD = """---
number: 7
title: A title
date: 2025-04-01
---

Body.
"""


def write(tmp_path: Path, text: str, name: str = "007-a-title.md", raw: bytes | None = None) -> Path:
    p = tmp_path / name
    if raw is not None:
        p.write_bytes(raw)
    else:
        p.write_text(text, encoding="utf-8")
    return p


def test_issue6_parses_with_all_fields():
    from tests.conftest import ISSUE6

    issue = parse_issue(ISSUE6)
    assert issue.number == 6
    assert issue.slug == "global-governance-of-ai"
    assert issue.display_title == "#6 China Scholar Insights: The Global Governance of Artificial Intelligence"
    assert issue.reply_to == "sunchenghao@tsinghua.edu.cn"
    assert issue.preheader == issue.subtitle and issue.subtitle.startswith("AI technology is a double-edged sword.")
    writers = [p.name for p in issue.writers]
    assert writers == ["BAI Xuhan", "WANG Jiaying", "GAO Liangyu", "HU Lingzhi", "HNIN Lei Lei Wai"]
    assert issue.credits[0].lines() == ["BAI Xuhan, WANG Jiaying, GAO Liangyu, HU Lingzhi, and HNIN Lei Lei Wai, Tsinghua University"]
    assert issue.credits[1].lines() == ["SUN Chenghao, Tsinghua University", "ZHANG Xueyu, Nankai University"]


def test_defaults_slug_from_filename_and_preheader_from_subtitle(tmp_path):
    issue = parse_issue(write(tmp_path, GOOD.replace("date:", "subtitle: Dek\ndate:")))
    assert issue.slug == "a-title" and issue.preheader == "Dek" and issue.date == dt.date(2025, 4, 1)


@pytest.mark.parametrize(
    "front, message, line",
    [
        ("number: 7\ndate: 2025-04-01", "missing required field 'title'", 1),
        ("number: 7\ntitle: T\ndate: 2025-13-01", "'date' must be a date", 4),
        ("number: 7\ntitle: T\ndate: 2025-04-01\ncolour: red", "unknown field 'colour'", 5),
        ("number: seven\ntitle: T\ndate: 2025-04-01", "'number' must be a whole number", 2),
        ("number: 7\ntitle: [a, b]\ndate: 2025-04-01", "'title' must be text", 3),
        ("number: 7\ntitle: T\ndate: 2025-04-01\nsend_at: 2025-04-01T09:00", "needs a timezone", 5),
        ("number: 7\ntitle: T\ndate: 2025-04-01\nreply_to: not-an-address", "'reply_to' is not a valid address", 5),
        ("number: 7\ntitle: 'unclosed\ndate: 2025-04-01", "not valid YAML", None),
    ],
)
def test_bad_front_matter_names_file_and_line(tmp_path, front, message, line):
    path = write(tmp_path, f"---\n{front}\n---\n\nBody\n")
    with pytest.raises(InputError) as err:
        parse_issue(path)
    text = err.value.format_message()
    assert message in text
    assert text.startswith(str(path))
    if line is not None:
        assert f"{path}:{line}:" in text
    assert err.value.exit_code == 2


def test_non_utf8_file_is_refused_with_line(tmp_path):
    path = write(tmp_path, "", raw=GOOD.replace("Body.", "Caf\xe9").encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8") as err:
        parse_issue(path)
    assert err.value.line == 7


def test_missing_front_matter(tmp_path):
    with pytest.raises(InputError, match="missing YAML front matter"):
        parse_issue(write(tmp_path, "# Just markdown\n"))


def test_find_issue_by_number_slug_and_path(tmp_path):
    path = write(tmp_path, GOOD)
    assert find_issue(tmp_path, "7") == path
    assert find_issue(tmp_path, "007") == path
    assert find_issue(tmp_path, "a-title") == path
    assert find_issue(tmp_path, str(path)) == path
    with pytest.raises(InputError, match="no issue '8'"):
        find_issue(tmp_path, "8")


def test_join_names_serial_comma():
    assert join_names(["A"]) == "A"
    assert join_names(["A", "B"]) == "A and B"
    assert join_names(["A", "B", "C"]) == "A, B, and C"
