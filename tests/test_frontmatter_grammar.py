"""Front matter: text kept exactly as written, and every field checked by its real grammar.

YAML 1.1 read ``title: 12:30`` as 750 and ``people: [0123]`` as 83; the build passed. Every
text field now keeps its text; ``number``, ``date``, ``lang``, ``slug`` and ``reply_to`` are
refused with file:line when they are not what their standards say.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.errors import InputError
from newsletter.issue import parse_issue

HEAD = "number: 7\ntitle: A title\ndate: 2025-04-01\n"
# Plain scalars YAML 1.1 would turn into another value: sexagesimal, octal, underscores, floats,
# booleans, nulls, infinities, dates, binary and hex.
COERCED = ["12:30", "007", "1.10", "2024:01", "0123", "1_000", "yes", "No", "on", "OFF", "y", "n", "true",
           "null", "~", ".inf", "-.Inf", ".NaN", "1e3", "2024-01-01", "2001-12-14t21:59:43.10-05:00",
           "0x1F", "0b101", "+12", "-0", "1:2:3", "190:20:30", "6.8523015e+5"]


def write(tmp_path: Path, front: str, name: str = "007-a-title.md") -> Path:
    path = tmp_path / name
    path.write_text(f"---\n{front}---\n\nBody.\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("text", COERCED)
@pytest.mark.parametrize("field", ["title", "series", "subtitle", "preheader", "credits_title"])
def test_a_text_field_keeps_the_text_as_written(tmp_path, field, text):
    front = HEAD.replace("title: A title\n", "") + f"{field}: {text}\n"
    if field != "title":
        front += "title: A title\n"
    issue = parse_issue(write(tmp_path, front))
    assert getattr(issue, field) == text


@pytest.mark.parametrize("text", COERCED)
def test_credits_role_names_and_affiliations_keep_their_text(tmp_path, text):
    front = HEAD + (f"credits:\n  - role: {text}\n    people: [{text}, 0123, 1_000]\n"
                    f"  - role: Editors\n    people:\n      - {{name: {text}, affiliation: {text}}}\n")
    credits = parse_issue(write(tmp_path, front)).credits
    assert credits[0].role == text
    assert [p.name for p in credits[0].people] == [text, "0123", "1_000"]
    assert (credits[1].people[0].name, credits[1].people[0].affiliation) == (text, text)


@pytest.mark.parametrize("slug", ["007", "2024", "0x1f", "1e3", "yes", "no"])
def test_a_slug_keeps_its_text(tmp_path, slug):
    assert parse_issue(write(tmp_path, HEAD + f"slug: {slug}\n")).slug == slug


@pytest.mark.parametrize("lang", ["no", "en", "en-GB", "zh-Hans-CN", "de-CH-1996", "sr-Latn-RS", "x-klingon",
                                  "i-klingon", "en-a-bbb-x-a-ccc", "yue-HK", "es-419", "zh-cmn-Hans"])
def test_a_well_formed_language_tag_is_kept(tmp_path, lang):
    assert parse_issue(write(tmp_path, HEAD + f"lang: {lang}\n")).lang == lang


@pytest.mark.parametrize("front, line, needle", [
    (HEAD + "lang: en_US\n", 5, "not a BCP 47 language tag"),
    (HEAD + "lang: english\n", 5, "not a BCP 47 language tag"),
    (HEAD + "lang: e\n", 5, "not a BCP 47 language tag"),
    (HEAD + "lang: en-\n", 5, "not a BCP 47 language tag"),
    (HEAD + "lang: en--US\n", 5, "not a BCP 47 language tag"),
    (HEAD + "lang: '\"><script>'\n", 5, "not a BCP 47 language tag"),
    (HEAD + "lang: 123\n", 5, "not a BCP 47 language tag"),
    (HEAD + "slug: Hello World\n", 5, "must be lower-case words"),
    (HEAD + "slug: ../etc\n", 5, "must be lower-case words"),
    (HEAD + "slug: a/b\n", 5, "must be lower-case words"),
    (HEAD + "slug: '%2e%2e'\n", 5, "must be lower-case words"),
    (HEAD + "slug: a--b\n", 5, "must be lower-case words"),
    (HEAD.replace("2025-04-01", "2025-02-30"), 4, "'date' must be a date"),
    (HEAD.replace("2025-04-01", "20250401"), 4, "'date' must be a date"),
    (HEAD.replace("2025-04-01", "2025-W14-2"), 4, "'date' must be a date"),
    (HEAD.replace("2025-04-01", "2025-04-01T10:00"), 4, "'date' must be a date"),
    (HEAD.replace("2025-04-01", "1:00"), 4, "'date' must be a date"),
    (HEAD.replace("number: 7", "number: 0x7"), 2, "'number' must be a whole number"),
    (HEAD.replace("number: 7", "number: 7_0"), 2, "'number' must be a whole number"),
    (HEAD.replace("number: 7", "number: 0:7"), 2, "'number' must be a whole number"),
    (HEAD.replace("number: 7", "number: 7.0"), 2, "'number' must be a whole number"),
    (HEAD.replace("number: 7", "number: ٧"), 2, "'number' must be a whole number"),  # an Arabic-Indic 7
    (HEAD + "send_at: 9999-12-31T23:59-23:59\n", 5, "out of range"),
    (HEAD + "reply_to: " + "a" * 65 + "@example.org\n", 5, "'reply_to' is not a valid address"),
    (HEAD + "reply_to: a@b@example.org\n", 5, "'reply_to' is not a valid address"),
    (HEAD + "reply_to: a@example\n", 5, "'reply_to' is not a valid address"),
    (HEAD + "reply_to: 'Name <a@example.org>'\n", 5, "'reply_to' is not a valid address"),
    (HEAD + "reply_to: a@localhost\n", 5, "'reply_to' is not a valid address"),
    (HEAD.replace("A title", "!!int 0x10"), 3, 'write "16" in quotes'),
    (HEAD.replace("A title", "!!float 1.10"), 3, 'write "1.1" in quotes'),
])
def test_a_field_outside_its_grammar_is_refused_with_its_line(tmp_path, front, line, needle):
    path = write(tmp_path, front)
    with pytest.raises(InputError) as err:
        parse_issue(path)
    assert needle in err.value.message and err.value.line == line, err.value.format_message()


def test_number_is_read_in_decimal_as_written(tmp_path):
    """YAML 1.1 read 010 as 8: the issue number is the decimal the file name also carries."""
    assert parse_issue(write(tmp_path, HEAD.replace("number: 7", "number: 010"), "010-a-title.md")).number == 10
    assert parse_issue(write(tmp_path, HEAD.replace("number: 7", "number: '7'"))).number == 7


def test_reply_to_is_kept_in_the_one_normalised_address_form(tmp_path):
    """reply_to follows the address policy every address follows: ASCII domain, lower-cased."""
    issue = parse_issue(write(tmp_path, HEAD + "reply_to: Editors@Bücher.Example\n"))
    assert issue.reply_to == "Editors@xn--bcher-kva.example"


def test_blank_optional_fields_are_empty_and_an_explicit_null_word_is_text(tmp_path):
    issue = parse_issue(write(tmp_path, HEAD + "series:\nsubtitle: null\nlang:\nsend_at:\ncredits:\n"))
    assert (issue.series, issue.subtitle, issue.lang, issue.send_at, issue.credits) == ("", "null", None, None, ())
