"""The plain-text part laid out by display width: CJK characters take two columns, Latin words
and URLs stay whole, and no line starts with closing or ends with opening punctuation."""

from __future__ import annotations

import email
import email.policy
from email.header import decode_header, make_header

import pytest

from newsletter.textwidth import CLOSING, OPENING, fill, width, wrap

MIXED = ("各标准组织在日内瓦开会，讨论各国规则之间的互操作性（interoperability）问题，并约定下次会议的议程。"
         "详见 https://example.org/a/very/long/path/that/goes/on/and/on/forever/index.html 页面。"
         "我们说：「这是引号里的话。」然后 Zhang Wei 教授补充道：“AI governance 需要合作。”接着继续讨论。")


def _words(text: str) -> list[str]:
    return [w for w in text.replace("\n", " ").split(" ") if w.isascii() and w.isalpha()]


@pytest.mark.parametrize("limit", range(20, 81, 3))
def test_every_line_fits_and_nothing_is_lost(limit):
    lines = wrap(MIXED, limit)
    assert "".join(lines).replace(" ", "") == MIXED.replace(" ", "")
    url = "https://example.org/a/very/long/path/that/goes/on/and/on/forever/index.html"
    for line in lines:
        assert width(line) <= limit or url in line, (limit, line)


@pytest.mark.parametrize("limit", range(20, 81, 3))
def test_kinsoku_no_closing_punctuation_starts_and_no_opening_ends_a_line(limit):
    lines = wrap(MIXED, limit)
    for before, after in zip(lines, lines[1:]):
        assert after[0] not in CLOSING, (limit, before, after)
        assert before[-1] not in OPENING, (limit, before, after)


@pytest.mark.parametrize("limit", range(20, 81, 7))
def test_latin_words_and_urls_stay_whole(limit):
    lines = wrap(MIXED, limit)
    for word in ("interoperability", "governance", "Zhang"):
        assert any(word in line for line in lines)
    assert any("https://example.org/a/very/long/path/that/goes/on/and/on/forever/index.html" in line
               for line in lines)


def test_a_cjk_character_counts_two_columns():
    assert width("中文") == 4 and width("ab") == 2 and width("，") == 2 and width("e\u0301") == 1
    assert [width(line) for line in wrap("中" * 50, 72)] == [72, 28]


def test_punctuation_at_the_end_of_a_full_line_stays_with_its_character():
    text = "一" * 35 + "。" + "二" * 10  # the full stop falls in column 71-72 exactly
    assert wrap(text, 72)[0].endswith("一。")
    text = "一" * 36 + "，" + "二" * 10  # the comma would start line 2: its character goes with it
    first, second = wrap(text, 72)
    assert second.startswith("一，") and width(first) == 70
    text = "一" * 35 + "「" + "二" * 10  # an opening bracket at the end of a line goes down with the next
    first, second = wrap(text, 72)
    assert second.startswith("「二") and first[-1] == "一"


def test_english_lines_are_wrapped_as_before():
    import textwrap

    text = "The quick brown fox jumps over the lazy dog. " * 6
    assert fill(text.strip(), 72) == textwrap.fill(text.strip(), 72, break_long_words=False, break_on_hyphens=False)


def test_the_chinese_text_part_wraps_by_width(tmp_path):
    from newsletter.editions import load_editions, render_editions
    from tests.editions_fixtures import MAIN, bilingual_publication, bilingual_settings

    settings = bilingual_settings(bilingual_publication(tmp_path / "pub"))
    eds = load_editions(settings.issues_dir / MAIN, "en")
    text = render_editions(eds, settings, only="zh-Hans")["zh-Hans"].text
    body = text.split("\n-- \n")[0].split("\n", 1)[1]  # after the masthead line (the publication's words)
    assert "各标准组织" in body
    for line in body.splitlines():
        assert width(line) <= 72 or "://" in line, line
    heading = next(line for line in text.splitlines() if line.startswith("#8 "))
    underline = text.splitlines()[text.splitlines().index(heading) + 1]
    assert set(underline) == {"="} and len(underline) == min(width(heading), 72)


def test_chinese_subjects_and_names_are_rfc2047_encoded_and_folded(tmp_path):
    from newsletter.config import Publication
    from newsletter.message import PreparedIssue, Recipient
    from newsletter.render import RenderedEmail, content_hash

    subject = "#8 中国学者观察：人工智能的全球治理——国际社会需要共同制定安全标准，平衡创新与安全的需要"
    html, text = "<p>正文 %%NAME%%</p>", "正文 %%UNSUBSCRIBE_URL%%\n"
    rendered = RenderedEmail(slug="x", number=8, title="t", subject=subject, preheader="", html=html, text=text,
                             lang="zh-Hans", reply_to=None, content_hash=content_hash(subject, html, text))
    pub = Publication(name="中国事务+", from_name="中国事务+ 编辑部", from_email="news@example.org")
    prepared = PreparedIssue(rendered, pub, "secret-0123456789")
    raw = prepared.personalise(Recipient("reader@example.org", "张伟（清华大学国际关系学系）", "tok")).as_bytes()
    head = raw.split(b"\r\n\r\n")[0]
    assert all(len(line) <= 78 for line in head.split(b"\r\n"))
    assert head.isascii()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert str(msg["Subject"]) == subject
    assert msg["To"].addresses[0].display_name == "张伟（清华大学国际关系学系）"
    assert msg["From"].addresses[0].display_name == "中国事务+ 编辑部"
    assert str(make_header(decode_header(head.decode().split("Subject: ")[1].split("\r\n")[0]))) in subject
