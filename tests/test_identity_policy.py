"""Identity and untrusted text: one address policy, one control-character policy, the From
setting read by the standard library's RFC 5322 parser, inbox headers parsed before they are
decoded, a .env that is not text refused with its line, and a bad form origin stopping `serve` at
start (tests/test_serve_settings.py holds the host).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter.addresses import check_header, clean_text, mask_email, normalise_email, validate_address
from newsletter.classify import classify
from newsletter.cli import cli
from newsletter.config import check_address, load_settings
from newsletter.errors import ConfigError, InputError
from newsletter.excerpt import printable
from newsletter.replies import Digest, Reply, as_text
from tests import inbox_messages as m

ENV = {"NEWSLETTER_TRANSPORT": "dryrun", "NEWSLETTER_SECRET_KEY": "test-secret"}
LONG_LOCAL = "a" * 65 + "@example.org"


def run(root: Path, *args: str, env: dict | None = None):
    return CliRunner().invoke(cli, ["--root", str(root), *args], env={**ENV, **(env or {})})


def one_line(result) -> str:
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


# ---- NEWSLETTER_FROM, parsed by email.headerregistry ----------------------------------------
@pytest.mark.parametrize("value, address, name", [
    ("ChinAffairs+ <news@example.org>", "news@example.org", "ChinAffairs+"),
    ('"Chin, Affairs" <news@example.org>', "news@example.org", "Chin, Affairs"),
    ('"x@y.org" <a@b.org>', "a@b.org", "x@y.org"),
    ('"Name: Sub" <a@b.org>', "a@b.org", "Name: Sub"),
    ('"Say \\"hi\\"" <a@b.org>', "a@b.org", 'Say "hi"'),
    ("Zoë Müller <zoe@example.org>", "zoe@example.org", "Zoë Müller"),
    ("Dr. Who <who@example.org>", "who@example.org", "Dr. Who"),  # an obsolete phrase, still one name
    ("<bare@example.org>", "bare@example.org", None),  # no name: newsletter.toml's from_name stays
    ("News <News@Example.ORG>", "News@example.org", "News"),  # the one normalised form: domain lower-cased
])
def test_from_with_a_display_name_is_read_as_rfc_5322_reads_it(publication_root, value, address, name):
    pub = load_settings(publication_root, environ={"NEWSLETTER_FROM": value}).publication
    assert pub.from_email == address
    assert name is None or pub.from_name == name


@pytest.mark.parametrize("value", [
    "x@y.org <a@b.org>",  # the hand parser gave x@y.org
    "Evil\r\nBcc: x@y.org <a@b.org>",
    "Evil\nBcc: x@y.org <a@b.org>",
    "Evil\x00 <a@b.org>",
    "Evil\u2028 <a@b.org>",
    "Name: Sub <a@b.org>",  # the hand parser gave the name "Sub"
    "Chin, Affairs <news@example.org>",  # two mailboxes
    "A <a@b.org>, B <c@d.org>",
    "Group: a@b.org;",
    "=?utf-8?q?Evil=0D=0ABcc=3A_x=40y?= <a@b.org>",
    "Name <news@",
    "Name <news@example.org> trailing",
    "a <b> <c@example.org>",
    "Name <" + LONG_LOCAL + ">",
])
def test_a_from_the_parser_reads_otherwise_is_refused_in_one_line(publication_root, value):
    with pytest.raises(ConfigError) as err:
        load_settings(publication_root, environ={"NEWSLETTER_FROM": value})
    assert "\n" not in err.value.format_message()
    if "\x00" in value:
        return  # no environment variable can hold a NUL: load_settings above is the way in
    result = run(publication_root, "status", env={"NEWSLETTER_FROM": value})
    assert result.exit_code == 3 and one_line(result)


# ---- One address policy ------------------------------------------------------------------------
@pytest.mark.parametrize("address", [LONG_LOCAL, "é" * 33 + "@example.org", '"' + "a" * 63 + '"@example.org'])
def test_a_local_part_over_64_octets_is_refused_everywhere(publication_root, address):
    with pytest.raises(InputError, match="64"):
        validate_address(address)
    with pytest.raises(InputError):
        normalise_email(address)
    with pytest.raises(ConfigError):
        check_address("NEWSLETTER_REPLY_TO", address)
    with pytest.raises(ConfigError):
        load_settings(publication_root, environ={"NEWSLETTER_REPLY_TO": address})
    result = run(publication_root, "subscribers", "add", address)
    assert result.exit_code == 2 and "64" in one_line(result)
    csv = publication_root / "in.csv"
    csv.write_text(f"email\n{address}\nok@example.org\n", encoding="utf-8")
    run(publication_root, "subscribers", "import", str(csv))
    listed = run(publication_root, "subscribers", "list").output
    assert address.lower() not in listed.lower()


def test_a_local_part_of_64_octets_is_accepted():
    assert validate_address("a" * 64 + "@example.org") == "a" * 64 + "@example.org"


@pytest.mark.parametrize("written, normalised", [
    ("editor@Bücher.Example", "editor@xn--bcher-kva.example"),
    ("Editor@EXAMPLE.org", "Editor@example.org"),
    ("editor@xn--bcher-kva.example", "editor@xn--bcher-kva.example"),
])
def test_settings_front_matter_and_subscribers_share_one_normalised_form(publication_root, written, normalised):
    assert validate_address(written) == normalised
    assert check_address("NEWSLETTER_REPLY_TO", written) == normalised
    assert load_settings(publication_root, environ={"NEWSLETTER_REPLY_TO": written}).publication.reply_to == normalised
    path = publication_root / "issues" / "007-a-title.md"
    path.write_text(f"---\nnumber: 7\ntitle: T\ndate: 2025-04-01\nreply_to: {written}\n---\n\nBody.\n", encoding="utf-8")
    from newsletter.issue import parse_issue

    assert parse_issue(path).reply_to == normalised


# ---- One control-character policy ---------------------------------------------------------------
CONTROLS = ["\x00", "\x07", "\x0b", "\x1b", "\x7f", "\x85", "\x9b", "\u2028", "\u2029", "\r", "\n"]


@pytest.mark.parametrize("char", CONTROLS)
def test_every_gate_refuses_the_same_control_characters(publication_root, char):
    value = f"News{char}letter"
    with pytest.raises(InputError):
        check_header("Subject", value)
    with pytest.raises(InputError):
        clean_text(value, "name")
    with pytest.raises(ConfigError):
        load_settings(publication_root, environ={"NEWSLETTER_NAME": value})
    from newsletter.transports.base import check_credential

    with pytest.raises(ConfigError):
        check_credential("X_API_KEY", value)
    assert char not in printable(value) or char == "\n"  # printable() keeps a text's lines
    path = publication_root / "issues" / "007-a-title.md"
    path.write_text(f'---\nnumber: 7\ntitle: "{value.encode("unicode_escape").decode()}"\ndate: 2025-04-01\n---\n\nB.\n',
                    encoding="utf-8")
    from newsletter.issue import parse_issue

    with pytest.raises(InputError):
        parse_issue(path)


def test_control_characters_are_defined_once():
    """patterns.py is their home: no other module writes its own class of them (csvio's binary
    sniffing and the web server's path check are not a text policy)."""
    root = Path(__file__).resolve().parent.parent / "newsletter"
    allowed = {"patterns.py", "csvio.py", "middleware.py"}
    offenders = [p.name for p in root.rglob("*.py") if p.name not in allowed
                 and re.search(r"\\x00-|\\x1f|\\x7f", p.read_text(encoding="utf-8"))]
    assert offenders == []


# ---- Decoded header text is untrusted ------------------------------------------------------------
@pytest.mark.parametrize("name, shown", [
    ("=?utf-8?q?Evil=0D=0ABcc=3A_x=40y?=", "Evil Bcc: x@y"),
    ("=?utf-8?b?RXZpbA0KQmNjOiB4QHkub3JnIDxhQGIub3JnPg==?=", "Evil Bcc: x@y.org <a@b.org>"),
    ("=?utf-8?q?A=1B=5B31mred?=", "A [31mred"),
    ("=?utf-8?q?Li=E2=80=AEieW?=", "Li ieW"),  # a bidi override
    ('"=?utf-8?q?x=40y=2Eorg?="', "x@y.org"),
])
def test_an_encoded_display_name_never_becomes_the_sender(name, shown):
    raw = m.reply("li@reader.example", None, name=name)
    c = classify(raw)
    assert c.sender == "li@reader.example"
    assert c.sender_name == shown or c.sender_name == name.strip('"')
    assert not re.search(r"[\x00-\x1f\x7f-\x9f\u202e]", c.sender_name)
    digest = Digest("slug", "T", {"reply": 1}, [Reply(c.sender_name, mask_email(c.sender), "2025-03-11T08:15", "hi", "subject")])
    assert "<l***@reader.example>" in as_text(digest)


def test_an_encoded_word_cannot_supply_a_message_id_or_a_complainant():
    ours = f"<global-governance-of-ai.0123456789abcdef01234567@{m.OUR_DOMAIN}>"
    raw = m.reply("li@reader.example", None).replace(
        b"Message-ID: <r1@reader.example>", b"Message-ID: =?utf-8?q?" + ours.replace("@", "=40").encode() + b"?=")
    c = classify(raw)
    assert ours not in (c.dedupe_key, *c.references)


# ---- Settings that stop the start -----------------------------------------------------------------
@pytest.mark.parametrize("origins", ["javascript:x", "data:text/html,x", "https://ok.example, javascript:x",
                                     "https://example.org/path", "ftp://example.org", "https://", "null"])
def test_a_bad_form_origin_stops_serve_at_start(publication_root, origins):
    env = {"NEWSLETTER_FORM_ORIGINS": origins, "NEWSLETTER_BASE_URL": "https://news.example.org",
           "NEWSLETTER_DB": str(publication_root / "n.db")}
    result = run(publication_root, "serve", "--port", "0", env=env)
    assert result.exit_code == 3 and "NEWSLETTER_FORM_ORIGINS" in one_line(result)


@pytest.mark.parametrize("content, line, needle", [
    ("NEWSLETTER_NAME=x\n".encode("utf-16"), 1, "UTF-16"),
    ("A=1\nNEWSLETTER_NAME=x\n".encode("utf-16-le"), 1, "control character"),
    (b"A=1\nB=\xff\xfe\x00\x01\n", 2, "not UTF-8"),
    (b"\x7fELF\x02\x01\x01\x00\x00\x00", 1, "control character"),
    (b"A=1\nB=2\x1b[31m\n", 2, "control character"),
])
def test_an_env_file_that_is_not_text_is_one_line(publication_root, content, line, needle):
    (publication_root / ".env").write_bytes(content)
    result = run(publication_root, "status")
    text = one_line(result)
    assert result.exit_code == 3 and f".env:{line}: " in text and needle in text, text


def test_an_env_file_in_utf8_with_a_bom_and_crlf_still_loads(publication_root):
    (publication_root / ".env").write_bytes("\ufeffNEWSLETTER_NAME=Zoë's Letter\r\nX=1\r\n".encode("utf-8"))
    assert load_settings(publication_root, environ={}).publication.name == "Zoë's Letter"
